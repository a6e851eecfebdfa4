"""The ``numba`` backend: runs a zoo release's exported ``model.onnx`` with no ONNX Runtime at all.

The ONNX file stays the single source of truth: this module reads its graph with the ``onnx`` package
(parsing and shape inference only) and interprets it with the Numba kernels of
:mod:`hepzoo.runtime.numba.kernels`. Planning happens once, at load, and does not depend on input shapes:

1. every node is checked against the supported operator subset (opset <= 20, default domain) and the
   attribute values this module implements; anything else fails here, with an error naming op and node;
2. nodes whose inputs are all constants (initializer-only subgraphs) are evaluated once (constant folding);
3. ``MatMul``/``Gemm`` with a constant weight absorb a following bias ``Add`` and any chain of elementwise
   operators (activation, scaling, ...) into one :func:`~hepzoo.runtime.numba.kernels.rowwise.dense` call, and other
   chains of elementwise operators on one tensor become one :func:`~hepzoo.runtime.numba.kernels.rowwise.apply_program`
   pass;
4. the remaining nodes become a flat list of steps over numbered value slots (no name lookups when running),
   each slot released after its last use.

Kernels are serial (the framework owns threading, like ONNX Runtime with one intra-op thread) and cached
on disk by Numba, so only the first process on a machine compiles them. ``run`` is thread-safe: it keeps its
values in a list local to the call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .numba.kernels.attention import attention, bmm, softmax, softmax32
from .numba.kernels.indexing import gather_elements, scatter_elements
from .numba.kernels.reduce import argmax_last, layer_norm, topk
from .numba.kernels.rowwise import NARROW, OP_CODES, apply_program, dense, dense_rows
from .backends import Backend

__all__ = ["GraphRunError", "NumbaBackend", "Plan", "UnsupportedModelError", "describe_plan", "plan_graph", "profile_steps"]

log = logging.getLogger(__name__)

MAX_OPSET = 20

# ONNX TensorProto element types this backend handles -> NumPy dtype
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32),
    2: np.dtype(np.uint8),
    3: np.dtype(np.int8),
    4: np.dtype(np.uint16),
    5: np.dtype(np.int16),
    6: np.dtype(np.int32),
    7: np.dtype(np.int64),
    9: np.dtype(np.bool_),
    10: np.dtype(np.float16),
    11: np.dtype(np.float64),
    12: np.dtype(np.uint32),
    13: np.dtype(np.uint64),
}
_FLOATS = {np.dtype(np.float32), np.dtype(np.float64)}
# operators whose output may be a view of their input (NumPy reshape/slicing/broadcast)
_VIEW_OPS = {"Identity", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Expand", "Softmax", "TopK", "ArgMax", "Gather"}


class UnsupportedModelError(ValueError):
    """The graph uses an operator, attribute value or data type that the Numba backend does not implement."""


class GraphRunError(RuntimeError):
    """A node failed on the given inputs (bad index, shape mismatch); the message names the node."""


# ---- the parsed graph ----------------------------------------------------------------------------------------


@dataclass
class _Node:
    op: str
    name: str
    inputs: list[str]  # "" for an absent optional input
    outputs: list[str]
    attrs: dict[str, Any]

    def where(self) -> str:
        return f"node {self.name!r} ({self.op})"


@dataclass
class _ValueInfo:
    """What shape inference knows about a tensor: its dtype and, per axis, an int or None (dynamic)."""

    dtype: np.dtype | None = None
    shape: tuple[int | None, ...] | None = None


@dataclass
class Plan:
    """A planned graph: what :func:`plan_graph` returns and :class:`NumbaBackend` runs."""

    inputs: list[tuple[str, int, np.dtype, tuple[int | None, ...] | None]]  # name, slot, dtype, shape
    outputs: list[tuple[str, int, bool]]  # name, slot, copy (may be a view of a constant or an input)
    template: list[Any]  # initial slot values: constants, None elsewhere
    steps: list[tuple[Callable, tuple[int, ...], tuple[int, ...], tuple[int, ...], str]]  # fn, ins, outs, frees, where
    # per step, what it computes, for the plan compiler (:mod:`hepzoo.runtime.numba_compile`):
    # ("dense", W [K, N], bias [N], op code names, consts [P, C], W was a vector) | ("program", op code names,
    # consts [P, C]) | ("node", _Node, constant inputs)
    specs: list[tuple] = field(default_factory=list)
    n_nodes: int = 0  # nodes in the ONNX graph
    n_folded: int = 0  # evaluated at load (constant folding)
    fused: dict[str, int] = field(default_factory=dict)  # what fusion did: kind -> count


def _attr_value(attr) -> Any:
    from onnx import helper

    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def _check_attrs(node: _Node, allowed: Mapping[str, Any]) -> dict[str, Any]:
    """Attribute values with defaults; an attribute this backend does not know fails the load."""
    unknown = sorted(set(node.attrs) - set(allowed))
    if unknown:
        raise UnsupportedModelError(f"{node.where()}: attribute(s) {unknown} are not supported by the numba backend")
    return {k: node.attrs.get(k, v) for k, v in allowed.items()}


def _require(node: _Node, ok: bool, what: str) -> None:
    if not ok:
        raise UnsupportedModelError(f"{node.where()}: {what} is not supported by the numba backend")


def _as_int_list(a: np.ndarray | None) -> list[int]:
    return [] if a is None else [int(v) for v in np.asarray(a).reshape(-1)]


def _norm_axis(axis: int, rank: int, node: _Node) -> int:
    if not -rank <= axis < rank:
        raise GraphRunError(f"{node.where()}: axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


# ---- operators: builder(node, constant inputs, value infos) -> fn(*inputs) -> output or tuple of outputs ------
#
# A builder checks the node's attributes (raising UnsupportedModelError) and returns the function that runs
# it. ``const[i]`` is input i's value where it is a constant at load time (else None); fn receives every input
# (absent optional inputs as None).

Builder = Callable[[_Node, list, list], Callable]
_BUILDERS: dict[str, Builder] = {}
_UNARY_CODES = {
    "Neg": "NEG",
    "Exp": "EXP",
    "Log": "LOG",
    "Tanh": "TANH",
    "Sigmoid": "SIGMOID",
    "Abs": "ABS",
    "Asinh": "ASINH",
    "Round": "ROUND",
    "Relu": "RELU",
    "Sqrt": "SQRT",
    "Erf": "ERF",
}
_UNARY_NUMPY = {
    "Neg": np.negative,
    "Abs": np.abs,
    "Exp": np.exp,
    "Log": np.log,
    "Tanh": np.tanh,
    "Asinh": np.arcsinh,
    "Round": np.rint,
    "Sqrt": np.sqrt,
}
_BINARY_CODES = {"Add": ("ADD", "ADD"), "Sub": ("SUB", "RSUB"), "Mul": ("MUL", "MUL"), "Div": ("DIV", "RDIV")}


def _op(*names: str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        for name in names:
            _BUILDERS[name] = fn
        return fn

    return register


def _program_fn(codes: list[int], consts: np.ndarray) -> Callable:
    codes_a = np.asarray(codes, dtype=np.int64)
    by_dtype = {dt: np.ascontiguousarray(consts, dtype=dt) for dt in _FLOATS}

    def run(x):
        c = by_dtype.get(x.dtype)
        if c is None:
            raise TypeError(f"elementwise program on {x.dtype}")
        if c.shape[1] > 1 and (x.ndim == 0 or x.shape[-1] != c.shape[1]):
            raise ValueError(f"last axis {x.shape[-1:]} does not match a constant of length {c.shape[1]}")
        return apply_program(np.ascontiguousarray(x), codes_a, c)

    return run


@_op(*_UNARY_CODES)
def _unary(node, const, info):
    _check_attrs(node, {})
    code = OP_CODES[_UNARY_CODES[node.op]]
    program = _program_fn([code], np.zeros((1, 1)))
    fallback = _UNARY_NUMPY.get(node.op)

    def run(x):
        if x.dtype in _FLOATS:
            return program(x)
        if fallback is None:
            raise GraphRunError(f"{node.where()}: input dtype {x.dtype} is not supported")
        return fallback(x)

    return run


@_op("Gelu")
def _gelu(node, const, info):
    a = _check_attrs(node, {"approximate": "none"})
    _require(node, a["approximate"] in ("none", "tanh"), f"approximate={a['approximate']!r}")
    return _program_fn([OP_CODES["GELU" if a["approximate"] == "none" else "GELU_TANH"]], np.zeros((1, 1)))


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX integer Div truncates toward zero (NumPy's // floors)."""
    q = np.floor_divide(a, b)
    fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return (q + fix).astype(q.dtype)


