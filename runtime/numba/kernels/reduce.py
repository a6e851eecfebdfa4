"""Reductions and sorting along the last axis of ``[R, D]`` rows: LayerNormalization, ArgMax, TopK."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["argmax_last", "layer_norm", "topk"]


@njit(cache=True, nogil=True, error_model="numpy")
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


@njit(cache=True, nogil=True, error_model="numpy")
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


@njit(cache=True, inline="always", error_model="numpy")
def _before(vi, vj, i, j, largest):
    """Does element (value vi, index i) come before (vj, j)? Ties: the lower index first (ONNX TopK)."""
    if largest:
        return vi > vj or (vi == vj and i < j)
    return vi < vj or (vi == vj and i < j)


@njit(cache=True, nogil=True, error_model="numpy")
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
