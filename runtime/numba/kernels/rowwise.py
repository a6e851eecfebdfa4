"""Row-wise kernels: elementwise programs, and the matrix products with a constant weight that end in one.

**Elementwise programs.** A chain of elementwise operators on one tensor (``Sub(x, mean)``, ``Div(., std)``,
``Tanh``, ``Exp``, ``Gelu``, ...) is encoded as a small program: one op code per step (:data:`OP_CODES`) plus a
constant operand ``consts[step, c]`` that varies along the last axis (``c``) or not at all (one column).
:func:`apply_program` runs a program on a tensor in one pass, and :func:`dense` runs it as the epilogue of a
matrix product (fused ``MatMul``/``Gemm`` + bias + activation), so no intermediate tensor is written.

**Float32 row blocks.** :func:`program_rows`, :func:`dense_into` and :func:`dense_t_into` work on the first ``m``
rows of preallocated ``[rows, C]`` buffers in float32 arithmetic: they are the building blocks of the compiled
plans (:mod:`hepzoo.runtime.numba.compile`) and, through :func:`dense_rows`, of the interpreter's float32
fused matrix products.

Products and programs call each other (inlined), so they share this module: Numba's disk cache only notices edits
to the file of the function it compiled (see :mod:`hepzoo.runtime.numba.kernels`).
NumPy reference of the programs: :func:`hepzoo.runtime.numba.kernels.reference.run_program_numpy`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

__all__ = [
    "NARROW",
    "OP_CODES",
    "apply_program",
    "dense",
    "dense_into",
    "dense_rows",
    "dense_t_into",
    "erf32",
    "gelu32",
    "gelu_tanh32",
    "program_rows",
    "sigmoid32",
    "tanh32",
]

# fastmath flags that allow reordering sums (matrix products) but keep inf/NaN semantics (-inf masks);
# error_model="numpy" everywhere: x / 0 gives inf as in NumPy and ONNX, and loops with a division vectorise
# (defined in each kernel module, not imported: see the package docstring on Numba's cache).
_FM = {"reassoc", "contract", "nsz", "arcp"}


# ---- elementwise programs ------------------------------------------------------------------------------------
# op code -> (name, takes a constant operand); binary codes read consts[step, c] (``R*``: constant on the left)
OP_CODES: dict[str, int] = {
    "ADD": 0,
    "SUB": 1,
    "RSUB": 2,
    "MUL": 3,
    "DIV": 4,
    "RDIV": 5,
    "MAX": 6,  # Clip min
    "MIN": 7,  # Clip max
    "NEG": 10,
    "EXP": 11,
    "LOG": 12,
    "TANH": 13,
    "SIGMOID": 14,
    "GELU": 15,
    "GELU_TANH": 16,
    "ABS": 17,
    "ASINH": 18,
    "ROUND": 19,
    "RELU": 20,
    "SQRT": 21,
    "ERF": 22,
}
_SQRT1_2 = 1.0 / math.sqrt(2.0)
_SQRT_2_PI = math.sqrt(2.0 / math.pi)


@njit(cache=True, inline="always", error_model="numpy")
def _erf(x):
    """erf in float arithmetic of x's type: a rational approximation on [-4, 4] (Eigen's, |error| < 5e-7),
    branch-free so loops over it vectorise."""
    x = min(max(x, -4.0), 4.0)
    x2 = x * x
    p = x2 * -2.72614225801306e-10 + 2.77068142495902e-08
    p = x2 * p + -2.10102402082508e-06
    p = x2 * p + -5.69250639462346e-05
    p = x2 * p + -7.34990630326855e-04
    p = x2 * p + -2.95459980854025e-03
    p = x2 * p + -1.60960333262415e-02
    q = x2 * -1.45660718464996e-05 + -2.13374055278905e-04
    q = x2 * q + -1.68282697438203e-03
    q = x2 * q + -7.37332916720468e-03
    q = x2 * q + -1.42647390514189e-02
    return min(max(x * p / q, -1.0), 1.0)


@njit(cache=True, inline="always", error_model="numpy")
def _tanh(x):
    """tanh as a rational approximation on [-7.9, 7.9] (Eigen's, |error| < 3e-7), branch-free; exact for tiny x."""
    if abs(x) < 4e-4:
        return x
    x = min(max(x, -7.90531110763549805), 7.90531110763549805)
    x2 = x * x
    p = x2 * -2.76076847742355e-16 + 2.00018790482477e-13
    p = x2 * p + -8.60467152213735e-11
    p = x2 * p + 5.12229709037114e-08
    p = x2 * p + 1.48572235717979e-05
    p = x2 * p + 6.37261928875436e-04
    p = x2 * p + 4.89352455891786e-03
    q = x2 * 1.19825839466702e-06 + 1.18534705686654e-04
    q = x2 * q + 2.26843463243900e-03
    q = x2 * q + 4.89352518554385e-03
    return x * p / q


@njit(inline="always", fastmath=_FM, error_model="numpy")
def _binary_per_column(buf, row, code, n):
    """Binary op ``code`` (0..7: add, sub, rsub, mul, div, rdiv, clip-min, clip-max) of ``buf[j]`` with
    ``row[j]``, in place; inlined into the program kernels so each branch stays a vectorisable loop."""
    if code == 0:
        for j in range(n):
            buf[j] = buf[j] + row[j]
    elif code == 1:
        for j in range(n):
            buf[j] = buf[j] - row[j]
    elif code == 2:
        for j in range(n):
            buf[j] = row[j] - buf[j]
    elif code == 3:
        for j in range(n):
            buf[j] = buf[j] * row[j]
    elif code == 4:
        for j in range(n):
            buf[j] = buf[j] / row[j]
    elif code == 5:
        for j in range(n):
            buf[j] = row[j] / buf[j]
    elif code == 6:
        for j in range(n):
            buf[j] = row[j] if buf[j] < row[j] else buf[j]
    else:
        for j in range(n):
            buf[j] = row[j] if buf[j] > row[j] else buf[j]


@njit(inline="always", fastmath=_FM, error_model="numpy")
def _binary_scalar(buf, c, code, n):
    """:func:`_binary_per_column` with one constant ``c`` for every element (Clip keeps NaN as NaN)."""
    if code == 0:
        for j in range(n):
            buf[j] = buf[j] + c
    elif code == 1:
        for j in range(n):
            buf[j] = buf[j] - c
    elif code == 2:
        for j in range(n):
            buf[j] = c - buf[j]
    elif code == 3:
        for j in range(n):
            buf[j] = buf[j] * c
    elif code == 4:
        for j in range(n):
            buf[j] = buf[j] / c
    elif code == 5:
        for j in range(n):
            buf[j] = c / buf[j]
    elif code == 6:
        for j in range(n):
            buf[j] = c if buf[j] < c else buf[j]
    else:
        for j in range(n):
            buf[j] = c if buf[j] > c else buf[j]


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def _program_inplace(buf, codes, consts, percol, bits):
    """Apply the program to the 1-D ``buf`` in place, one op over the whole buffer at a time (the op switch
    is outside the inner loops, which vectorise). ``percol``: ``consts[p, j]`` for element j, else
    ``consts[p, 0]`` for all. ``bits``: int32 scratch of at least ``buf.size`` for the float32 exp
    (:func:`exp_into32`), or empty: scalar ``math.exp`` (float64 buffers)."""
    n = buf.size
    for p in range(codes.size):
        code = codes[p]
        row = consts[p]
        c = row[0]
        if code <= 7:
            if percol:
                _binary_per_column(buf, row, code, n)
            else:
                _binary_scalar(buf, c, code, n)
        elif code == 10:
            for j in range(n):
                buf[j] = -buf[j]
        elif code == 11:
            if bits.size >= n:
                exp_into32(buf, n, bits)
            else:
                for j in range(n):
                    buf[j] = math.exp(buf[j])
        elif code == 12:
            for j in range(n):
                v = buf[j]
                buf[j] = math.log(v) if v >= 0 else math.nan
        elif code == 13:
            for j in range(n):
                buf[j] = _tanh(buf[j])
        elif code == 14:
            for j in range(n):
                v = buf[j]
                e = math.exp(-abs(v))  # stable for large |v|
                buf[j] = 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)
        elif code == 15:
            for j in range(n):
                v = buf[j]
                z = v * _SQRT1_2
                # beyond the approximation's range, erf is -1 to float precision: gelu = 0 (NaN at -inf)
                buf[j] = 0.0 * v if z < -4.0 else 0.5 * v * (1.0 + _erf(z))
        elif code == 16:
            for j in range(n):
                v = buf[j]
                buf[j] = 0.5 * v * (1.0 + _tanh(_SQRT_2_PI * (v + 0.044715 * v * v * v)))
        elif code == 17:
            for j in range(n):
                buf[j] = abs(buf[j])
        elif code == 18:
            for j in range(n):
                buf[j] = math.asinh(buf[j])
        elif code == 19:
            for j in range(n):
                buf[j] = np.rint(buf[j])  # half to even, as ONNX Round
        elif code == 20:
            for j in range(n):
                v = buf[j]
                buf[j] = v if v > 0 else 0.0 * v
        elif code == 21:
            for j in range(n):
                v = buf[j]
                buf[j] = math.sqrt(v) if v >= 0 else math.nan
        elif code == 22:
            for j in range(n):
                buf[j] = _erf(buf[j])