@_op("Add", "Sub", "Mul", "Div")
def _binary(node, const, info):
    _check_attrs(node, {})
    ufunc = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[node.op]

    def run(a, b):
        if node.op == "Div" and a.dtype.kind in "iu":
            return _int_div(a, b)
        out = ufunc(a, b)
        return out.astype(a.dtype, copy=False) if out.dtype != a.dtype else out

    return run


@_op("Equal")
def _equal(node, const, info):
    _check_attrs(node, {})
    return lambda a, b: np.equal(a, b)


@_op("Where")
def _where(node, const, info):
    _check_attrs(node, {})
    return lambda c, x, y: np.where(c, x, y)


@_op("Clip")
def _clip(node, const, info):
    _check_attrs(node, {})

    def run(x, lo=None, hi=None):
        out = x
        if lo is not None:
            out = np.where(out < lo, lo, out).astype(x.dtype, copy=False)
        if hi is not None:
            out = np.where(out > hi, hi, out).astype(x.dtype, copy=False)
        return out if out is not x else x.copy()

    return run


@_op("Cast")
def _cast(node, const, info):
    a = _check_attrs(node, {"to": None, "saturate": 1})
    _require(node, a["to"] in _DTYPES, f"cast to ONNX type {a['to']}")
    dtype = _DTYPES[a["to"]]
    return lambda x: x.astype(dtype)


@_op("Identity")
def _identity(node, const, info):
    _check_attrs(node, {})
    return lambda x: x


