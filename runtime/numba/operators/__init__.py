"""ONNX operators of the ``numba`` backend: one builder per operator, looked up by name in :data:`BUILDERS`.

A builder checks a node's attributes at load (raising :class:`~hepzoo.runtime.numba.ir.UnsupportedModelError`)
and returns the function that runs the node (the builder protocol: :mod:`.common`). Grouped by job:

- :mod:`.elementwise`: unary math and activations, arithmetic, Equal, Where, Clip, Cast, Identity, Constant;
- :mod:`.shape`: shape manipulation, slicing, Gather, GatherElements, ScatterElements;
- :mod:`.reduce`: ReduceSum, ArgMax, Softmax, LayerNormalization, TopK;
- :mod:`.matmul`: MatMul, Gemm, and the functions of fused dense and attention steps;
- :mod:`.contrib`: ONNX Runtime contrib operators (``com.microsoft.MultiHeadAttention``), named ``domain.op``.
"""

from __future__ import annotations

from . import contrib, elementwise, matmul, reduce, shape
from .common import Builder

__all__ = ["BUILDERS"]


def _merge(*tables: dict[str, Builder]) -> dict[str, Builder]:
    merged: dict[str, Builder] = {}
    for table in tables:
        twice = sorted(set(merged) & set(table))
        if twice:
            raise RuntimeError(f"operators {twice} have two builders")
        merged.update(table)
    return merged


BUILDERS: dict[str, Builder] = _merge(elementwise.BUILDERS, shape.BUILDERS, reduce.BUILDERS, matmul.BUILDERS, contrib.BUILDERS)
