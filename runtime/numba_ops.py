"""Numba kernels behind the ``numba`` backend (:mod:`hepzoo.runtime.numba_backend`).

Each kernel implements one ONNX operator (opset 20) — or a fused group of them — on C-contiguous host arrays
that the backend has already flattened to the 1-, 2- or 3-D view the kernel takes; NumPy-level reshapes,
broadcasts and axis moves stay in the backend. All kernels are serial (``parallel=False``: the caller's
framework owns threading) and cached on disk (``cache=True``), so a second process does not recompile.

**Elementwise programs.** A chain of elementwise operators on one tensor (``Sub(x, mean)``, ``Div(., std)``,
``Tanh``, ``Exp``, ``Gelu``, ...) is encoded as a small program: one op code per step plus a constant operand
``consts[step, c]`` that varies along the last axis (``c``) or not at all (one column). :func:`apply_program`
runs a program on a tensor in one pass, and :func:`dense` runs it as the epilogue of a matrix product (fused
``MatMul``/``Gemm`` + bias + activation), so no intermediate tensor is written.

Every kernel has a NumPy reference in ``tests/test_numba_backend.py``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "OP_CODES",
    "apply_program",
    "argmax_last",
    "attention",
    "bmm",
    "dense",
    "dense_rows",
    "copy_cols",
    "dense_into",
    "dense_t_into",
    "gather_cols",
    "program_rows",
    "erf32",
    "gelu32",
    "gelu_tanh32",
    "sigmoid32",
    "tanh32",
    "gather_elements",
    "layer_norm",
    "run_program_numpy",
    "scatter_elements",
    "softmax",
    "softmax32",
    "topk",
]

# fastmath flags that allow reordering sums (matrix products) but keep inf/NaN semantics (-inf masks);
# error_model="numpy" everywhere: x / 0 gives inf as in NumPy and ONNX, and loops with a division vectorise
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


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _program_inplace(buf, codes, consts, percol):
    """Apply the program to the 1-D ``buf`` in place, one op over the whole buffer at a time (the op switch
    is outside the inner loops, which vectorise). ``percol``: ``consts[p, j]`` for element j, else
    ``consts[p, 0]`` for all."""
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


_BLOCK = 1024  # elements per pass of a program over a flat tensor (stays in L1)


@njit(cache=True, error_model="numpy")
def apply_program(x, codes, consts):
    """``x`` (any shape, C-contiguous) through the program; ``consts[p]`` has 1 column or ``x.shape[-1]``."""
    out = x.copy()
    flat = out.reshape(-1)
    ncol = consts.shape[1]
    if ncol == 1:
        for start in range(0, flat.size, _BLOCK):
            _program_inplace(flat[start : start + _BLOCK], codes, consts, False)
    else:
        for start in range(0, flat.size, ncol):
            _program_inplace(flat[start : start + ncol], codes, consts, True)
    return out


def run_program_numpy(x: np.ndarray, codes: np.ndarray, consts: np.ndarray) -> np.ndarray:
    """NumPy reference of :func:`apply_program` (one pass per step), used by tests and constant folding."""
    from scipy.special import erf

    names = {v: k for k, v in OP_CODES.items()}
    v = np.array(x, dtype=x.dtype, copy=True)
    for p, code in enumerate(codes):
        c = consts[p] if consts.shape[1] > 1 else consts[p, 0]
        c = np.asarray(c, dtype=x.dtype)
        name = names[int(code)]
        with np.errstate(all="ignore"):
            v = {
                "ADD": lambda: v + c,
                "SUB": lambda: v - c,
                "RSUB": lambda: c - v,
                "MUL": lambda: v * c,
                "DIV": lambda: v / c,
                "RDIV": lambda: c / v,
                "MAX": lambda: np.where(v < c, c, v),
                "MIN": lambda: np.where(v > c, c, v),
                "NEG": lambda: -v,
                "EXP": lambda: np.exp(v),
                "LOG": lambda: np.log(v),
                "TANH": lambda: np.tanh(v),
                "SIGMOID": lambda: 1.0 / (1.0 + np.exp(-v)),
                "GELU": lambda: 0.5 * v * (1.0 + erf(v.astype(np.float64) * _SQRT1_2)),
                "GELU_TANH": lambda: 0.5 * v * (1.0 + np.tanh(_SQRT_2_PI * (v + 0.044715 * v**3))),
                "ABS": lambda: np.abs(v),
                "ASINH": lambda: np.arcsinh(v),
                "ROUND": lambda: np.rint(v),
                "RELU": lambda: np.maximum(v, 0),
                "SQRT": lambda: np.sqrt(v),
                "ERF": lambda: erf(v.astype(np.float64)),
            }[name]().astype(x.dtype)
    return v


# ---- matrix products -----------------------------------------------------------------------------------------


@njit(cache=True, fastmath=_FM, error_model="numpy")
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
                _program_inplace(acc[r], codes, consts, ncol > 1)
            for j in range(n):
                out[i + r, j] = acc[r, j]
        i += rows
    return out


@njit(cache=True, fastmath=_FM, error_model="numpy")
def bmm(a, b):
    """Batched product of two runtime tensors: a ``[B, M, K]`` @ b ``[B, K, N]`` -> ``[B, M, N]``."""
    nb, m, kdim = a.shape
    n = b.shape[2]
    out = np.zeros((nb, m, n), dtype=a.dtype)
    for t in range(nb):
        for i in range(m):
            for k in range(kdim):
                av = a[t, i, k]
                for j in range(n):
                    out[t, i, j] += av * b[t, k, j]
    return out


# ---- normalisation, softmax ----------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def layer_norm(x, gamma, beta, eps):
    """LayerNormalization over the last axis of x ``[R, D]`` (float32 statistics kept in float64).

    Returns ``(y, mean [R], inv_std [R])``; ``gamma``/``beta`` are ``[D]``.
    """
    r, d = x.shape
    y = np.empty_like(x)
    mean = np.empty(r, dtype=x.dtype)
    inv_std = np.empty(r, dtype=x.dtype)
    for i in range(r):
        s = 0.0
        for j in range(d):
            s += x[i, j]
        mu = s / d
        v = 0.0
        for j in range(d):
            t = x[i, j] - mu
            v += t * t
        inv = 1.0 / math.sqrt(v / d + eps)
        for j in range(d):
            y[i, j] = (x[i, j] - mu) * inv * gamma[j] + beta[j]
        mean[i] = mu
        inv_std[i] = inv
    return y, mean, inv_std


@njit(cache=True, error_model="numpy")
def softmax(x):
    """Softmax over the last axis of x ``[R, D]``; a row of only ``-inf`` gives NaN, as ONNX Runtime does."""
    r, d = x.shape
    y = np.empty_like(x)
    for i in range(r):
        m = -np.inf
        for j in range(d):  # a NaN anywhere makes the whole row NaN through the sum below
            m = max(m, x[i, j])
        s = 0.0
        for j in range(d):
            e = math.exp(x[i, j] - m)
            y[i, j] = e
            s += e
        inv = 1.0 / s
        for j in range(d):
            y[i, j] = y[i, j] * inv
    return y


@njit(cache=True, error_model="numpy")
def argmax_last(x, select_last):
    """ArgMax over the last axis of x ``[R, D]`` -> int64 ``[R]``; ties: first index (or last)."""
    r, d = x.shape
    out = np.empty(r, dtype=np.int64)
    for i in range(r):
        best = 0
        for j in range(1, d):
            if x[i, j] > x[i, best] or (select_last and x[i, j] == x[i, best]):
                best = j
        out[i] = best
    return out


# ---- sorting, gather/scatter ---------------------------------------------------------------------------------


@njit(cache=True, inline="always", error_model="numpy")
def _before(vi, vj, i, j, largest):
    """Does element (value vi, index i) come before (vj, j)? Ties: the lower index first (ONNX TopK)."""
    if largest:
        return vi > vj or (vi == vj and i < j)
    return vi < vj or (vi == vj and i < j)


@njit(cache=True, error_model="numpy")
def topk(x, k, largest):
    """TopK along the last axis of x ``[R, D]``: ``(values [R, k], int64 indices [R, k])``, sorted.

    A stable merge sort of indices per row: equal values keep ascending index order, as ONNX requires.
    """
    r, d = x.shape
    values = np.empty((r, k), dtype=x.dtype)
    indices = np.empty((r, k), dtype=np.int64)
    idx = np.empty(d, dtype=np.int64)
    tmp = np.empty(d, dtype=np.int64)
    for row in range(r):
        for j in range(d):
            idx[j] = j
        width = 1
        while width < d:
            lo = 0
            while lo < d - width:
                mid = lo + width
                hi = min(lo + 2 * width, d)
                a = lo
                b = mid
                o = lo
                while a < mid and b < hi:
                    ia = idx[a]
                    ib = idx[b]
                    if _before(x[row, ib], x[row, ia], ib, ia, largest):
                        tmp[o] = ib
                        b += 1
                    else:
                        tmp[o] = ia
                        a += 1
                    o += 1
                while a < mid:
                    tmp[o] = idx[a]
                    a += 1
                    o += 1
                while b < hi:
                    tmp[o] = idx[b]
                    b += 1
                    o += 1
                for t in range(lo, hi):
                    idx[t] = tmp[t]
                lo += 2 * width
            width *= 2
        for j in range(k):
            indices[row, j] = idx[j]
            values[row, j] = x[row, idx[j]]
    return values, indices


@njit(cache=True, error_model="numpy")
def gather_elements(data, idx):
    """GatherElements on 3-D views: data ``[O, A, I]``, idx ``[O, K, I]`` -> ``[O, K, I]``.

    Negative indices count from the end. Returns ``(out, bad)``: ``bad`` is the flat position in ``idx`` of
    the first out-of-range index (-1 if all are in range), so the caller can raise an error naming the node.
    """
    o_, a_, i_ = data.shape
    k_ = idx.shape[1]
    out = np.empty((o_, k_, i_), dtype=data.dtype)
    for o in range(o_):
        for k in range(k_):
            for i in range(i_):
                j = idx[o, k, i]
                if j < 0:
                    j += a_
                if j < 0 or j >= a_:
                    return out, (o * k_ + k) * i_ + i
                out[o, k, i] = data[o, j, i]
    return out, -1


@njit(cache=True, error_model="numpy")
def scatter_elements(data, idx, updates, reduction):
    """ScatterElements on 3-D views (data ``[O, A, I]``, idx/updates ``[O, K, I]``) -> a new ``[O, A, I]``.

    ``reduction``: 0 none (later updates win), 1 add, 2 mul, 3 max, 4 min. Returns ``(out, bad)`` as
    :func:`gather_elements`.
    """
    out = data.copy()
    o_, a_, i_ = data.shape
    k_ = idx.shape[1]
    for o in range(o_):
        for k in range(k_):
            for i in range(i_):
                j = idx[o, k, i]
                if j < 0:
                    j += a_
                if j < 0 or j >= a_:
                    return out, (o * k_ + k) * i_ + i
                u = updates[o, k, i]
                if reduction == 0:
                    out[o, j, i] = u
                elif reduction == 1:
                    out[o, j, i] += u
                elif reduction == 2:
                    out[o, j, i] *= u
                elif reduction == 3:
                    out[o, j, i] = max(out[o, j, i], u)
                else:
                    out[o, j, i] = min(out[o, j, i], u)
    return out, -1


# ---- building blocks of compiled plans (:mod:`hepzoo.runtime.numba_compile`) ------------------------------------
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


@njit(cache=True, fastmath=_FM, error_model="numpy", boundscheck=False)
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


@njit(cache=True, fastmath=_FM, error_model="numpy", boundscheck=False)
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
            for j in range(n):
                buf[j] = math.exp(buf[j])
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


@njit(cache=True, error_model="numpy", boundscheck=False)
def copy_cols(x, m, start, step, count, out, offset):
    """``out[:m, offset + j] = x[:m, start + step * j]`` for ``j < count`` (Slice / Concat on the feature axis)."""
    for i in range(m):
        for j in range(count):
            out[i, offset + j] = x[i, start + step * j]


@njit(cache=True, error_model="numpy", boundscheck=False)
def gather_cols(x, m, idx, out):
    """``out[:m, c] = x[:m, idx[c]]`` (Gather with constant, normalised indices on the feature axis)."""
    for i in range(m):
        for c in range(idx.size):
            out[i, c] = x[i, idx[c]]


@njit(cache=True, fastmath=_FM, error_model="numpy", boundscheck=False)
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


# ---- attention and float32 softmax (interpreter path) --------------------------------------------------------------
#
# ``math.exp`` on float32 is a scalar libm call (no SVML in this Numba build), which kept Softmax from
# vectorising. :func:`_exp_rows32` is Cephes' float32 ``expf`` (a degree-6 polynomial after range reduction,
# relative error ~1 ulp), written as two branch-free loops so both vectorise: the first stores the polynomial
# and the biased exponent bits of 2^k, the second reads those bits back as a float (an int32 view of a float32
# scratch row) and scales.

_F_LOG2E, _F_LN2_HI, _F_LN2_LO = _f32(1.44269504088896341), _f32(0.693359375), _f32(-2.12194440e-4)
_F_EXP_LO = _f32(-87.3)  # below: exp underflows (result 0, as for -inf keys of an attention mask)
_EXP_C = [_f32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
                             5.0000001201e-1)]
_EC0, _EC1, _EC2, _EC3, _EC4, _EC5 = _EXP_C


@njit(cache=True, fastmath=_FM, error_model="numpy", boundscheck=False)
def _exp_sub_sum32(x, shift, n, out, bits):
    """``out[:n] = exp(x[:n] - shift)`` in float32 and return the sum; ``bits`` is an int32 scratch of size
    ``>= n``. ``out`` must not be ``x`` (in place, LLVM's run-time alias check picks the scalar loop: 6x
    slower). Arguments below -87.3 (and -inf) give 0, NaN gives NaN."""
    fbits = bits.view(np.float32)
    for j in range(n):
        v = x[j] - shift
        k = np.floor(v * _F_LOG2E + _FHALF)
        k = max(k, _f32(-126.0))  # 2^k stays a normal float; v < -87.3 is zeroed below
        r = v - k * _F_LN2_HI
        r = r - k * _F_LN2_LO
        p = _EC0 * r + _EC1
        p = p * r + _EC2
        p = p * r + _EC3
        p = p * r + _EC4
        p = p * r + _EC5
        p = p * (r * r) + r + _F1
        out[j] = p if v >= _F_EXP_LO else (v - v if v != v else _F0)  # NaN stays NaN
        bits[j] = (np.int32(k) + np.int32(127)) << np.int32(23)
    s = _F0
    for j in range(n):
        e = out[j] * fbits[j]
        out[j] = e
        s += e
    return s


@njit(cache=True, error_model="numpy", boundscheck=False)
def _row_max32(x, n, bits):
    """max of float32 ``x[:n]`` (n >= 1) as an integer max over order-preserving keys of the float bits (a float
    max reduction does not vectorise without ``nnan``); a positive NaN wins (the row becomes NaN), any other
    NaN reaches every output of the row through the exp and the sum. ``bits``: int32 scratch, size >= 1."""
    ib = x.view(np.int32)
    sign = np.int32(0x7FFFFFFF)
    best = np.int32(-2147483648)
    for j in range(n):
        i = ib[j]
        k = i ^ ((i >> np.int32(31)) & sign)
        best = k if k > best else best
    bits[0] = best ^ ((best >> np.int32(31)) & sign)
    return bits.view(np.float32)[0]


@njit(cache=True, fastmath=_FM, error_model="numpy", boundscheck=False)
def softmax32(x):
    """:func:`softmax` for float32 rows ``[R, D]`` in float32 arithmetic with the vectorised exp (ONNX Runtime
    also sums in float32); a row of only ``-inf`` gives NaN."""
    r, d = x.shape
    y = np.empty_like(x)
    bits = np.empty(max(d, 1), dtype=np.int32)
    for i in range(r):
        row = x[i]
        yr = y[i]
        s = _exp_sub_sum32(row, _row_max32(row, d, bits), d, yr, bits)
        inv = _F1 / s
        for j in range(d):
            yr[j] = yr[j] * inv
    return y


@njit(cache=True, fastmath=_FM, error_model="numpy", boundscheck=False)
def attention(q, kt, mask, vt):
    """Fused ``softmax(q @ kt + mask) @ v`` per batch entry, the scores never leaving cache.

    q ``[B, M, D]``, kt ``[B, D, N]`` (keys transposed), mask ``[1 or B, 1 or M, N]`` (added to the scores
    before the softmax, as ONNX ``Add``), vt ``[B, Dv, N]`` (values transposed) -> ``[B, M, Dv]``. Four query
    rows at a time: their score rows are accumulated over ``D`` in the layout of a dense product (contiguous
    in N), go through the float32 softmax, then each output is one contiguous dot product over N. A fully
    masked row gives NaN, as the unfused graph does.
    """
    nb, m, dim = q.shape
    n = kt.shape[2]
    dv = vt.shape[1]
    out = np.empty((nb, m, dv), dtype=q.dtype)
    s = np.empty((4, n), dtype=q.dtype)
    p = np.empty((4, n), dtype=q.dtype)
    bits = np.empty(max(n, 1), dtype=np.int32)
    inv = np.empty(4, dtype=q.dtype)
    for b in range(nb):
        mb = mask[b if mask.shape[0] > 1 else 0]
        kb = kt[b]
        vb = vt[b]
        i = 0
        while i < m:
            rows = min(4, m - i)
            for r in range(rows):
                for j in range(n):
                    s[r, j] = 0
            if rows == 4:
                k = 0
                while k + 2 <= dim:
                    a0, a1, a2, a3 = q[b, i, k], q[b, i + 1, k], q[b, i + 2, k], q[b, i + 3, k]
                    c0, c1, c2, c3 = q[b, i, k + 1], q[b, i + 1, k + 1], q[b, i + 2, k + 1], q[b, i + 3, k + 1]
                    for j in range(n):
                        w0 = kb[k, j]
                        w1 = kb[k + 1, j]
                        s[0, j] += a0 * w0 + c0 * w1
                        s[1, j] += a1 * w0 + c1 * w1
                        s[2, j] += a2 * w0 + c2 * w1
                        s[3, j] += a3 * w0 + c3 * w1
                    k += 2
                if k < dim:
                    a0, a1, a2, a3 = q[b, i, k], q[b, i + 1, k], q[b, i + 2, k], q[b, i + 3, k]
                    for j in range(n):
                        w0 = kb[k, j]
                        s[0, j] += a0 * w0
                        s[1, j] += a1 * w0
                        s[2, j] += a2 * w0
                        s[3, j] += a3 * w0
            else:
                for r in range(rows):
                    for k in range(dim):
                        a = q[b, i + r, k]
                        for j in range(n):
                            s[r, j] += a * kb[k, j]
            for r in range(rows):
                mr = mb[(i + r) if mb.shape[0] > 1 else 0]
                sr = s[r]
                for j in range(n):
                    sr[j] = sr[j] + mr[j]
                inv[r] = _F1 / _exp_sub_sum32(sr, _row_max32(sr, n, bits) if n else _F0, n, p[r], bits)
            if rows == 4:
                for c in range(dv):
                    vc = vb[c]
                    t0 = _F0
                    t1 = _F0
                    t2 = _F0
                    t3 = _F0
                    for j in range(n):
                        x = vc[j]
                        t0 += p[0, j] * x
                        t1 += p[1, j] * x
                        t2 += p[2, j] * x
                        t3 += p[3, j] * x
                    out[b, i, c] = t0 * inv[0]
                    out[b, i + 1, c] = t1 * inv[1]
                    out[b, i + 2, c] = t2 * inv[2]
                    out[b, i + 3, c] = t3 * inv[3]
            else:
                for r in range(rows):
                    for c in range(dv):
                        t = _F0
                        for j in range(n):
                            t += p[r, j] * vb[c, j]
                        out[b, i + r, c] = t * inv[r]
            i += rows
    return out


NARROW = 16  # dense products with fewer output columns use the dot-product kernel (:func:`dense_t_into`)
_DENSE_ROWS = 32  # rows per block of :func:`dense_rows`: the block's output is still in cache for the program


@njit(cache=True, fastmath=_FM, error_model="numpy", boundscheck=False)
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