def _exp_scratch(x, n):
    """int32 scratch for :func:`exp_into32`: ``n`` entries for a float32 ``x``, none otherwise (typed in Numba)."""
    return np.empty(n if x.dtype == np.float32 else 0, dtype=np.int32)


@overload(_exp_scratch, jit_options={"cache": True})
def _exp_scratch_nb(x, n):
    f32 = isinstance(x, types.Array) and x.dtype == types.float32
    return (lambda x, n: np.empty(n, dtype=np.int32)) if f32 else (lambda x, n: np.empty(0, dtype=np.int32))


_BLOCK = 1024  # elements per pass of a program over a flat tensor (stays in L1)


@njit(cache=True, nogil=True, error_model="numpy")
def apply_program(x, codes, consts):
    """``x`` (any shape, C-contiguous) through the program; ``consts[p]`` has 1 column or ``x.shape[-1]``."""
    out = x.copy()
    flat = out.reshape(-1)
    ncol = consts.shape[1]
    # float32: the vectorised exp needs an int32 scratch of one pass; other dtypes keep math.exp
    bits = _exp_scratch(x, max(_BLOCK, ncol))
    if ncol == 1:
        for start in range(0, flat.size, _BLOCK):
            _program_inplace(flat[start : start + _BLOCK], codes, consts, False, bits)
    else:
        for start in range(0, flat.size, ncol):
            _program_inplace(flat[start : start + ncol], codes, consts, True, bits)
    return out