@_op("Constant")
def _constant(node, const, info):
    from onnx import numpy_helper

    _require(node, len(node.attrs) == 1, f"attributes {sorted(node.attrs)}")
    key, value = next(iter(node.attrs.items()))
    if key == "value":
        array = numpy_helper.to_array(value)
    elif key in ("value_float", "value_int"):
        array = np.array(value, dtype=np.float32 if key == "value_float" else np.int64)
    elif key in ("value_floats", "value_ints"):
        array = np.array(value, dtype=np.float32 if key == "value_floats" else np.int64)
    else:
        raise UnsupportedModelError(f"{node.where()}: attribute {key!r} is not supported by the numba backend")
    return lambda: array


@_op("Shape")
def _shape(node, const, info):
    a = _check_attrs(node, {"start": 0, "end": None})

    def run(x):
        return np.array(x.shape[slice(a["start"], a["end"])], dtype=np.int64)

    return run


@_op("Reshape")
def _reshape(node, const, info):
    a = _check_attrs(node, {"allowzero": 0})

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
    _check_attrs(node, {})

    def run(x, axes=None):
        if axes is None:
            return x.reshape([d for d in x.shape if d != 1])
        ax = {_norm_axis(int(v), x.ndim, node) for v in np.asarray(axes).reshape(-1)}
        if any(x.shape[i] != 1 for i in ax):
            raise GraphRunError(f"{node.where()}: cannot squeeze axes {sorted(ax)} of shape {x.shape}")
        return x.reshape([d for i, d in enumerate(x.shape) if i not in ax])

    return run


@_op("Unsqueeze")
def _unsqueeze(node, const, info):
    _check_attrs(node, {})

    def run(x, axes):
        rank = x.ndim + int(np.asarray(axes).size)
        ax = sorted(_norm_axis(int(v), rank, node) for v in np.asarray(axes).reshape(-1))
        shape = list(x.shape)
        for i in ax:
            shape.insert(i, 1)
        return x.reshape(shape)

    return run


@_op("Expand")
def _expand(node, const, info):
    _check_attrs(node, {})

    def run(x, shape):
        target = np.broadcast_shapes(x.shape, tuple(int(s) for s in shape))
        return np.broadcast_to(x, target)

    return run


@_op("Concat")
def _concat(node, const, info):
    a = _check_attrs(node, {"axis": None})
    _require(node, a["axis"] is not None, "a missing axis attribute")

    def run(*xs):
        return np.concatenate(xs, axis=a["axis"])

    return run


@_op("Transpose")
def _transpose(node, const, info):
    a = _check_attrs(node, {"perm": None})
    return lambda x: np.transpose(x, a["perm"])


@_op("Range")
def _range(node, const, info):
    _check_attrs(node, {})

    def run(start, limit, delta):
        start, limit, delta = (np.asarray(v).reshape(()) for v in (start, limit, delta))
        n = max(int(np.ceil((limit - start) / delta)), 0)
        return (start + np.arange(n, dtype=start.dtype) * delta).astype(start.dtype)

    return run


@_op("Gather")
def _gather(node, const, info):
    a = _check_attrs(node, {"axis": 0})
    if const[1] is not None and info[0].shape is not None:  # constant indices: normalise once
        rank = len(info[0].shape)
        axis = _norm_axis(a["axis"], rank, node)
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


