"""``com.microsoft.MultiHeadAttention`` back into default-domain ONNX ops, for consumers without ONNX Runtime's
contrib ops (TensorRT's ONNX parser).

The MLPF transformer exports its attention as that contrib op so ONNX Runtime CPU runs it in linear memory
(:mod:`hepzoo.models.mlpf_transformer`). :func:`expand_contrib_attention` rewrites each such node with 3-D
query, key and value and no other input into ``Reshape``/``Transpose`` to heads, ``MatMul``, ``Mul`` by the
scale, ``Softmax``, ``MatMul`` and back: the ``N x N`` form again, which a GPU engine holds in its own memory.
Torch-free (``onnx`` only).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CONTRIB_ATTENTION", "expand_contrib_attention", "has_contrib_attention"]

CONTRIB_ATTENTION = ("com.microsoft", "MultiHeadAttention")


def has_contrib_attention(model) -> bool:
    return any((n.domain, n.op_type) == CONTRIB_ATTENTION for n in model.graph.node)


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _head_size(model, name: str, heads: int) -> int | None:
    """Per-head size of a ``[B, S, H * d]`` value from the graph's value infos (None where unknown)."""
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            if len(dims) == 3 and dims[2].HasField("dim_value"):
                return dims[2].dim_value // heads
    return None


def expand_contrib_attention(model):
    """A copy of ``model`` (an ``onnx.ModelProto``) with every ``com.microsoft.MultiHeadAttention`` node expanded
    (module docstring). Raises ``ValueError`` for a node with a mask, bias, past state, causal flag or present
    outputs, or whose head size cannot be inferred; the ``com.microsoft`` opset import is dropped when unused."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    consts = []
    for i, node in enumerate(model.graph.node):
        if (node.domain, node.op_type) != CONTRIB_ATTENTION:
            out.graph.node.append(node)
            continue
        where = f"node {node.name or i!r} (MultiHeadAttention)"
        if len(node.input) < 3 or any(node.input[3:]) or any(node.output[1:]) or _attr(node, "unidirectional", 0):
            raise ValueError(f"{where}: only query, key and value inputs and one output can be expanded")
        heads = int(_attr(node, "num_heads", 0))
        d = _head_size(model, node.input[0], heads) if heads > 0 else None
        if d is None:
            raise ValueError(f"{where}: num_heads or the query's head size is unknown")
        scale = float(_attr(node, "scale", 0.0)) or 1.0 / math.sqrt(d)
        q, k, v = node.input[:3]
        p = f"{node.name or f'mha{i}'}/expand"
        split = f"{p}/split_heads"
        consts += [
            numpy_helper.from_array(np.array([0, 0, heads, -1], np.int64), split),
            numpy_helper.from_array(np.array([0, 0, -1], np.int64), f"{p}/merge_heads"),
            numpy_helper.from_array(np.array(scale, np.float32), f"{p}/scale"),
        ]
        out.graph.node.extend([
            helper.make_node("Reshape", [q, split], [f"{p}/q4"]),
            helper.make_node("Transpose", [f"{p}/q4"], [f"{p}/qh"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [k, split], [f"{p}/k4"]),
            helper.make_node("Transpose", [f"{p}/k4"], [f"{p}/kt"], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [v, split], [f"{p}/v4"]),
            helper.make_node("Transpose", [f"{p}/v4"], [f"{p}/vh"], perm=[0, 2, 1, 3]),
            helper.make_node("MatMul", [f"{p}/qh", f"{p}/kt"], [f"{p}/scores"]),
            helper.make_node("Mul", [f"{p}/scores", f"{p}/scale"], [f"{p}/scaled"]),
            helper.make_node("Softmax", [f"{p}/scaled"], [f"{p}/weights"], axis=-1),
            helper.make_node("MatMul", [f"{p}/weights", f"{p}/vh"], [f"{p}/oh"]),
            helper.make_node("Transpose", [f"{p}/oh"], [f"{p}/o4"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [f"{p}/o4", f"{p}/merge_heads"], [node.output[0]]),
        ])  # fmt: skip
    out.graph.initializer.extend(consts)
    if not has_contrib_attention(out):
        kept = [o for o in out.opset_import if o.domain != CONTRIB_ATTENTION[0]]
        if len(kept) != len(out.opset_import) and not any(n.domain == CONTRIB_ATTENTION[0] for n in out.graph.node):
            del out.opset_import[:]
            out.opset_import.extend(kept)
    return out