# ---- matrix products -----------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def dense(x, w, bias, codes, consts):
    """``program(x @ w + bias)``: x ``[M, K]``, w ``[K, N]``, bias ``[N]`` (all C-contiguous) -> ``[M, N]``.

    Rows are computed four at a time so each loaded row of ``w`` feeds four accumulator rows; the program
    (activation and any following elementwise steps) runs on each finished row while it is still in cache.
    """
    m, kdim = x.shape
    n = w.shape[1]
    out = np.empty((m, n), dtype=x.dtype)
    acc = np.empty((4, n), dtype=x.dtype)
    ncol = consts.shape[1]
    bits = _exp_scratch(x, n)  # float32 exp scratch (see apply_program)
    i = 0
    while i < m:
        rows = min(4, m - i)
        for r in range(rows):
            for j in range(n):
                acc[r, j] = bias[j]
        if rows == 4:
            for k in range(kdim):
                a0 = x[i, k]
                a1 = x[i + 1, k]
                a2 = x[i + 2, k]
                a3 = x[i + 3, k]
                for j in range(n):
                    wk = w[k, j]
                    acc[0, j] += a0 * wk
                    acc[1, j] += a1 * wk
                    acc[2, j] += a2 * wk
                    acc[3, j] += a3 * wk
        else:
            for r in range(rows):
                for k in range(kdim):
                    a = x[i + r, k]
                    for j in range(n):
                        acc[r, j] += a * w[k, j]
        for r in range(rows):
            if codes.size:
                _program_inplace(acc[r], codes, consts, ncol > 1, bits)
            for j in range(n):
                out[i + r, j] = acc[r, j]
        i += rows
    return out