def _gather_any(node: _Node, axis: int, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    axis = _norm_axis(axis, x.ndim, node)
    n = x.shape[axis]
    idx = np.asarray(idx)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise GraphRunError(f"{node.where()}: an index is out of range [-{n}, {n}) along axis {axis}")
    return np.take(x, np.where(idx < 0, idx + n, idx), axis=axis)


@_op("Slice")
def _slice(node, const, info):
    _check_attrs(node, {})
    params = const[1:]
    rank = len(info[0].shape) if info and info[0].shape is not None else None
    if rank is not None and all(p is not None for p in params[:2]) and all(
        i == "" or c is not None for i, c in zip(node.inputs[3:], params[2:], strict=False)
    ):  # constant starts/ends/axes/steps: resolve axes once, and the whole index where the dims are static
        starts, ends = _as_int_list(params[0]), _as_int_list(params[1])
        axes = _as_int_list(params[2]) if len(params) > 2 and params[2] is not None else list(range(len(starts)))
        steps = _as_int_list(params[3]) if len(params) > 3 and params[3] is not None else [1] * len(starts)
        axes = [_norm_axis(ax, rank, node) for ax in axes]
        dims = [info[0].shape[ax] for ax in axes]
        spec = list(zip(starts, ends, axes, steps, strict=True))
        if all(d is not None for d in dims):
            key = [slice(None)] * rank
            for (st, en, ax, sp), d in zip(spec, dims, strict=True):
                key[ax] = _onnx_slice(st, en, sp, d, node)
            static_key = tuple(key)
            static_dims = dims

            def run_static(x, *_):
                if x.ndim != rank or [x.shape[ax] for ax in axes] != static_dims:
                    return run_dynamic(x)
                return x[static_key]

            def run_dynamic(x):
                index = [slice(None)] * x.ndim
                for st, en, ax, sp in spec:
                    index[ax] = _onnx_slice(st, en, sp, x.shape[ax], node)
                return x[tuple(index)]

            return run_static

        def run_known(x, *_):
            index = [slice(None)] * x.ndim
            for st, en, ax, sp in spec:
                index[ax] = _onnx_slice(st, en, sp, x.shape[ax], node)
            return x[tuple(index)]

        return run_known

    def run(x, starts, ends, axes=None, steps=None):
        starts, ends = _as_int_list(starts), _as_int_list(ends)
        axes = list(range(len(starts))) if axes is None else _as_int_list(axes)
        steps = [1] * len(starts) if steps is None else _as_int_list(steps)
        index = [slice(None)] * x.ndim
        for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
            ax = _norm_axis(ax, x.ndim, node)
            index[ax] = _onnx_slice(s, e, st, x.shape[ax], node)
        return x[tuple(index)]

    return run


def _onnx_slice(start: int, end: int, step: int, dim: int, node: _Node) -> slice:
    """ONNX Slice bounds (negative values count from the end, then clamped) as a Python slice."""
    if step == 0:
        raise GraphRunError(f"{node.where()}: slice step 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    return slice(start, None if end < 0 else end, step)


@_op("ReduceSum")
def _reduce_sum(node, const, info):
    a = _check_attrs(node, {"keepdims": 1, "noop_with_empty_axes": 0})

    def run(x, axes=None):
        ax = _as_int_list(axes)
        if not ax:
            if a["noop_with_empty_axes"]:
                return x
            return np.sum(x, keepdims=bool(a["keepdims"]), dtype=x.dtype)
        ax = tuple(_norm_axis(v, x.ndim, node) for v in ax)
        return np.sum(x, axis=ax, keepdims=bool(a["keepdims"]), dtype=x.dtype)

    return run


@_op("ArgMax")
def _argmax(node, const, info):
    a = _check_attrs(node, {"axis": 0, "keepdims": 1, "select_last_index": 0})

    def run(x):
        axis = _norm_axis(a["axis"], x.ndim, node)
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
    a = _check_attrs(node, {"axis": -1})

    def run(x):
        _require_float(node, x)
        axis = _norm_axis(a["axis"], x.ndim, node)
        rows, shape = _rows_along(x, axis)
        y = softmax32(rows) if x.dtype == np.float32 else softmax(rows)
        return np.moveaxis(y.reshape(shape), -1, axis)

    return run


def _require_float(node: _Node, x: np.ndarray) -> None:
    if x.dtype not in _FLOATS:
        raise GraphRunError(f"{node.where()}: input dtype {x.dtype} is not supported (float32/float64 only)")


@_op("LayerNormalization")
def _layer_norm(node, const, info):
    a = _check_attrs(node, {"axis": -1, "epsilon": 1e-5, "stash_type": 1})
    _require(node, a["stash_type"] == 1, f"stash_type={a['stash_type']}")
    n_out = len(node.outputs)

    def run(x, scale, bias=None):
        _require_float(node, x)
        axis = _norm_axis(a["axis"], x.ndim, node)
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
    a = _check_attrs(node, {"axis": -1, "largest": 1, "sorted": 1})
    _require(node, a["largest"] in (0, 1), f"largest={a['largest']}")
    # sorted=0 leaves the order unspecified: sorted output is a valid answer
    _require(node, a["sorted"] in (0, 1), f"sorted={a['sorted']}")

    def run(x, k):
        axis = _norm_axis(a["axis"], x.ndim, node)
        k = int(np.asarray(k).reshape(-1)[0])
        if not 0 <= k <= x.shape[axis]:
            raise GraphRunError(f"{node.where()}: k={k} is out of range for axis {axis} of size {x.shape[axis]}")
        rows, shape = _rows_along(x, axis)
        values, indices = topk(rows, k, bool(a["largest"]))
        out_shape = shape[:-1] + (k,)
        return (np.moveaxis(values.reshape(out_shape), -1, axis), np.moveaxis(indices.reshape(out_shape), -1, axis))

    return run


def _three_d(x: np.ndarray, axis: int) -> np.ndarray:
    """x as a contiguous ``[outer, x.shape[axis], inner]`` view."""
    outer = int(np.prod(x.shape[:axis]))
    return np.ascontiguousarray(x).reshape(outer, x.shape[axis], -1 if x.size else int(np.prod(x.shape[axis + 1 :])))


def _index_error(node: _Node, idx: np.ndarray, bad: int, n: int) -> GraphRunError:
    value = int(np.ascontiguousarray(idx).reshape(-1)[bad])
    return GraphRunError(f"{node.where()}: index {value} is out of range [-{n}, {n})")


@_op("GatherElements")
def _gather_elements(node, const, info):
    a = _check_attrs(node, {"axis": 0})

    def run(data, idx):
        axis = _norm_axis(a["axis"], data.ndim, node)
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
    a = _check_attrs(node, {"axis": 0, "reduction": "none"})
    _require(node, a["reduction"] in _REDUCTIONS, f"reduction={a['reduction']!r}")
    reduction = _REDUCTIONS[a["reduction"]]

    def run(data, idx, updates):
        axis = _norm_axis(a["axis"], data.ndim, node)
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


def _matmul_any(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.matmul`` semantics (1-D promotion, batch broadcasting) on the :func:`~hepzoo.runtime.numba.kernels.attention.bmm` kernel."""
    if a.dtype not in _FLOATS or b.dtype != a.dtype:
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
    _check_attrs(node, {})
    return _matmul_any


@_op("Gemm")
def _gemm(node, const, info):
    a = _check_attrs(node, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})

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


# ---- fused steps -------------------------------------------------------------------------------------------------


def _dense_fn(w: np.ndarray, bias: np.ndarray, codes: list[int], consts: np.ndarray, w_vector: bool) -> Callable:
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


def _wrap(fn: Callable, where: str) -> Callable:
    """Give kernel failures (shape mismatches, bad dtypes) the name of the node at fault."""

    def run(*args):
        try:
            return fn(*args)
        except GraphRunError:
            raise
        except (ValueError, TypeError, IndexError) as err:
            raise GraphRunError(f"{where}: {err}") from err

    return run


# ---- planning ------------------------------------------------------------------------------------------------


def _load_model(onnx_path: Path):
    import onnx

    model = onnx.load(str(onnx_path))
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > MAX_OPSET:
            raise UnsupportedModelError(f"{onnx_path}: opset {opset.version} > {MAX_OPSET} is not supported by the numba backend")
        if opset.domain not in ("", "ai.onnx"):
            used = any(n.domain == opset.domain for n in model.graph.node)
            if used:
                raise UnsupportedModelError(f"{onnx_path}: operator domain {opset.domain!r} is not supported by the numba backend")
    if model.functions:
        names = [f.name for f in model.functions]
        raise UnsupportedModelError(f"{onnx_path}: model-local functions {names} are not supported (inline them first)")
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as err:  # noqa: BLE001 - shape inference is only a planning aid
        log.warning("%s: ONNX shape inference failed (%s); planning without it", onnx_path, err)
    return model


def _value_infos(graph) -> dict[str, _ValueInfo]:
    infos: dict[str, _ValueInfo] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        t = vi.type.tensor_type
        if not t.elem_type:
            continue
        shape = None
        if t.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        infos[vi.name] = _ValueInfo(_DTYPES.get(t.elem_type), shape)
    return infos


def _program_step(node: _Node, const: list, x_info: _ValueInfo) -> tuple[str, np.ndarray] | None:
    """(op code, constant row) if ``node`` is an elementwise step on one float tensor, else None."""
    if x_info.dtype not in _FLOATS:
        return None
    if node.op in _UNARY_CODES and not node.attrs:
        return _UNARY_CODES[node.op], np.zeros(1)
    if node.op == "Gelu":
        approx = node.attrs.get("approximate", "none")
        return ("GELU" if approx == "none" else "GELU_TANH"), np.zeros(1)
    if node.op in _BINARY_CODES and len(node.inputs) == 2 and not node.attrs:
        dyn = [i for i, c in enumerate(const) if c is None]
        if len(dyn) != 1:
            return None
        c = const[1 - dyn[0]]
        row = _const_row(c, x_info)
        if row is None:
            return None
        return _BINARY_CODES[node.op][dyn[0]], row
    if node.op == "Clip" and const[0] is None and len(node.inputs) == 2 and const[1] is not None and const[1].size == 1:
        return "MAX", np.asarray(const[1]).reshape(1)
    return None


def _const_row(c: np.ndarray, x_info: _ValueInfo) -> np.ndarray | None:
    """A constant that broadcasts along the last axis of x only (a scalar or ``[C]``), as a row, else None."""
    if c.dtype not in _FLOATS or x_info.shape is None or c.ndim > len(x_info.shape):
        return None
    if c.size == 1:
        return c.reshape(1)
    if any(d != 1 for d in c.shape[:-1]) or x_info.shape[-1] != c.shape[-1]:
        return None
    return c.reshape(-1)


def _rows_to_consts(rows: list[np.ndarray]) -> np.ndarray:
    width = max([r.size for r in rows] + [1])
    return np.stack([np.broadcast_to(r, (width,)) for r in rows]).astype(np.float64)


def plan_graph(onnx_path: str | Path) -> Plan:
    """Check, constant-fold and fuse the graph of ``onnx_path`` into a :class:`Plan` (see module docstring)."""
    from onnx import numpy_helper

    onnx_path = Path(onnx_path)
    model = _load_model(onnx_path)
    graph = model.graph
    infos = _value_infos(graph)
    consts: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype not in set(_DTYPES.values()):
            raise UnsupportedModelError(f"{onnx_path}: initializer {init.name!r} has unsupported dtype {array.dtype}")
        consts[init.name] = array
    nodes = [
        _Node(n.op_type, n.name or f"#{i}", list(n.input), list(n.output), {a.name: _attr_value(a) for a in n.attribute})
        for i, n in enumerate(graph.node)
    ]
    graph_inputs = [vi for vi in graph.input if vi.name not in consts]
    output_names = [o.name for o in graph.output]

    # 1. every node must be supported, with the attribute values it carries
    fns: list[Callable] = []
    for node in nodes:
        builder = _BUILDERS.get(node.op)
        if builder is None:
            raise UnsupportedModelError(
                f"{onnx_path}: {node.where()}: operator {node.op!r} is not supported by the numba backend "
                f"(supported: {sorted(_BUILDERS)})"
            )
        const = [consts.get(i) for i in node.inputs]
        try:
            fns.append(builder(node, const, [infos.get(i, _ValueInfo()) for i in node.inputs]))
        except UnsupportedModelError as err:
            raise UnsupportedModelError(f"{onnx_path}: {err}") from None

    # 2. constant folding: nodes whose inputs are all constants (or absent)
    live: list[tuple[_Node, Callable]] = []
    n_folded = 0
    for node, fn in zip(nodes, fns, strict=True):
        if all(i == "" or i in consts for i in node.inputs) and not any(o in output_names for o in node.outputs):
            result = fn(*[consts[i] if i else None for i in node.inputs])
            results = result if isinstance(result, tuple) else (result,)
            for name, value in zip(node.outputs, results, strict=False):
                if name:
                    consts[name] = np.ascontiguousarray(value)
            n_folded += 1
        else:
            live.append((node, fn))

    # 3. fusion: MatMul/Gemm(x, constant W) [+ bias] [+ elementwise chain]; other elementwise chains
    consumers: dict[str, int] = {}
    for node, _ in live:
        for i in node.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    for name in output_names:
        consumers[name] = consumers.get(name, 0) + 1

    def sole_next(pos: int, value: str) -> int | None:
        """Index in ``live`` of the only consumer of ``value`` if it is the next node, else None."""
        if consumers.get(value, 0) != 1 or pos + 1 >= len(live):
            return None
        nxt = live[pos + 1][0]
        return pos + 1 if value in nxt.inputs else None

    def chain_from(pos: int, value: str, x_info: _ValueInfo) -> tuple[list[str], list[np.ndarray], int, str]:
        """Extend an elementwise chain on ``value`` over the following single-consumer nodes."""
        codes, rows = [], []
        while True:
            j = sole_next(pos, value)
            if j is None:
                break
            node = live[j][0]
            if len(node.outputs) != 1:
                break
            const = [consts.get(i) for i in node.inputs]
            dyn = [i for i, c in zip(node.inputs, const, strict=True) if c is None and i]
            if dyn != [value]:
                break
            step = _program_step(node, const, x_info)
            if step is None:
                break
            codes.append(step[0])
            rows.append(step[1])
            pos, value = j, node.outputs[0]
        return codes, rows, pos, value

    steps_src: list[tuple[Callable, list[str], list[str], str, tuple]] = []
    fused: dict[str, int] = {}
    pos = 0
    while pos < len(live):
        node, fn = live[pos]
        attn = _attention_candidate(live, pos, consts, infos, sole_next)
        if attn is not None:
            last, ins = attn
            group = [live[i] for i in range(pos, last + 1)]
            names = " + ".join(n.name for n, _ in group)
            where = f"fused {names} (attention)"
            steps_src.append((_attention_fn(group, where), ins, [group[-1][0].outputs[0]], where, ("attention", names)))
            fused["attention"] = fused.get("attention", 0) + 1
            fused["nodes_into_attention"] = fused.get("nodes_into_attention", 0) + len(group)
            pos = last + 1
            continue
        dense = _dense_candidate(node, consts)
        if dense is not None:
            x_name, w, bias, w_vector = dense
            out_info = infos.get(node.outputs[0], _ValueInfo(w.dtype, None))
            out_info = _ValueInfo(w.dtype, out_info.shape)
            last, value = pos, node.outputs[0]
            codes, rows = [], []
            j = sole_next(pos, value)
            if j is not None and not w_vector:  # bias Add folded into the kernel's accumulator start
                nxt = live[j][0]
                bias_in = [i for i in nxt.inputs if i != value]
                if nxt.op == "Add" and len(bias_in) == 1 and bias_in[0] in consts and nxt.inputs.count(value) == 1:
                    b = consts[bias_in[0]]
                    if b.dtype == w.dtype and b.ndim <= 1 and b.size in (1, w.shape[1]):
                        bias = bias + np.broadcast_to(b, bias.shape).astype(w.dtype)
                        last, value = j, nxt.outputs[0]
            if not w_vector:
                codes, rows, last, value = chain_from(last, value, out_info)
            names = " + ".join(live[i][0].name for i in range(pos, last + 1))
            where = f"fused {names} (MatMul+bias+{len(codes)} elementwise)"
            consts_a = _rows_to_consts(rows) if rows else np.zeros((0, 1))
            prog_codes = [OP_CODES[c] for c in codes]
            spec = ("dense", w, bias, list(codes), consts_a, w_vector)
            steps_src.append((_dense_fn(w, bias, prog_codes, consts_a, w_vector), [x_name], [value], where, spec))
            fused["dense"] = fused.get("dense", 0) + 1
            fused["nodes_into_dense"] = fused.get("nodes_into_dense", 0) + (last - pos + 1)
            pos = last + 1
            continue
        if len(node.outputs) == 1:
            const = [consts.get(i) for i in node.inputs]
            dyn = [i for i, c in zip(node.inputs, const, strict=True) if c is None and i]
            x_info = infos.get(dyn[0], _ValueInfo()) if len(dyn) == 1 else _ValueInfo()
            first = _program_step(node, const, x_info) if len(dyn) == 1 else None
            if first is not None:
                codes, rows, last, value = chain_from(pos, node.outputs[0], x_info)
                codes, rows = [first[0], *codes], [first[1], *rows]
                if last > pos:
                    fused["elementwise_chains"] = fused.get("elementwise_chains", 0) + 1
                    fused["nodes_into_chains"] = fused.get("nodes_into_chains", 0) + (last - pos + 1)
                names = " + ".join(live[i][0].name for i in range(pos, last + 1))
                consts_a = _rows_to_consts(rows)
                fn = _program_fn([OP_CODES[c] for c in codes], consts_a)
                steps_src.append((fn, [dyn[0]], [value], f"elementwise {names}", ("program", list(codes), consts_a)))
                pos = last + 1
                continue
        steps_src.append((fn, node.inputs, node.outputs, node.where(), ("node", node, [consts.get(i) for i in node.inputs])))
        pos += 1

    # 4. slots, liveness
    slot_of: dict[str, int] = {"": 0}
    template: list[Any] = [None]

    def slot(name: str) -> int:
        if name not in slot_of:
            slot_of[name] = len(template)
            template.append(consts.get(name))
        return slot_of[name]

    inputs = []
    for vi in graph_inputs:
        info = infos.get(vi.name, _ValueInfo())
        if info.dtype is None:
            raise UnsupportedModelError(f"{onnx_path}: graph input {vi.name!r} has an unsupported element type")
        inputs.append((vi.name, slot(vi.name), info.dtype, info.shape))
    for name in output_names:
        if name not in consts and not any(name in s[2] for s in steps_src) and name not in [i[0] for i in inputs]:
            raise UnsupportedModelError(f"{onnx_path}: graph output {name!r} is produced by no node")
    last_use: dict[str, int] = {}
    for k, (_, ins, _, _, _) in enumerate(steps_src):
        for name in ins:
            if name and name not in consts:
                last_use[name] = k
    keep = set(output_names)
    steps = []
    for k, (fn, ins, outs, where, _) in enumerate(steps_src):
        frees = tuple(slot(n) for n in dict.fromkeys(ins) if n and last_use.get(n) == k and n not in keep)
        steps.append((_wrap(fn, f"{onnx_path.name}: {where}"), tuple(slot(i) for i in ins), tuple(slot(o) if o else 0 for o in outs), frees, where))
    # outputs must be fresh arrays the caller owns: copy those that may be a view of a constant or an input
    producer = {o: ins for _, ins, outs, _, _ in steps_src for o in outs}
    view_ops = {n.outputs[0] for n in nodes if n.op in _VIEW_OPS}
    input_names = {i[0] for i in inputs}
    outputs = [
        (name, slot(name), name in consts or name in input_names or name in view_ops or name not in producer)
        for name in output_names
    ]
    return Plan(inputs, outputs, template, steps, [s[4] for s in steps_src], len(nodes), n_folded, fused)


def _attention_candidate(live: list, pos: int, consts: dict, infos: dict, sole_next: Callable) -> tuple[int, list[str]] | None:
    """``MatMul(q, kt) [+ Add(., mask)] -> Softmax(last axis) -> MatMul(., v)`` starting at ``live[pos]``, each
    intermediate used only by the next node: (index of the last node, inputs [q, kt, mask or "", v]), else None."""
    node = live[pos][0]
    if node.op != "MatMul" or any(i in consts for i in node.inputs) or len(node.outputs) != 1:
        return None
    value = node.outputs[0]
    mask = ""
    j = sole_next(pos, value)
    if j is not None and live[j][0].op == "Add" and live[j][0].inputs.count(value) == 1:
        mask = next(i for i in live[j][0].inputs if i != value)
        value = live[j][0].outputs[0]
    else:
        j = pos
    j = sole_next(j, value)
    if j is None or live[j][0].op != "Softmax":
        return None
    axis = live[j][0].attrs.get("axis", -1)
    rank = len(infos[value].shape) if value in infos and infos[value].shape is not None else None
    if not (axis == -1 or (rank is not None and axis == rank - 1)):
        return None
    value = live[j][0].outputs[0]
    j = sole_next(j, value)
    if j is None or live[j][0].op != "MatMul" or live[j][0].inputs[0] != value or live[j][0].inputs[1] == value:
        return None
    return j, [node.inputs[0], node.inputs[1], mask, live[j][0].inputs[1]]


def _attention_fn(group: list[tuple[_Node, Callable]], where: str) -> Callable:
    """Run the fused attention group on :func:`~hepzoo.runtime.numba.kernels.attention.attention` when the operands are float32 with at
    least two axes and the mask broadcasts along the query axis (or is absent); otherwise run the group's
    nodes one after another (the unfused path)."""
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


def _dense_candidate(node: _Node, consts: dict[str, np.ndarray]) -> tuple[str, np.ndarray, np.ndarray, bool] | None:
    """(x name, W [K, N], bias [N], W was a vector) for MatMul/Gemm with a constant 1-/2-D weight, else None."""
    if node.op == "MatMul":
        x, w = node.inputs
        if x in consts or w not in consts:
            return None
        wt = consts[w]
        if wt.dtype not in _FLOATS or wt.ndim not in (1, 2):
            return None
        vector = wt.ndim == 1
        w2 = np.ascontiguousarray(wt.reshape(-1, 1) if vector else wt)
        return x, w2, np.zeros(w2.shape[1], w2.dtype), vector
    if node.op == "Gemm":
        a = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0} | node.attrs
        x, w = node.inputs[:2]
        c = node.inputs[2] if len(node.inputs) > 2 else ""
        if a["transA"] or x in consts or w not in consts or (c and c not in consts):
            return None
        wt = consts[w]
        if wt.dtype not in _FLOATS or wt.ndim != 2:
            return None
        w2 = np.ascontiguousarray(wt.T if a["transB"] else wt)
        if a["alpha"] != 1.0:
            w2 = (w2 * a["alpha"]).astype(wt.dtype)
        bias = np.zeros(w2.shape[1], wt.dtype)
        if c:
            cv = consts[c]
            if cv.ndim > 2 or (cv.ndim == 2 and cv.shape[0] != 1) or cv.size not in (1, w2.shape[1]):
                return None
            bias = (np.broadcast_to(cv.reshape(-1), bias.shape) * a["beta"]).astype(wt.dtype)
        return x, w2, np.ascontiguousarray(bias), False
    return None


# ---- the backend -------------------------------------------------------------------------------------------------


class NumbaBackend(Backend):
    """Interprets ``model.onnx`` with Numba kernels; no ONNX Runtime needed (see the module docstring).

    ``intra_op_threads``: the kernels are serial and run on the calling thread, so only 1 is meaningful; a
    larger value is accepted (the Session API passes it to every backend) and ignored.
    ``compile``: run graphs made only of row-wise steps (the flash-sim models) as one generated function
    (:mod:`hepzoo.runtime.numba_compile`); False keeps the step interpreter (the reference for that path).
    """

    name = "numba"

    def __init__(self, onnx_path: str | Path, intra_op_threads: int = 1, compile: bool = True):
        if intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
        self.onnx_path = Path(onnx_path)
        self.intra_op_threads = int(intra_op_threads)
        self.plan = plan_graph(self.onnx_path)
        p = self.plan
        self._inputs = [name for name, *_ in p.inputs]
        self._outputs = [name for name, *_ in p.outputs]
        self._input_specs = p.inputs
        self._template = p.template
        self._steps = [(fn, ins, outs[0] if len(outs) == 1 else None, outs, frees) for fn, ins, outs, frees, _ in p.steps]
        self._output_slots = p.outputs
        self.compiled = None
        if compile:
            from .numba_compile import compile_plan

            self.compiled = compile_plan(p, self.onnx_path)

    def _check_input(self, name: str, value: Any, dtype: np.dtype, shape) -> np.ndarray:
        x = np.asarray(value)
        if x.dtype != dtype:
            raise ValueError(f"{self.onnx_path}: input {name!r} must be {dtype}, got {x.dtype}")
        if shape is not None:
            if x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape, strict=True)):
                want = [s if s is not None else "?" for s in shape]
                raise ValueError(f"{self.onnx_path}: input {name!r} must have shape {want}, got {list(x.shape)}")
        return x

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self._inputs if n not in inputs]
        if missing:
            raise ValueError(f"{self.onnx_path}: missing graph inputs {missing} (graph takes {self._inputs})")
        if self.compiled is not None:
            return self.compiled.run(
                {name: self._check_input(name, inputs[name], dtype, shape) for name, _, dtype, shape in self._input_specs}
            )
        vals = list(self._template)
        for name, s, dtype, shape in self._input_specs:
            vals[s] = self._check_input(name, inputs[name], dtype, shape)
        for fn, ins, out, outs, frees in self._steps:
            if out is not None:
                vals[out] = fn(*[vals[i] for i in ins])
            else:
                for s, v in zip(outs, fn(*[vals[i] for i in ins]), strict=False):
                    vals[s] = v
            for s in frees:
                vals[s] = None
        result = {}
        for name, s, copy in self._output_slots:
            v = vals[s]
            result[name] = np.array(v, copy=True, order="C") if copy or not v.flags.c_contiguous else v
        return result


def profile_steps(backend: NumbaBackend, inputs: Mapping[str, np.ndarray], repeat: int = 10) -> list[tuple[str, float]]:
    """Seconds per step (best of ``repeat`` runs), slowest first: where the time goes in a plan."""
    import time

    best: dict[int, float] = {}
    for _ in range(repeat):
        vals = list(backend._template)
        for name, s, dtype, shape in backend._input_specs:
            vals[s] = backend._check_input(name, inputs[name], dtype, shape)
        for k, (fn, ins, out, outs, _) in enumerate(backend._steps):
            t0 = time.perf_counter()
            result = fn(*[vals[i] for i in ins])
            dt = time.perf_counter() - t0
            best[k] = min(best.get(k, dt), dt)
            if out is not None:
                vals[out] = result
            else:
                for s, v in zip(outs, result, strict=False):
                    vals[s] = v
    wheres = [w for *_, w in backend.plan.steps]
    return sorted(((wheres[k], t) for k, t in best.items()), key=lambda kv: -kv[1])


def run_graph(onnx_path: str | Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One-shot convenience: plan ``onnx_path`` and run it on ``inputs``."""
    return NumbaBackend(onnx_path).run(inputs)


def describe_plan(plan: Plan) -> str:
    """One line on what planning did (for logs and ``hepzoo bench``)."""
    return (
        f"{plan.n_nodes} nodes -> {len(plan.steps)} steps ({plan.n_folded} folded; "
        + ", ".join(f"{k} {v}" for k, v in sorted(plan.fused.items()))
        + ")"
    )

