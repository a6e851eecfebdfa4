"""Matrix products: the MatMul and Gemm operators, and the functions of the planner's fused steps built on
them (:func:`dense_fn`: constant weight + bias + elementwise program; :func:`attention_fn`: MatMul [+ mask] +
Softmax + MatMul).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..ir import FLOATS, Node
from ..kernels.attention import attention, bmm
from ..kernels.rowwise import NARROW, dense, dense_rows
from .common import Builder, check_attrs, registering

__all__ = ["BUILDERS", "attention_fn", "dense_fn"]

BUILDERS: dict[str, Builder] = {}
_op = registering(BUILDERS)


def _matmul_any(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.matmul`` semantics (1-D promotion, batch broadcasting) on the
    :func:`~hepzoo.runtime.numba.kernels.attention.bmm` kernel."""
    if a.dtype not in FLOATS or b.dtype != a.dtype:
        return np.matmul(a, b)
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    m, k = a2.shape[-2:]
    n = b2.shape[-1]
    if b2.shape[-2] != k:
        raise ValueError(f"matmul shapes {a.shape} and {b.shape} do not match")
    a3 = np.ascontiguousarray(np.broadcast_to(a2, batch + (m, k))).reshape(-1, m, k)
    b3 = np.ascontiguousarray(np.broadcast_to(b2, batch + (k, n))).reshape(-1, k, n)
    out = bmm(a3, b3).reshape(batch + (m, n))
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out


@_op("MatMul")
def _matmul(node, const, info):
    check_attrs(node, {})
    return _matmul_any


@_op("Gemm")
def _gemm(node, const, info):
    a = check_attrs(node, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})

    def run(x, w, c=None):
        x = x.T if a["transA"] else x
        w = w.T if a["transB"] else w
        y = _matmul_any(x, w)
        if a["alpha"] != 1.0:
            y = (y * np.asarray(a["alpha"], y.dtype)).astype(y.dtype)
        if c is not None:
            y = (y + np.asarray(a["beta"], y.dtype) * c).astype(y.dtype)
        return y

    return run


# ---- functions of fused steps (formed by the planner) -------------------------------------------------------------


def dense_fn(w: np.ndarray, bias: np.ndarray, codes: list[int], consts: np.ndarray, w_vector: bool) -> Callable:
    """``program(x @ w + bias)`` over the last axis of x of any rank (w ``[K, N]``)."""
    kdim, n = w.shape
    codes_a = np.asarray(codes, dtype=np.int64)
    dt = w.dtype
    consts = np.ascontiguousarray(consts.astype(dt))
    # float32: the compiled plans' blocked kernels and float32 activations; float64 keeps float64 activations
    narrow = n < NARROW
    wt = np.ascontiguousarray(w.T)

    def run(x):
        if x.shape[-1] != kdim or x.dtype != dt:
            raise ValueError(f"input {x.dtype}{list(x.shape)} does not match the weight {dt}[{kdim}, {n}]")
        rows = np.ascontiguousarray(x).reshape(-1, kdim)
        if dt == np.float32:
            out = dense_rows(rows, w, wt, bias, codes_a, consts, narrow)
        else:
            out = dense(rows, w, bias, codes_a, consts)
        return out.reshape(x.shape[:-1]) if w_vector else out.reshape(x.shape[:-1] + (n,))

    return run


def attention_fn(group: list[tuple[Node, Callable]], where: str) -> Callable:
    """Run the fused attention group on :func:`~hepzoo.runtime.numba.kernels.attention.attention` when the
    operands are float32 with at least two axes and the mask broadcasts along the query axis (or is absent);
    otherwise run the group's nodes one after another (the unfused path)."""
    has_mask = group[1][0].op == "Add"

    def unfused(q, kt, mask, v):
        y = group[0][1](q, kt)
        if has_mask:
            y = group[1][1](y, mask) if group[1][0].inputs[0] == group[0][0].outputs[0] else group[1][1](mask, y)
        return group[-1][1](group[-2][1](y), v)

    def run(q, kt, mask, v):
        ok = all(t.dtype == np.float32 and t.ndim >= 2 for t in (q, kt, v)) and q.shape[-1] == kt.shape[-2]
        ok = ok and v.shape[-2] == kt.shape[-1] and (mask is None or (mask.dtype == np.float32 and mask.ndim >= 1))
        if not ok:
            return unfused(q, kt, mask, v)
        m, n = q.shape[-2], kt.shape[-1]
        mshape = (1, 1) if mask is None else (mask.shape[-2] if mask.ndim >= 2 else 1, mask.shape[-1])
        if mshape[0] not in (1, m) or mshape[1] not in (1, n):
            return unfused(q, kt, mask, v)
        try:
            batch = np.broadcast_shapes(q.shape[:-2], kt.shape[:-2], v.shape[:-2], () if mask is None else mask.shape[:-2])
        except ValueError:
            return unfused(q, kt, mask, v)
        if mask is not None and batch != np.broadcast_shapes(q.shape[:-2], kt.shape[:-2], v.shape[:-2]):
            return unfused(q, kt, mask, v)  # the mask widens the batch: keep NumPy's broadcasting
        q3 = np.ascontiguousarray(np.broadcast_to(q, batch + q.shape[-2:])).reshape(-1, m, q.shape[-1])
        kt3 = np.ascontiguousarray(np.broadcast_to(kt, batch + kt.shape[-2:])).reshape(-1, kt.shape[-2], n)
        vt3 = np.ascontiguousarray(np.swapaxes(np.broadcast_to(v, batch + v.shape[-2:]), -1, -2)).reshape(-1, v.shape[-1], n)
        if mask is None:
            mask3 = np.zeros((1, 1, n), np.float32)
        else:
            mm = mask if mask.ndim >= 2 else mask.reshape(1, -1)
            if any(d != 1 for d in mm.shape[:-2]):  # one mask per batch entry
                mm = np.broadcast_to(mm, batch + (mshape[0], n))
            else:
                mm = np.broadcast_to(mm.reshape(mm.shape[-2:]), (mshape[0], n))
            mask3 = np.ascontiguousarray(mm).reshape(-1, mshape[0], n)
        return attention(q3, kt3, mask3, vt3).reshape(batch + (m, v.shape[-1]))

    return run
