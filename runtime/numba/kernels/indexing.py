"""Index-driven data movement: GatherElements and ScatterElements on 3-D views, and the column copies and
gathers of compiled plans (Slice / Concat / Gather on the feature axis)."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["copy_cols", "gather_cols", "gather_elements", "scatter_elements"]


@njit(cache=True, nogil=True, error_model="numpy")
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


@njit(cache=True, nogil=True, error_model="numpy")
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


@njit(cache=True, nogil=True, error_model="numpy", boundscheck=False)
def copy_cols(x, m, start, step, count, out, offset):
    """``out[:m, offset + j] = x[:m, start + step * j]`` for ``j < count`` (Slice / Concat on the feature axis)."""
    for i in range(m):
        for j in range(count):
            out[i, offset + j] = x[i, start + step * j]


@njit(cache=True, nogil=True, error_model="numpy", boundscheck=False)
def gather_cols(x, m, idx, out):
    """``out[:m, c] = x[:m, idx[c]]`` (Gather with constant, normalised indices on the feature axis)."""
    for i in range(m):
        for c in range(idx.size):
            out[i, c] = x[i, idx[c]]
