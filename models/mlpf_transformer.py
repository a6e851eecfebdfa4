"""``mlpf-transformer``: MLPF with pre-norm transformer encoder blocks over all elements of an event.

embed (shared input transform + MLP) -> ``num_layers`` x [x + MHA(LN(x)); x + FFN(LN(x))] -> LN -> shared
heads. Attention is ``torch.nn.functional.scaled_dot_product_attention`` with an *additive* float key
padding mask of shape ``[B, 1, 1, N]`` (0 for real keys, ``-1e9`` for padded ones). A finite large negative
rather than ``-inf``/a boolean mask: an event with no real element then gives a uniform (finite) softmax
instead of NaN, while ``exp(-1e9)`` is exactly 0 in float32, so padded keys contribute nothing to real
queries.

**Export (attention in linear memory).** Under ``torch.onnx.export`` the attention is one ONNX Runtime contrib
op ``com.microsoft.MultiHeadAttention`` per block (:func:`key_padding_attention`), never MatMul/Softmax over an
``N x N`` score tensor. ORT CPU runs that op with its flash (streaming-softmax) kernel only without a key
padding mask or attention bias, so the mask rides in one extra head dimension: ``q' = [q, 1]`` and
``k' = [k, bias / scale]`` with the op's ``scale`` fixed to ``1/sqrt(head_dim)``, so
``scale * q'.k' = scale * q.k + bias``: the scores of real keys are bit-identical (the extra term is 0) and
padded keys get ``-1e9`` as in eager. Values keep ``head_dim``. Eager/training still calls SDPA with the
additive mask (same weights, same maths). The numba backend runs the op with a streaming online-softmax
kernel (:func:`hepzoo.runtime.numba.kernels.attention.online_attention`).

Cost is quadratic in N in time, linear in memory once exported. Exactly permutation-equivariant (no
positional information).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hepzoo.models import mlpf_common as common
from hepzoo.models.mlpf_links import ExcessEmbedding, LinkFeatures, link_inputs
from hepzoo.models.registry import register_model

MASK_VALUE = -1.0e9
CONTRIB_ATTENTION = "com.microsoft::MultiHeadAttention"


def key_padding_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor, dropout_p: float = 0.0
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + key_bias) v`` with heads merged: q, k, v ``[B, H, N, d]``, key_bias ``[B, N]``
    (0 for real keys, :data:`MASK_VALUE` for padded ones) -> ``[B, N, H * d]``.

    Eager: SDPA with the ``[B, 1, 1, N]`` additive mask. Under ``torch.onnx.export``: one
    ``com.microsoft.MultiHeadAttention`` node with the bias folded into an extra head dimension (module
    docstring), so the exported graph holds no ``N x N`` tensor.
    """
    B, H, N, d = q.shape
    if not torch.onnx.is_in_onnx_export():
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias[:, None, None, :], dropout_p=dropout_p)
        return a.transpose(1, 2).reshape(B, N, H * d)
    scale = 1.0 / math.sqrt(d)
    ones = torch.ones_like(q[..., :1])
    bias_col = (key_bias * (1.0 / scale))[:, None, :, None].expand(B, H, N, 1)
    q_aug = torch.cat([q, ones], dim=-1).transpose(1, 2).reshape(B, N, H * (d + 1))
    k_aug = torch.cat([k, bias_col], dim=-1).transpose(1, 2).reshape(B, N, H * (d + 1))
    v_m = v.transpose(1, 2).reshape(B, N, H * d)
    return torch.onnx.ops.symbolic(
        CONTRIB_ATTENTION, (q_aug, k_aug, v_m), {"num_heads": H, "scale": scale},
        dtype=q.dtype, shape=(B, N, H * d), version=1,
    )  # fmt: skip