# ---- float32 building blocks of compiled plans (:mod:`hepzoo.runtime.numba.compile`) -----------------------------
#
# The plan compiler generates one function per graph that calls these; they are inlined into it, so their
# constants are float32 (a Python float would promote float32 arithmetic to float64, halving the SIMD width
# and making the division in the rational approximations several times slower).

_f32 = np.float32
_F0, _F1, _FHALF = _f32(0.0), _f32(1.0), _f32(0.5)
_F_SQRT1_2, _F_SQRT_2_PI, _F_GELU_C = _f32(_SQRT1_2), _f32(_SQRT_2_PI), _f32(0.044715)
_F_ERF_LIM, _F_TANH_LIM, _F_TANH_TINY = _f32(4.0), _f32(7.90531110763549805), _f32(4e-4)
_EP = [_f32(c) for c in (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
                          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)]
_EQ = [_f32(c) for c in (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
                          -1.42647390514189e-02)]
_TP = [_f32(c) for c in (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
                          1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03)]
_TQ = [_f32(c) for c in (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)]
_EP0, _EP1, _EP2, _EP3, _EP4, _EP5, _EP6 = _EP
_EQ0, _EQ1, _EQ2, _EQ3, _EQ4 = _EQ
_TP0, _TP1, _TP2, _TP3, _TP4, _TP5, _TP6 = _TP
_TQ0, _TQ1, _TQ2, _TQ3 = _TQ


@njit(cache=True, inline="always", error_model="numpy")
def erf32(x):
    """:func:`_erf` in float32 arithmetic (Eigen's float erf: the coefficients were fitted for float32)."""
    x = min(max(x, -_F_ERF_LIM), _F_ERF_LIM)
    x2 = x * x
    p = x2 * _EP0 + _EP1
    p = x2 * p + _EP2
    p = x2 * p + _EP3
    p = x2 * p + _EP4
    p = x2 * p + _EP5
    p = x2 * p + _EP6
    q = x2 * _EQ0 + _EQ1
    q = x2 * q + _EQ2
    q = x2 * q + _EQ3
    q = x2 * q + _EQ4
    return min(max(x * p / q, -_F1), _F1)


@njit(cache=True, inline="always", error_model="numpy")
def tanh32(x):
    """:func:`_tanh` in float32 arithmetic."""
    if abs(x) < _F_TANH_TINY:
        return x
    x = min(max(x, -_F_TANH_LIM), _F_TANH_LIM)
    x2 = x * x
    p = x2 * _TP0 + _TP1
    p = x2 * p + _TP2
    p = x2 * p + _TP3
    p = x2 * p + _TP4
    p = x2 * p + _TP5
    p = x2 * p + _TP6
    q = x2 * _TQ0 + _TQ1
    q = x2 * q + _TQ2
    q = x2 * q + _TQ3
    return x * p / q


@njit(cache=True, inline="always", error_model="numpy")
def gelu32(v):
    z = v * _F_SQRT1_2
    return _F0 * v if z < -_F_ERF_LIM else _FHALF * v * (_F1 + erf32(z))


@njit(cache=True, inline="always", error_model="numpy")
def gelu_tanh32(v):
    return _FHALF * v * (_F1 + tanh32(_F_SQRT_2_PI * (v + _F_GELU_C * v * v * v)))


@njit(cache=True, inline="always", error_model="numpy")
def sigmoid32(v):
    e = math.exp(-abs(v))
    return _F1 / (_F1 + e) if v >= _F0 else e / (_F1 + e)


@njit(cache=True, inline="always", error_model="numpy")
def log32(v):
    return math.log(v) if v >= _F0 else _f32(math.nan)


@njit(cache=True, inline="always", error_model="numpy")
def sqrt32(v):
    return math.sqrt(v) if v >= _F0 else _f32(math.nan)


