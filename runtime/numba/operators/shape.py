"""Data-movement ONNX operators: Shape, Reshape, Squeeze, Unsqueeze, Expand, Concat, Transpose, Range, Gather,
Slice, GatherElements, ScatterElements.

Most are NumPy indexing (views where NumPy gives one); constant Gather indices and Slice bounds are resolved
once at load. GatherElements and ScatterElements run on the kernels of
:mod:`hepzoo.runtime.numba.kernels.indexing`.
"""

from __future__ import annotations

import numpy as np

from ..ir import GraphRunError, Node, UnsupportedModelError
from ..kernels.indexing import gather_elements, scatter_elements
from .common import Builder, as_int_list, check_attrs, norm_axis, onnx_slice, registering, require

__all__ = ["BUILDERS"]

BUILDERS: dict[str, Builder] = {}
_op = registering(BUILDERS)


@_op("Shape")
def _shape(node, const, info):
    a = check_attrs(node, {"start": 0, "end": None})

    def run(x):
        return np.array(x.shape[slice(a["start"], a["end"])], dtype=np.int64)

    return run


@_op("Reshape")
def _reshape(node, const, info):
    a = check_attrs(node, {"allowzero": 0})

    def run(x, shape):
        target = [int(s) for s in shape]
        if not a["allowzero"]:
            target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
        try:
            return x.reshape(target)
        except ValueError as err:
            raise GraphRunError(f"{node.where()}: cannot reshape {x.shape} to {target}") from err

    return run


@_op("Squeeze")
def _squeeze(node, const, info):
    check_attrs(node, {})

    def run(x, axes=None):
        if axes is None:
            return x.reshape([d for d in x.shape if d != 1])
        ax = {norm_axis(int(v), x.ndim, node) for v in np.asarray(axes).reshape(-1)}
        if any(x.shape[i] != 1 for i in ax):
            raise GraphRunError(f"{node.where()}: cannot squeeze axes {sorted(ax)} of shape {x.shape}")
        return x.reshape([d for i, d in enumerate(x.shape) if i not in ax])

    return run


@_op("Unsqueeze")
def _unsqueeze(node, const, info):
    check_attrs(node, {})

    def run(x, axes):
        rank = x.ndim + int(np.asarray(axes).size)
        ax = sorted(norm_axis(int(v), rank, node) for v in np.asarray(axes).reshape(-1))
        shape = list(x.shape)
        for i in ax:
            shape.insert(i, 1)
        return x.reshape(shape)

    return run


@_op("Expand")
def _expand(node, const, info):
    check_attrs(node, {})

    def run(x, shape):
        target = np.broadcast_shapes(x.shape, tuple(int(s) for s in shape))
        return np.broadcast_to(x, target)

    return run


@_op("Concat")
def _concat(node, const, info):
    a = check_attrs(node, {"axis": None})
    require(node, a["axis"] is not None, "a missing axis attribute")

    def run(*xs):
        return np.concatenate(xs, axis=a["axis"])

    return run


@_op("Transpose")
def _transpose(node, const, info):
    a = check_attrs(node, {"perm": None})
    return lambda x: np.transpose(x, a["perm"])


@_op("Range")
def _range(node, const, info):
    check_attrs(node, {})

    def run(start, limit, delta):
        start, limit, delta = (np.asarray(v).reshape(()) for v in (start, limit, delta))
        n = max(int(np.ceil((limit - start) / delta)), 0)
        return (start + np.arange(n, dtype=start.dtype) * delta).astype(start.dtype)

    return run


@_op("Gather")
def _gather(node, const, info):
    a = check_attrs(node, {"axis": 0})
    if const[1] is not None and info[0].shape is not None:  # constant indices: normalise once
        rank = len(info[0].shape)
        axis = norm_axis(a["axis"], rank, node)
        idx = np.asarray(const[1]).astype(np.int64)
        lo, hi = (int(idx.min()), int(idx.max())) if idx.size else (0, -1)
        n = info[0].shape[axis]
        if n is not None and idx.size and (lo < -n or hi >= n):
            raise UnsupportedModelError(f"{node.where()}: a constant index is out of range [-{n}, {n})")
        if lo >= 0:
            # a scalar index: basic indexing keeps the result a view (no copy of a transposed input)
            key = (slice(None),) * axis + ((int(idx),) if idx.ndim == 0 else (idx,))  # an int index: a view, no copy

            def run_const(x, _idx):
                if x.ndim != rank or (idx.size and hi >= x.shape[axis]):
                    return run_any(x, _idx)
                return x[key]  # == np.take(x, idx, axis) for these non-negative indices

            def run_any(x, i):
                return _gather_any(node, a["axis"], x, i)

            return run_const
    return lambda x, idx: _gather_any(node, a["axis"], x, idx)