class EncoderBlock(nn.Module):
    def __init__(self, width: int, num_heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.ffn = common.mlp(width, ffn_mult * width, width, dropout)
        self.dropout = dropout
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        H = self.num_heads
        qkv = self.qkv(self.norm1(x)).reshape(B, N, 3, H, D // H).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = key_padding_attention(q, k, v, key_bias, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a))
        return x + self.drop(self.ffn(self.norm2(x)))


class MLPFTransformer(nn.Module):
    """See the module docstring. ``forward(features [B,N,F], mask [B,N]) -> (cls, charge, regression)``."""

    def __init__(
        self,
        *,
        width: int = 64,
        num_layers: int = 3,
        num_heads: int = 4,
        ffn_mult: int = 2,
        dropout: float = 0.0,
        link_window: int = 0,
        link_excess: bool = False,
        measured_tracks: bool = False,
        class_logit_bias: Sequence[float] | None = None,
        massless_clusters: bool = False,
    ):
        super().__init__()
        self.element_granularity = 1
        self.transform = common.InputTransform()
        if link_excess and not link_window:
            raise ValueError("link_excess needs the link features (link_window > 0)")
        self.links = LinkFeatures(link_window, excess=link_excess) if link_window else None
        n_enc = self.transform.out_features + (self.links.out_features if self.links is not None else 0)
        self.excess = ExcessEmbedding(n_enc, self.links.n_sigmas, width, dropout) if link_excess else None
        # modules a fine-tune may add to weights that lack them (zero-initialised: the model starts unchanged)
        self.zero_init_modules = ("excess.",) if link_excess else ()
        self.embed = common.mlp(n_enc, width, width, dropout)
        self.blocks = nn.ModuleList(EncoderBlock(width, num_heads, ffn_mult, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(width)
        self.heads = common.MLPFHeads(
            width, n_enc, dropout=dropout, measured_tracks=measured_tracks, class_logit_bias=class_logit_bias,
            massless_clusters=massless_clusters,
        )

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = mask.to(torch.bool)
        feats = common.masked_features(features, mask)
        x_enc = self.transform(feats, mask)
        x_enc, ex = link_inputs(self.links, self.excess, x_enc, feats, mask)
        h = self.embed(x_enc)
        if self.excess is not None:
            h = self.excess(h, x_enc, ex)
        zero = torch.zeros((), dtype=h.dtype, device=h.device)
        key_bias = torch.where(mask, zero, zero + MASK_VALUE)  # [B, N]
        for block in self.blocks:
            h = block(h, key_bias)
        return self.heads(self.norm(h), x_enc, feats)


@register_model(
    "mlpf-transformer",
    family="mlpf",
    task="particle-flow reconstruction (element-aligned classification + regression)",
    inputs=common.MLPF_INPUTS,
    outputs=common.MLPF_OUTPUTS,
    export=common.mlpf_export_spec(element_granularity=1, atol=1e-4, rtol=1e-4),
)
def mlpf_transformer(
    *,
    width: int = 64,
    num_layers: int = 3,
    num_heads: int = 4,
    ffn_mult: int = 2,
    dropout: float = 0.0,
    link_window: int = 0,
    link_excess: bool = False,
    measured_tracks: bool = False,
    class_logit_bias: Sequence[float] | None = None,
    massless_clusters: bool = False,
) -> MLPFTransformer:
    """MLPF transformer (SDPA with a key padding mask, exported as ORT's MultiHeadAttention); time quadratic in N,
    memory linear once exported; exactly permutation-equivariant.

    ``link_window > 0`` adds the geometric link features (:mod:`hepzoo.models.mlpf_links`) to the inputs of
    the embedding and the heads (release 2); 0 is the release-1 architecture.
    ``link_excess`` adds the calorimeter-minus-track excess and its zero-initialised embedding correction
    (:class:`hepzoo.models.mlpf_links.ExcessEmbedding`).
    """
    return MLPFTransformer(
        width=width, num_layers=num_layers, num_heads=num_heads, ffn_mult=ffn_mult, dropout=dropout,
        link_window=link_window, link_excess=link_excess, measured_tracks=measured_tracks,
        class_logit_bias=class_logit_bias,
        massless_clusters=massless_clusters,
    )  # fmt: skip
