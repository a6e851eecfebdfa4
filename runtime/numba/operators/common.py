"""What every operator module shares: the builder protocol, its registry decorator, and attribute and
axis helpers with ONNX semantics (also used by the plan compiler).

A builder ``builder(node, const, info) -> fn`` checks the node's attributes (raising
:class:`~hepzoo.runtime.numba.ir.UnsupportedModelError`) and returns the function that runs it. ``const[i]`` is
input i's value where it is a constant at load time (else None) and ``info[i]`` its
:class:`~hepzoo.runtime.numba.ir.ValueInfo`; ``fn`` receives every input (absent optional inputs as None) and
returns the output or a tuple of outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..ir import GraphRunError, Node, UnsupportedModelError

__all__ = ["Builder", "as_int_list", "check_attrs", "norm_axis", "onnx_slice", "registering", "require"]

Builder = Callable[[Node, list, list], Callable]


def registering(table: dict[str, Builder]) -> Callable[..., Callable[[Builder], Builder]]:
    """The ``@op("Name", ...)`` decorator of an operator module: registers the builder in ``table`` under each
    ONNX operator name."""

    def op(*names: str) -> Callable[[Builder], Builder]:
        def register(fn: Builder) -> Builder:
            for name in names:
                table[name] = fn
            return fn

        return register

    return op


def check_attrs(node: Node, allowed: Mapping[str, Any]) -> dict[str, Any]:
    """Attribute values with defaults; an attribute this backend does not know fails the load."""
    unknown = sorted(set(node.attrs) - set(allowed))
    if unknown:
        raise UnsupportedModelError(f"{node.where()}: attribute(s) {unknown} are not supported by the numba backend")
    return {k: node.attrs.get(k, v) for k, v in allowed.items()}


def require(node: Node, ok: bool, what: str) -> None:
    if not ok:
        raise UnsupportedModelError(f"{node.where()}: {what} is not supported by the numba backend")


def as_int_list(a: np.ndarray | None) -> list[int]:
    return [] if a is None else [int(v) for v in np.asarray(a).reshape(-1)]


def norm_axis(axis: int, rank: int, node: Node) -> int:
    if not -rank <= axis < rank:
        raise GraphRunError(f"{node.where()}: axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def onnx_slice(start: int, end: int, step: int, dim: int, node: Node) -> slice:
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
