"""FLOP counting of ``hepzoo bench``: on the exported ONNX graph, or by torch on one forward call.

* hepzoo models: counted on the exported ONNX graph at the concrete size, ``2*M*N*K`` (times broadcast batch
  dimensions) for every ``MatMul``/``Gemm``, shapes from ONNX shape inference (ONNX Runtime's symbolic shape
  inference where ONNX's cannot resolve a shape), and the two products of ONNX Runtime's contrib
  ``MultiHeadAttention`` (:func:`attention_flops`: the head dimension as executed, so the mlpf-transformer's
  folded key-padding dimension counts); element-wise ops, softmax and normalisation are not counted.
* the particleflow reference: ``torch.utils.flop_counter.FlopCounterMode`` on one forward (mm/addmm/bmm, and
  attention via ``sdpa_flop_count``).

Both count a multiply-add as 2 FLOPs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["attention_flops", "gemm_flops", "matmul_flops", "onnx_matmul_flops", "torch_flops"]


def matmul_flops(a: Sequence[int], b: Sequence[int]) -> int:
    """FLOPs of ONNX/NumPy ``MatMul`` (2 per multiply-add), with 1-D operands and broadcast batch dims."""
    a, b = [int(d) for d in a], [int(d) for d in b]
    if not a or not b:
        raise ValueError(f"MatMul of a scalar: shapes {a} x {b}")
    a = [1, *a] if len(a) == 1 else a
    b = [*b, 1] if len(b) == 1 else b
    m, k = a[-2], a[-1]
    k2, n = b[-2], b[-1]
    if k != k2:
        raise ValueError(f"MatMul inner dimensions differ: {a} x {b}")
    batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return 2 * math.prod(batch) * m * n * k


def gemm_flops(a: Sequence[int], b: Sequence[int], trans_a: bool = False, trans_b: bool = False) -> int:
    """FLOPs of ONNX ``Gemm`` (``alpha*A'B' + beta*C``: the bias add is not counted)."""
    if len(a) != 2 or len(b) != 2:
        raise ValueError(f"Gemm needs 2-D operands, got {list(a)} x {list(b)}")
    m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
    k2, n = (b[1], b[0]) if trans_b else (b[0], b[1])
    if k != k2:
        raise ValueError(f"Gemm inner dimensions differ: {list(a)} (transA={trans_a}) x {list(b)} (transB={trans_b})")
    return 2 * int(m) * int(n) * int(k)


_COUNTED = ("MatMul", "Gemm")
_CONTRIB_ATTENTION = ("com.microsoft", "MultiHeadAttention")


def attention_flops(q: Sequence[int], k: Sequence[int], v: Sequence[int]) -> int:
    """FLOPs of ONNX Runtime's ``MultiHeadAttention`` with 3-D query ``[B, S, H*dqk]``, key ``[B, L, H*dqk]``,
    value ``[B, L, H*dv]``: its two products, ``2*B*S*L*H*(dqk + dv)`` (the softmax is not counted)."""
    b, s, qk = (int(d) for d in q)
    length, v_hidden = int(k[1]), int(v[2])
    return 2 * b * s * length * (qk + v_hidden)


def _known_shapes(model: Any) -> dict[str, list[int | None]]:
    g = model.graph
    shapes: dict[str, list[int | None]] = {t.name: [int(d) for d in t.dims] for t in g.initializer}
    for v in [*g.input, *g.value_info, *g.output]:
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
    for node in g.node:  # Constant nodes carry their shape in the attribute
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = [int(d) for d in attr.t.dims]
    return shapes


def _count_graph(model: Any) -> tuple[dict[str, int], list[str]]:
    """(FLOPs by op type, descriptions of the counted nodes whose operand shapes are unknown)."""
    shapes = _known_shapes(model)
    flops = {op: 0 for op in _COUNTED}
    unresolved = []
    for node in model.graph.node:
        if (node.domain, node.op_type) == _CONTRIB_ATTENTION:
            q, k, v = (shapes.get(name) for name in node.input[:3])
            heads = next((at.i for at in node.attribute if at.name == "num_heads"), 0)
            if not heads or any(t is None or len(t) != 3 or None in t for t in (q, k, v)):
                unresolved.append(f"MultiHeadAttention node {node.name!r} (inputs {list(node.input[:3])}: shapes {q}, {k}, {v})")
                continue
            flops["MultiHeadAttention"] = flops.get("MultiHeadAttention", 0) + attention_flops(q, k, v)
            continue
        if node.op_type not in _COUNTED:
            continue
        a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
        if a is None or b is None or None in a or None in b:
            unresolved.append(f"{node.op_type} node {node.name!r} (inputs {list(node.input[:2])}: shapes {a} x {b})")
            continue
        if node.op_type == "MatMul":
            flops["MatMul"] += matmul_flops(a, b)
        else:
            attrs = {at.name: at.i for at in node.attribute}
            flops["Gemm"] += gemm_flops(a, b, bool(attrs.get("transA", 0)), bool(attrs.get("transB", 0)))
    return flops, unresolved


def onnx_matmul_flops(model: str | os.PathLike | Any, dims: Mapping[str, int]) -> dict[str, Any]:
    """MatMul/Gemm FLOPs of an ONNX graph with its symbolic input axes set to ``dims`` (e.g. batch, elements).

    Returns ``{"flops", "by_op", "shape_inference"}``. Raises ``ValueError`` naming the file and the node when
    an axis size is missing or a counted node's operand shape cannot be inferred.
    """
    import onnx

    where = str(model) if not isinstance(model, onnx.ModelProto) else (model.graph.name or "<onnx model>")
    proto = onnx.ModelProto()
    proto.CopyFrom(model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False))
    for f in proto.functions:
        if any(n.op_type in _COUNTED for n in f.node):
            raise ValueError(f"{where}: MatMul/Gemm inside local function {f.name!r}; inline the model's functions first")
    for node in proto.graph.node:
        if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute):
            raise ValueError(f"{where}: node {node.name!r} ({node.op_type}) has a subgraph; FLOP counting covers flat graphs only")
    initializers = {t.name for t in proto.graph.initializer}
    for inp in proto.graph.input:
        if inp.name in initializers:
            continue
        for d in inp.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                if d.dim_param not in dims:
                    raise ValueError(
                        f"{where}: input {inp.name!r} has symbolic axis {d.dim_param!r}; give its size (got {sorted(dims)})"
                    )
                d.dim_value = int(dims[d.dim_param])
    # the exporter's value_info holds symbolic expressions that would shadow the concrete shapes: infer afresh
    del proto.graph.value_info[:]
    for out in proto.graph.output:
        out.type.tensor_type.ClearField("shape")
    by_op, unresolved = _count_graph(onnx.shape_inference.infer_shapes(proto, data_prop=True))
    method = "onnx.shape_inference (data_prop)"
    if unresolved:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        by_op, unresolved = _count_graph(SymbolicShapeInference.infer_shapes(proto, auto_merge=False))
        method = "onnxruntime.tools.symbolic_shape_infer"
    if unresolved:
        raise ValueError(f"{where}: could not infer operand shapes at {dict(dims)} for " + "; ".join(unresolved[:3]))
    return {"flops": int(sum(by_op.values())), "by_op": by_op, "shape_inference": method}


def _sdpa_cpu_flops(query: Sequence[int], key: Sequence[int], value: Sequence[int], *args: Any, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def torch_flops(call: Callable[[], Any]) -> int:
    """FLOPs of one ``call()`` by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and attention).

    torch's registry has no formula for the CPU flash-attention kernel, so it is added (same formula as the
    GPU kernels: ``sdpa_flop_count``).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    custom = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:
        custom[cpu_flash] = _sdpa_cpu_flops
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=custom) as counter:
        call()
    return int(counter.get_total_flops())
