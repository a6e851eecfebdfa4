"""ONNX Runtime contrib operators (domain ``com.microsoft``) that exported models use: ``MultiHeadAttention``
with separate 3-D query, key and value (the MLPF transformer's attention, see
:mod:`hepzoo.models.mlpf_transformer`), run on the streaming
:func:`~hepzoo.runtime.numba.kernels.attention.online_attention` kernel (no ``N x N`` scores).

Operators of a non-default domain are registered as ``"<domain>.<op_type>"``
(:func:`~hepzoo.runtime.numba.ir.read_nodes` names them so).
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import FLOATS, GraphRunError
from ..kernels.attention import online_attention
from .common import Builder, check_attrs, registering, require

__all__ = ["BUILDERS", "KEY_BLOCK"]

BUILDERS: dict[str, Builder] = {}
_op = registering(BUILDERS)

KEY_BLOCK = 256
"""Keys per block of the online softmax (scores and weights of 4 query rows x this many keys stay in cache)."""


def _heads(x: np.ndarray, num_heads: int, name: str, where: str) -> np.ndarray:
    """``[B, S, H * d]`` -> ``[B, H, S, d]`` (a view)."""
    if x.ndim != 3 or x.shape[2] % num_heads:
        raise GraphRunError(f"{where}: {name} of shape {x.shape} is not [batch, sequence, num_heads * head_size]")
    b, s, hd = x.shape
    return x.reshape(b, s, num_heads, hd // num_heads).transpose(0, 2, 1, 3)


@_op("com.microsoft.MultiHeadAttention")
def _multi_head_attention(node, const, info):
    a = check_attrs(node, {"num_heads": 0, "scale": 0.0, "mask_filter_value": -10000.0, "unidirectional": 0})
    require(node, a["num_heads"] > 0, "MultiHeadAttention without a positive num_heads")
    require(node, a["unidirectional"] == 0, "unidirectional (causal) MultiHeadAttention")
    extra = [name for name in node.inputs[3:] if name]
    require(node, len(node.inputs) >= 3 and all(node.inputs[:3]) and not extra,
            "MultiHeadAttention with inputs other than query, key and value (bias, masks, past state)")  # fmt: skip
    require(node, len([o for o in node.outputs if o]) == 1 and node.outputs[0] != "",
            "MultiHeadAttention with present key/value outputs")  # fmt: skip
    heads = int(a["num_heads"])
    where = node.where()

    def run(query, key, value, *absent):
        if query.dtype not in FLOATS or key.dtype != query.dtype or value.dtype != query.dtype:
            raise GraphRunError(f"{where}: query, key and value must share a float dtype")
        q = _heads(query, heads, "query", where)
        k = _heads(key, heads, "key", where)
        v = _heads(value, heads, "value", where)
        b, _, m, d = q.shape
        n = k.shape[2]
        if k.shape[0] != b or v.shape[0] != b or k.shape[3] != d or v.shape[2] != n:
            raise GraphRunError(f"{where}: query {query.shape}, key {key.shape}, value {value.shape} do not match")
        dv = v.shape[3]
        scale = a["scale"] or 1.0 / math.sqrt(d)
        q3 = np.ascontiguousarray(q).reshape(b * heads, m, d)
        kt = np.ascontiguousarray(k.transpose(0, 1, 3, 2)).reshape(b * heads, d, n)
        vt = np.ascontiguousarray(v.transpose(0, 1, 3, 2)).reshape(b * heads, dv, n)
        out = online_attention(q3, kt, vt, scale, KEY_BLOCK)
        return np.ascontiguousarray(out.reshape(b, heads, m, dv).transpose(0, 2, 1, 3)).reshape(b, m, heads * dv)

    return run
