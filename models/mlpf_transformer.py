"""``mlpf-transformer``: MLPF with pre-norm transformer encoder blocks over all elements of an event.

embed (shared input transform + MLP) -> ``num_layers`` x [x + MHA(LN(x)); x + FFN(LN(x))] -> LN -> shared
heads. Attention is ``torch.nn.functional.scaled_dot_product_attention`` with an *additive* float key
padding mask of shape ``[B, 1, 1, N]`` (0 for real keys, ``-1e9`` for padded ones). A finite large negative
rather than ``-inf``/a boolean mask: an event with no real element then gives a uniform (finite) softmax
instead of NaN, while ``exp(-1e9)`` is exactly 0 in float32, so padded keys contribute nothing to real
queries. Exported with the dynamo exporter at its default opset (20), SDPA becomes MatMul/Softmax ops and ORT
accepts the broadcast mask (opset 23's ``Attention`` op does not in ORT 1.32).

Cost is quadratic in N. Exactly permutation-equivariant (no positional information).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hepzoo.models import mlpf_common as common
from hepzoo.models.mlpf_links import ExcessEmbedding, LinkFeatures, link_inputs
from hepzoo.models.registry import register_model

MASK_VALUE = -1.0e9


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

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        H = self.num_heads
        qkv = self.qkv(self.norm1(x)).reshape(B, N, 3, H, D // H).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_bias, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, N, D)))
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
            width, n_enc, dropout=dropout, measured_tracks=measured_tracks, class_logit_bias=class_logit_bias
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
        attn_bias = torch.where(mask, zero, zero + MASK_VALUE)[:, None, None, :]  # [B, 1, 1, N]
        for block in self.blocks:
            h = block(h, attn_bias)
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
) -> MLPFTransformer:
    """MLPF transformer (SDPA with a key padding mask); cost quadratic in N; exactly permutation-equivariant.

    ``link_window > 0`` adds the geometric link features (:mod:`hepzoo.models.mlpf_links`) to the inputs of
    the embedding and the heads (release 2); 0 is the release-1 architecture.
    ``link_excess`` adds the calorimeter-minus-track excess and its zero-initialised embedding correction
    (:class:`hepzoo.models.mlpf_links.ExcessEmbedding`).
    """
    return MLPFTransformer(
        width=width, num_layers=num_layers, num_heads=num_heads, ffn_mult=ffn_mult, dropout=dropout,
        link_window=link_window, link_excess=link_excess, measured_tracks=measured_tracks,
        class_logit_bias=class_logit_bias,
    )  # fmt: skip
