"""What the executor reads from ``model.onnx``: the graph's nodes, value infos and constants, and their types.

:func:`load_model` parses the file with the ``onnx`` package (opset and operator-domain checks, shape inference
as a planning aid); :func:`read_nodes`, :func:`read_constants` and :func:`value_infos` turn the protobuf graph
into the plain Python values the operators and the planner work on (:class:`Node`, NumPy constants,
:class:`ValueInfo`). The two errors of the executor live here too, since every later layer raises them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DTYPES",
    "FLOATS",
    "MAX_OPSET",
    "GraphRunError",
    "Node",
    "UnsupportedModelError",
    "ValueInfo",
    "attr_value",
    "load_model",
    "read_constants",
    "read_nodes",
    "value_infos",
]

log = logging.getLogger(__name__)

MAX_OPSET = 20

# ONNX TensorProto element types this backend handles -> NumPy dtype
DTYPES: dict[int, np.dtype] = {
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
FLOATS = {np.dtype(np.float32), np.dtype(np.float64)}


class UnsupportedModelError(ValueError):
    """The graph uses an operator, attribute value or data type that the Numba backend does not implement."""


class GraphRunError(RuntimeError):
    """A node failed on the given inputs (bad index, shape mismatch); the message names the node."""


# ---- the parsed graph ----------------------------------------------------------------------------------------


@dataclass
class Node:
    """One graph node: operator, name, input and output value names, and its attributes as Python values."""

    op: str
    name: str
    inputs: list[str]  # "" for an absent optional input
    outputs: list[str]
    attrs: dict[str, Any]

    def where(self) -> str:
        return f"node {self.name!r} ({self.op})"


@dataclass
class ValueInfo:
    """What shape inference knows about a tensor: its dtype and, per axis, an int or None (dynamic)."""

    dtype: np.dtype | None = None
    shape: tuple[int | None, ...] | None = None


def attr_value(attr) -> Any:
    """An ONNX attribute as a Python value (strings decoded)."""
    from onnx import helper

    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


CONTRIB_DOMAINS = ("com.microsoft",)
"""Operator domains besides the default one whose nodes may appear; the planner accepts only the operators of
them that have a builder (named ``"<domain>.<op_type>"``, see :func:`read_nodes`)."""


def load_model(onnx_path: Path):
    """Parse ``onnx_path``; an opset above :data:`MAX_OPSET`, another operator domain or model-local functions
    fail the load. Shape inference runs when it can (its results only help planning)."""
    import onnx

    try:
        model = onnx.load(str(onnx_path))
    except MemoryError:
        raise
    except Exception as error:  # protobuf's DecodeError: not a ValueError, and it does not name the file
        text = " ".join(str(error).split()) or type(error).__name__
        raise UnsupportedModelError(f"{onnx_path}: not a model numba can load: {text}") from None
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > MAX_OPSET:
            raise UnsupportedModelError(f"{onnx_path}: opset {opset.version} > {MAX_OPSET} is not supported by the numba backend")
        if opset.domain not in ("", "ai.onnx", *CONTRIB_DOMAINS):
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


def value_infos(graph) -> dict[str, ValueInfo]:
    """Dtype and shape of every graph input, output and inferred intermediate value, by name."""
    infos: dict[str, ValueInfo] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        t = vi.type.tensor_type
        if not t.elem_type:
            continue
        shape = None
        if t.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        infos[vi.name] = ValueInfo(DTYPES.get(t.elem_type), shape)
    return infos


def read_constants(graph, onnx_path: Path) -> dict[str, np.ndarray]:
    """The graph's initializers as NumPy arrays; a dtype the executor does not handle fails the load."""
    from onnx import numpy_helper

    consts: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype not in set(DTYPES.values()):
            raise UnsupportedModelError(f"{onnx_path}: initializer {init.name!r} has unsupported dtype {array.dtype}")
        consts[init.name] = array
    return consts


def read_nodes(graph) -> list[Node]:
    """The graph's nodes in file order (a node without a name is called ``#<index>``); a node of another domain
    than the default one has the operator name ``"<domain>.<op_type>"``."""
    return [
        Node(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}", n.name or f"#{i}",
             list(n.input), list(n.output), {a.name: attr_value(a) for a in n.attribute})
        for i, n in enumerate(graph.node)
    ]  # fmt: skip
