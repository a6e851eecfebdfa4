"""ONNX operators that reduce or normalise along an axis: ReduceSum, ArgMax, Softmax, LayerNormalization, TopK.

The axis is moved last and the tensor flattened to contiguous ``[rows, D]`` for the kernels of
:mod:`hepzoo.runtime.numba.kernels.reduce` and :mod:`hepzoo.runtime.numba.kernels.attention` (softmax).
"""

from __future__ import annotations

import numpy as np

from ..ir import FLOATS, GraphRunError, Node
from ..kernels.attention import softmax, softmax32
from ..kernels.reduce import argmax_last, layer_norm, topk
from .common import Builder, as_int_list, check_attrs, norm_axis, registering, require

__all__ = ["BUILDERS"]

BUILDERS: dict[str, Builder] = {}
_op = registering(BUILDERS)


@_op("ReduceSum")
def _reduce_sum(node, const, info):
    a = check_attrs(node, {"keepdims": 1, "noop_with_empty_axes": 0})

    def run(x, axes=None):
        ax = as_int_list(axes)
        if not ax:
            if a["noop_with_empty_axes"]:
                return x
            return np.sum(x, keepdims=bool(a["keepdims"]), dtype=x.dtype)
        ax = tuple(norm_axis(v, x.ndim, node) for v in ax)
        return np.sum(x, axis=ax, keepdims=bool(a["keepdims"]), dtype=x.dtype)

    return run


@_op("ArgMax")
def _argmax(node, const, info):
    a = check_attrs(node, {"axis": 0, "keepdims": 1, "select_last_index": 0})

    def run(x):
        axis = norm_axis(a["axis"], x.ndim, node)
        moved = np.moveaxis(x, axis, -1)
        flat = np.ascontiguousarray(moved).reshape(-1, moved.shape[-1] if moved.ndim else 1)
        if flat.shape[1] == 0:
            raise GraphRunError(f"{node.where()}: ArgMax over an empty axis")
        out = argmax_last(flat, bool(a["select_last_index"])).reshape(moved.shape[:-1])
        return np.expand_dims(out, axis) if a["keepdims"] else out

    return run


def _rows_along(x: np.ndarray, axis: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """x with ``axis`` moved last, as contiguous rows ``[R, D]``, and the moved shape."""
    moved = np.moveaxis(x, axis, -1)
    return np.ascontiguousarray(moved).reshape(-1, moved.shape[-1]), moved.shape


@_op("Softmax")
def _softmax(node, const, info):
    a = check_attrs(node, {"axis": -1})

    def run(x):
        _require_float(node, x)
        axis = norm_axis(a["axis"], x.ndim, node)
        rows, shape = _rows_along(x, axis)
        y = softmax32(rows) if x.dtype == np.float32 else softmax(rows)
        return np.moveaxis(y.reshape(shape), -1, axis)

    return run


def _require_float(node: Node, x: np.ndarray) -> None:
    if x.dtype not in FLOATS:
        raise GraphRunError(f"{node.where()}: input dtype {x.dtype} is not supported (float32/float64 only)")


@_op("LayerNormalization")
def _layer_norm(node, const, info):
    a = check_attrs(node, {"axis": -1, "epsilon": 1e-5, "stash_type": 1})
    require(node, a["stash_type"] == 1, f"stash_type={a['stash_type']}")
    n_out = len(node.outputs)

    def run(x, scale, bias=None):
        _require_float(node, x)
        axis = norm_axis(a["axis"], x.ndim, node)
        inner = x.shape[axis:]
        d = int(np.prod(inner))
        rows = np.ascontiguousarray(x).reshape(-1, d)
        gamma = np.ascontiguousarray(np.broadcast_to(scale, inner), dtype=x.dtype).reshape(d)
        beta = np.zeros(d, x.dtype) if bias is None else np.ascontiguousarray(np.broadcast_to(bias, inner), dtype=x.dtype).reshape(d)
        y, mean, inv_std = layer_norm(rows, gamma, beta, float(a["epsilon"]))
        if n_out == 1:
            return y.reshape(x.shape)
        stat_shape = x.shape[:axis] + (1,) * (x.ndim - axis)
        return y.reshape(x.shape), mean.reshape(stat_shape), inv_std.reshape(stat_shape)

    return run


@_op("TopK")
def _topk(node, const, info):
    a = check_attrs(node, {"axis": -1, "largest": 1, "sorted": 1})
    require(node, a["largest"] in (0, 1), f"largest={a['largest']}")
    # sorted=0 leaves the order unspecified: sorted output is a valid answer
    require(node, a["sorted"] in (0, 1), f"sorted={a['sorted']}")

    def run(x, k):
        axis = norm_axis(a["axis"], x.ndim, node)
        k = int(np.asarray(k).reshape(-1)[0])
        if not 0 <= k <= x.shape[axis]:
            raise GraphRunError(f"{node.where()}: k={k} is out of range for axis {axis} of size {x.shape[axis]}")
        rows, shape = _rows_along(x, axis)
        values, indices = topk(rows, k, bool(a["largest"]))
        out_shape = shape[:-1] + (k,)
        return (np.moveaxis(values.reshape(out_shape), -1, axis), np.moveaxis(indices.reshape(out_shape), -1, axis))

    return run