@njit(cache=True, inline="always", error_model="numpy")
def relu32(v):
    return v if v > _F0 else _F0 * v


# Cephes' float32 expf (x = k ln2 + r, a degree-6 polynomial in r, ~1 ulp) in two branch-free loops that vectorise
# (math.exp on float32 is a scalar libm call here, no SVML: ~7 ns per element): the polynomial and the exponent bits
# of 2^k (int32 scratch), then the scale (a float32 view of the bits). k in [-126, 128]: 2^128 = 2^127 * 2.
_F_LOG2E, _F_LN2_HI, _F_LN2_LO = _f32(1.44269504088896341), _f32(0.693359375), _f32(-2.12194440e-4)
_F_EXP_LO, _F_K_LO, _F_K_HI, _F_K_MAX = _f32(-87.3), _f32(-126.0), _f32(127.0), _f32(128.0)
_XC0, _XC1, _XC2, _XC3, _XC4, _XC5 = (_f32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                                        4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy", boundscheck=False)
def exp_into32(buf, n, bits):
    """float32 ``buf[:n] = exp(buf[:n])``; ``bits``: int32 scratch, size >= n. < -87.3: 0; > 88.72: inf; NaN: NaN."""
    fbits = bits.view(np.float32)
    for j in range(n):
        v = buf[j]
        k = np.floor(v * _F_LOG2E + _FHALF)
        k = min(max(k, _F_K_LO), _F_K_MAX)
        r = v - k * _F_LN2_HI
        r = r - k * _F_LN2_LO
        p = _XC0 * r + _XC1
        p = p * r + _XC2
        p = p * r + _XC3
        p = p * r + _XC4
        p = p * r + _XC5
        p = p * (r * r) + r + _F1
        kk = min(k, _F_K_HI)
        p = p * (_F1 + (k - kk))  # the factor 2 of 2^128
        buf[j] = p if v >= _F_EXP_LO else (v - v if v != v else _F0)  # NaN stays NaN
        bits[j] = (np.int32(kk) + np.int32(127)) << np.int32(23)
    for j in range(n):
        buf[j] = buf[j] * fbits[j]


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy", boundscheck=False)
def dense_into(x, m, w, bias, out):
    """``out[:m] = x[:m] @ w + bias`` (x ``[>=m, K]``, w ``[K, N]``, out ``[>=m, N]``), no allocation.

    Four rows and two ``k`` per pass over a row of ``out``: each loaded pair of ``w`` rows feeds eight
    multiply-adds and the read-modify-write traffic on ``out`` is halved (measured ~1.3-1.6x the one-``k``
    form at K = 12..64, N = 64 on AVX-512).
    """
    kdim = x.shape[1]
    n = w.shape[1]
    i = 0
    while i + 4 <= m:
        for j in range(n):
            b = bias[j]
            out[i, j] = b
            out[i + 1, j] = b
            out[i + 2, j] = b
            out[i + 3, j] = b
        k = 0
        while k + 2 <= kdim:
            a0, a1, a2, a3 = x[i, k], x[i + 1, k], x[i + 2, k], x[i + 3, k]
            c0, c1, c2, c3 = x[i, k + 1], x[i + 1, k + 1], x[i + 2, k + 1], x[i + 3, k + 1]
            for j in range(n):
                wk = w[k, j]
                wl = w[k + 1, j]
                out[i, j] += a0 * wk + c0 * wl
                out[i + 1, j] += a1 * wk + c1 * wl
                out[i + 2, j] += a2 * wk + c2 * wl
                out[i + 3, j] += a3 * wk + c3 * wl
            k += 2
        if k < kdim:
            a0, a1, a2, a3 = x[i, k], x[i + 1, k], x[i + 2, k], x[i + 3, k]
            for j in range(n):
                wk = w[k, j]
                out[i, j] += a0 * wk
                out[i + 1, j] += a1 * wk
                out[i + 2, j] += a2 * wk
                out[i + 3, j] += a3 * wk
        i += 4
    while i < m:
        for j in range(n):
            out[i, j] = bias[j]
        for k in range(kdim):
            a = x[i, k]
            for j in range(n):
                out[i, j] += a * w[k, j]
        i += 1


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy", boundscheck=False)
def program_rows(x, m, codes, consts, out):
    """``out[:m] = program(x[:m])`` (rows of width C; ``consts [P, C or 1]``; ``out`` C-contiguous) in float32
    arithmetic. ``x`` may be ``out`` (in place).

    Like :func:`_program_inplace`, one op over the block at a time, so the op switch stays outside the inner
    loops, which vectorise; ops with a scalar constant run over the block as one flat loop (no per-row cost).
    """
    w = out.shape[1]
    if x.shape[0] != out.shape[0] or x.ctypes.data != out.ctypes.data:
        for r in range(m):
            for j in range(w):
                out[r, j] = x[r, j]
    flat = out.reshape(-1)
    n = m * w  # the scalar-constant ops below run over the block as one flat loop
    for p in range(codes.size):
        code = codes[p]
        row = consts[p]
        c = row[0]
        if code <= 7 and consts.shape[1] > 1:
            for r in range(m):
                _binary_per_column(flat[r * w : (r + 1) * w], row, code, w)
            continue
        buf = flat[:n]
        if code <= 7:
            _binary_scalar(buf, c, code, n)
        elif code == 10:
            for j in range(n):
                buf[j] = -buf[j]
        elif code == 11:
            exp_into32(buf, n, np.empty(n, dtype=np.int32))
        elif code == 12:
            for j in range(n):
                buf[j] = log32(buf[j])
        elif code == 13:
            for j in range(n):
                buf[j] = tanh32(buf[j])
        elif code == 14:
            for j in range(n):
                buf[j] = sigmoid32(buf[j])
        elif code == 15:
            for j in range(n):
                buf[j] = gelu32(buf[j])
        elif code == 16:
            for j in range(n):
                buf[j] = gelu_tanh32(buf[j])
        elif code == 17:
            for j in range(n):
                buf[j] = abs(buf[j])
        elif code == 18:
            for j in range(n):
                buf[j] = math.asinh(buf[j])
        elif code == 19:
            for j in range(n):
                buf[j] = np.rint(buf[j])
        elif code == 20:
            for j in range(n):
                buf[j] = relu32(buf[j])
        elif code == 21:
            for j in range(n):
                buf[j] = sqrt32(buf[j])
        elif code == 22:
            for j in range(n):
                buf[j] = erf32(buf[j])


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy", boundscheck=False)
def dense_t_into(x, m, wt, bias, out):
    """:func:`dense_into` for narrow outputs, from the transposed weight ``wt [N, K]``: one vectorised dot
    product over ``K`` per output (a row loop over N < 16 columns would not fill a SIMD register)."""
    kdim = x.shape[1]
    n = wt.shape[0]
    for i in range(m):
        for j in range(n):
            s = bias[j]
            for k in range(kdim):
                s += x[i, k] * wt[j, k]
            out[i, j] = s


NARROW = 16  # dense products with fewer output columns use the dot-product kernel (:func:`dense_t_into`)
_DENSE_ROWS = 32  # rows per block of :func:`dense_rows`: the block's output is still in cache for the program


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy", boundscheck=False)
def dense_rows(x, w, wt, bias, codes, consts, narrow):
    """``program(x @ w + bias)`` for float32 x ``[M, K]`` -> ``[M, N]``, a block of rows at a time: the
    compiled plans' :func:`dense_into` (or :func:`dense_t_into` from ``wt [N, K]`` when ``narrow``) followed by
    :func:`program_rows` on the block while it is in cache, with float32 activations."""
    m = x.shape[0]
    n = bias.size
    out = np.empty((m, n), dtype=x.dtype)
    for i in range(0, m, _DENSE_ROWS):
        mb = min(_DENSE_ROWS, m - i)
        xb = x[i : i + mb]
        ob = out[i : i + mb]
        if narrow:
            dense_t_into(xb, mb, wt, bias, ob)
        else:
            dense_into(xb, mb, w, bias, ob)
        if codes.size:
            program_rows(ob, mb, codes, consts, ob)
    return out