def _gather_any(node: Node, axis: int, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    axis = norm_axis(axis, x.ndim, node)
    n = x.shape[axis]
    idx = np.asarray(idx)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise GraphRunError(f"{node.where()}: an index is out of range [-{n}, {n}) along axis {axis}")
    return np.take(x, np.where(idx < 0, idx + n, idx), axis=axis)


@_op("Slice")
def _slice(node, const, info):
    check_attrs(node, {})
    params = const[1:]
    rank = len(info[0].shape) if info and info[0].shape is not None else None
    if rank is not None and all(p is not None for p in params[:2]) and all(
        i == "" or c is not None for i, c in zip(node.inputs[3:], params[2:], strict=False)
    ):  # constant starts/ends/axes/steps: resolve axes once, and the whole index where the dims are static
        starts, ends = as_int_list(params[0]), as_int_list(params[1])
        axes = as_int_list(params[2]) if len(params) > 2 and params[2] is not None else list(range(len(starts)))
        steps = as_int_list(params[3]) if len(params) > 3 and params[3] is not None else [1] * len(starts)
        axes = [norm_axis(ax, rank, node) for ax in axes]
        dims = [info[0].shape[ax] for ax in axes]
        spec = list(zip(starts, ends, axes, steps, strict=True))
        if all(d is not None for d in dims):
            key = [slice(None)] * rank
            for (st, en, ax, sp), d in zip(spec, dims, strict=True):
                key[ax] = onnx_slice(st, en, sp, d, node)
            static_key = tuple(key)
            static_dims = dims

            def run_static(x, *_):
                if x.ndim != rank or [x.shape[ax] for ax in axes] != static_dims:
                    return run_dynamic(x)
                return x[static_key]

            def run_dynamic(x):
                index = [slice(None)] * x.ndim
                for st, en, ax, sp in spec:
                    index[ax] = onnx_slice(st, en, sp, x.shape[ax], node)
                return x[tuple(index)]

            return run_static

        def run_known(x, *_):
            index = [slice(None)] * x.ndim
            for st, en, ax, sp in spec:
                index[ax] = onnx_slice(st, en, sp, x.shape[ax], node)
            return x[tuple(index)]

        return run_known

    def run(x, starts, ends, axes=None, steps=None):
        starts, ends = as_int_list(starts), as_int_list(ends)
        axes = list(range(len(starts))) if axes is None else as_int_list(axes)
        steps = [1] * len(starts) if steps is None else as_int_list(steps)
        index = [slice(None)] * x.ndim
        for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
            ax = norm_axis(ax, x.ndim, node)
            index[ax] = onnx_slice(s, e, st, x.shape[ax], node)
        return x[tuple(index)]

    return run


def _three_d(x: np.ndarray, axis: int) -> np.ndarray:
    """x as a contiguous ``[outer, x.shape[axis], inner]`` view."""
    outer = int(np.prod(x.shape[:axis]))
    return np.ascontiguousarray(x).reshape(outer, x.shape[axis], -1 if x.size else int(np.prod(x.shape[axis + 1 :])))


def _index_error(node: Node, idx: np.ndarray, bad: int, n: int) -> GraphRunError:
    value = int(np.ascontiguousarray(idx).reshape(-1)[bad])
    return GraphRunError(f"{node.where()}: index {value} is out of range [-{n}, {n})")


@_op("GatherElements")
def _gather_elements(node, const, info):
    a = check_attrs(node, {"axis": 0})

    def run(data, idx):
        axis = norm_axis(a["axis"], data.ndim, node)
        if idx.ndim != data.ndim:
            raise GraphRunError(f"{node.where()}: indices rank {idx.ndim} != data rank {data.ndim}")
        same = all(i == d for k, (i, d) in enumerate(zip(idx.shape, data.shape, strict=True)) if k != axis)
        if not same:  # indices smaller than data off the axis: gather from the matching corner of data
            if any(i > d for k, (i, d) in enumerate(zip(idx.shape, data.shape, strict=True)) if k != axis):
                raise GraphRunError(f"{node.where()}: indices shape {idx.shape} exceeds data shape {data.shape}")
            data = data[tuple(slice(None) if k == axis else slice(0, i) for k, i in enumerate(idx.shape))]
        out, bad = gather_elements(_three_d(data, axis), _three_d(idx.astype(np.int64, copy=False), axis))
        if bad >= 0:
            raise _index_error(node, idx, bad, data.shape[axis])
        return out.reshape(idx.shape)

    return run


_REDUCTIONS = {"none": 0, "add": 1, "mul": 2, "max": 3, "min": 4}


@_op("ScatterElements")
def _scatter_elements(node, const, info):
    a = check_attrs(node, {"axis": 0, "reduction": "none"})
    require(node, a["reduction"] in _REDUCTIONS, f"reduction={a['reduction']!r}")
    reduction = _REDUCTIONS[a["reduction"]]

    def run(data, idx, updates):
        axis = norm_axis(a["axis"], data.ndim, node)
        if idx.shape != updates.shape or idx.ndim != data.ndim:
            raise GraphRunError(f"{node.where()}: indices {idx.shape} / updates {updates.shape} / data {data.shape}")
        if any(i != d for k, (i, d) in enumerate(zip(idx.shape, data.shape, strict=True)) if k != axis):
            raise GraphRunError(
                f"{node.where()}: indices shape {idx.shape} must match data {data.shape} off axis {axis} in this backend"
            )
        out, bad = scatter_elements(
            _three_d(data, axis),
            _three_d(idx.astype(np.int64, copy=False), axis),
            _three_d(updates.astype(data.dtype, copy=False), axis),
            reduction,
        )
        if bad >= 0:
            raise _index_error(node, idx, bad, data.shape[axis])
        return out.reshape(data.shape)

    return run
