"""Softmax, products of two runtime tensors, and the fused attention that combines them (interpreter path).

:func:`bmm` multiplies two runtime tensors (``MatMul`` without a constant weight); :func:`softmax` (float64)
and :func:`softmax32` (float32, vectorised exp) normalise rows; :func:`attention` runs
``softmax(q @ kt + mask) @ v`` per batch entry with the scores kept in cache (the unfused MatMul/Softmax
form of attention); :func:`online_attention` runs ``softmax(scale * q @ kt) @ v`` streamed over key blocks with
a running max and sum per query row (ONNX Runtime's ``com.microsoft.MultiHeadAttention``, the form the MLPF
transformer is exported in): its scratch is a few rows of one key block, never ``M x N``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["attention", "bmm", "online_attention", "softmax", "softmax32"]

# fastmath flags that allow reordering sums (matrix products) but keep inf/NaN semantics (-inf masks);
# error_model="numpy" everywhere: x / 0 gives inf as in NumPy and ONNX, and loops with a division vectorise.
# (Defined in each kernel module, not imported: see the package docstring on Numba's cache.)
_FM = {"reassoc", "contract", "nsz", "arcp"}

_f32 = np.float32
_F0, _F1, _FHALF = _f32(0.0), _f32(1.0), _f32(0.5)


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
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


@njit(cache=True, nogil=True, error_model="numpy")
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


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy", boundscheck=False)
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


@njit(cache=True, nogil=True, error_model="numpy", boundscheck=False)
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


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy", boundscheck=False)
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


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy", boundscheck=False)
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


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy", boundscheck=False)
def online_attention(q, kt, vt, scale, block):
    """``softmax(scale * q @ kt) @ v`` per group (a batch entry and head) in linear memory (online softmax).

    q ``[G, M, D]``, kt ``[G, D, N]`` (keys transposed), vt ``[G, Dv, N]`` (values transposed) -> ``[G, M, Dv]``.
    Four query rows at a time (a last group of fewer is padded with zero rows) walk the keys in blocks of
    ``block``: the block's scores (accumulated over ``D`` as in :func:`attention`, contiguous in N), their max
    ``b``; each row's running max ``m`` becomes ``m' = max(m, b)``, its running sum and accumulated output are
    rescaled by ``exp(m - m')`` and the block's ``exp(s - m')`` (sum, and the weighted values: one contiguous
    dot product per output column for the four rows) added; the output is the accumulator over the sum.
    Scratch: ``4 x block`` scores and weights, ``4 x Dv`` accumulators. A row whose scores are all ``-inf``
    gives NaN, as a softmax does.
    """
    ng, m, dim = q.shape
    n = kt.shape[2]
    dv = vt.shape[1]
    out = np.empty((ng, m, dv), dtype=q.dtype)
    bk = max(1, min(block, n))
    s = np.empty((4, bk), dtype=q.dtype)
    p = np.empty((4, bk), dtype=q.dtype)
    bits = np.empty(bk, dtype=np.int32)
    acc = np.empty((4, dv), dtype=q.dtype)
    qs = np.empty((4, dim), dtype=q.dtype)
    run_max = np.empty(4, dtype=q.dtype)
    run_sum = np.empty(4, dtype=q.dtype)
    corr = np.empty(4, dtype=q.dtype)
    sc = q.dtype.type(scale)
    for g in range(ng):
        kb = kt[g]
        vb = vt[g]
        i = 0
        while i < m:
            rows = min(4, m - i)
            for r in range(4):
                run_max[r] = -np.inf
                run_sum[r] = _F0
                for c in range(dv):
                    acc[r, c] = _F0
                for k in range(dim):
                    qs[r, k] = q[g, i + r, k] * sc if r < rows else _F0
            j0 = 0
            while j0 < n:
                w = min(bk, n - j0)
                for r in range(4):
                    for j in range(w):
                        s[r, j] = _F0
                k = 0
                while k + 2 <= dim:
                    a0, a1, a2, a3 = qs[0, k], qs[1, k], qs[2, k], qs[3, k]
                    c0, c1, c2, c3 = qs[0, k + 1], qs[1, k + 1], qs[2, k + 1], qs[3, k + 1]
                    k0 = kb[k, j0 : j0 + w]
                    k1 = kb[k + 1, j0 : j0 + w]
                    for j in range(w):
                        w0 = k0[j]
                        w1 = k1[j]
                        s[0, j] += a0 * w0 + c0 * w1
                        s[1, j] += a1 * w0 + c1 * w1
                        s[2, j] += a2 * w0 + c2 * w1
                        s[3, j] += a3 * w0 + c3 * w1
                    k += 2
                if k < dim:
                    a0, a1, a2, a3 = qs[0, k], qs[1, k], qs[2, k], qs[3, k]
                    k0 = kb[k, j0 : j0 + w]
                    for j in range(w):
                        w0 = k0[j]
                        s[0, j] += a0 * w0
                        s[1, j] += a1 * w0
                        s[2, j] += a2 * w0
                        s[3, j] += a3 * w0
                for r in range(4):
                    new = max(run_max[r], _row_max32(s[r], w, bits))
                    corr[r] = math.exp(run_max[r] - new)  # 0 on the first block; NaN while every score is -inf
                    run_sum[r] = run_sum[r] * corr[r] + _exp_sub_sum32(s[r], new, w, p[r], bits)
                    run_max[r] = new
                for c in range(dv):
                    t0 = _F0
                    t1 = _F0
                    t2 = _F0
                    t3 = _F0
                    vc = vb[c, j0 : j0 + w]
                    for j in range(w):
                        x = vc[j]
                        t0 += p[0, j] * x
                        t1 += p[1, j] * x
                        t2 += p[2, j] * x
                        t3 += p[3, j] * x
                    acc[0, c] = acc[0, c] * corr[0] + t0
                    acc[1, c] = acc[1, c] * corr[1] + t1
                    acc[2, c] = acc[2, c] * corr[2] + t2
                    acc[3, c] = acc[3, c] * corr[3] + t3
                j0 += w
            for r in range(rows):
                inv = _F1 / run_sum[r]
                for c in range(dv):
                    out[g, i + r, c] = acc[r, c] * inv
            i += rows
    return out
