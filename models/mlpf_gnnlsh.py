"""``mlpf-gnnlsh``: MLPF graph network with LSH-binned local graphs (after jpata/particleflow's GNN-LSH).

Architecture (each :class:`LSHGraphLayer`):

1. project the current embedding to a learned *distance space* ``d = W_d h`` (``dist_dim`` wide);
2. LSH code by random rotation (cross-polytope hashing): ``p = d @ R`` with a fixed random ``R``
   (``[dist_dim, num_hashes]``, a registered buffer drawn from a fixed seed, so export and every rebuild
   are deterministic); code = ``argmax([p, -p])`` in ``[0, 2 * num_hashes)``;
3. sort key = ``4 * code + softsign(d . r2)`` (``r2`` another fixed random direction orders elements within a
   code so neighbours in a bin stay close); padded elements get key ``1e6 + position`` so they sort last,
   behind every real element, in a fixed order;
4. ``argsort`` the key, gather, reshape the sorted sequence into ``N / bin_size`` bins of ``bin_size``;
5. inside each bin a dense learned adjacency ``A_ij = exp(-|d_i - d_j|^2) * m_i * m_j`` (Gaussian kernel,
   self-loops included, zero for padding), row-normalised; GHConv-style message passing
   ``out = act(g * W_self h + (1 - g) * A (W_nb h))`` with a learned gate ``g = sigmoid(W_g h)``;
6. scatter back to the original order (inverse permutation), ``h = LN(h + out)``, ``h = LN(h + FFN(h))``.

Cost is linear in N (bins of fixed size). ``N`` must be a multiple of ``bin_size`` (the runtime pads to size
buckets that are); otherwise :func:`forward` raises ``ValueError``. Export: argsort (ONNX TopK), gather,
scatter, reshape; no boolean-mask indexing, no data-dependent Python control flow.

Padding: padded rows are zeroed, sort behind the real elements and have zero adjacency, so real outputs do
not depend on how much padding there is or what it holds.

Permutation equivariance: the sort order of real elements depends only on their (continuous) keys, so a
permutation of the input permutes the output, except where two real elements have keys that tie to float
precision (then the tie-break is by position and their bins may differ). With continuous inputs that is
rare; the tests require at most a small fraction of elements to move by more than a tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hepzoo.models import mlpf_common as common
from hepzoo.models.mlpf_links import ExcessEmbedding, LinkFeatures, link_inputs
from hepzoo.models.registry import register_model

PAD_KEY = 1.0e6


class LSHGraphLayer(nn.Module):
    def __init__(self, width: int, dist_dim: int, bin_size: int, num_hashes: int, ffn_mult: int, dropout: float, seed: int):
        super().__init__()
        self.bin_size = bin_size
        self.dist = nn.Linear(width, dist_dim)
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("codebook", torch.randn(dist_dim, num_hashes, generator=g))
        self.register_buffer("order_dir", torch.randn(dist_dim, generator=g))
        self.w_self = nn.Linear(width, width)
        self.w_nb = nn.Linear(width, width, bias=False)
        self.w_gate = nn.Linear(width, width)
        self.act = nn.GELU()
        self.norm1 = nn.LayerNorm(width)
        self.ffn = common.mlp(width, ffn_mult * width, width, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def sort_keys(self, d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        p = d @ self.codebook
        code = torch.argmax(torch.cat([p, -p], dim=-1), dim=-1).to(d.dtype)
        q = d @ self.order_dir
        key = 4.0 * code + q / (1.0 + q.abs())
        pos = torch.arange(d.shape[1], device=d.device, dtype=d.dtype).unsqueeze(0)
        return torch.where(mask, key, PAD_KEY + pos)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, N, D = h.shape
        d = self.dist(h)
        perm = common.stable_argsort(self.sort_keys(d.detach(), mask), dim=1)  # [B, N]
        idx_h = perm.unsqueeze(-1).expand(-1, -1, D)
        hs = torch.gather(h, 1, idx_h)
        ds = torch.gather(d, 1, perm.unsqueeze(-1).expand(-1, -1, d.shape[-1]))
        ms = torch.gather(mask, 1, perm).to(h.dtype)

        nb = N // self.bin_size
        hb = hs.reshape(B, nb, self.bin_size, D)
        db = ds.reshape(B, nb, self.bin_size, -1)
        mb = ms.reshape(B, nb, self.bin_size)
        # squared distances via |a|^2 + |b|^2 - 2ab (one matmul), clamped at 0 against rounding
        sq = (db * db).sum(-1)
        dist2 = torch.clamp(sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * db @ db.transpose(-1, -2), min=0.0)
        adj = torch.exp(-dist2) * mb.unsqueeze(-1) * mb.unsqueeze(-2)
        adj = adj / (adj.sum(-1, keepdim=True) + 1e-6)
        het = adj @ self.w_nb(hb)
        gate = torch.sigmoid(self.w_gate(hb))
        out = self.act(gate * self.w_self(hb) + (1.0 - gate) * het).reshape(B, N, D)

        unsorted = torch.zeros_like(out).scatter(1, idx_h, out)
        h = self.norm1(h + self.drop(unsorted))
        return self.norm2(h + self.ffn(h))


class MLPFGNNLSH(nn.Module):
    """See the module docstring. ``forward(features [B,N,F], mask [B,N]) -> (cls, charge, regression)``."""

    def __init__(
        self,
        *,
        width: int = 64,
        num_layers: int = 3,
        bin_size: int = 32,
        dist_dim: int = 16,
        num_hashes: int = 8,
        ffn_mult: int = 2,
        dropout: float = 0.0,
        lsh_seed: int = 1234,
        link_window: int = 0,
        link_excess: bool = False,
        measured_tracks: bool = False,
        class_logit_bias: Sequence[float] | None = None,
        massless_clusters: bool = False,
    ):
        super().__init__()
        self.bin_size = bin_size
        self.element_granularity = bin_size  # the element axis must be a multiple of this
        self.transform = common.InputTransform()
        if link_excess and not link_window:
            raise ValueError("link_excess needs the link features (link_window > 0)")
        self.links = LinkFeatures(link_window, excess=link_excess) if link_window else None
        n_enc = self.transform.out_features + (self.links.out_features if self.links is not None else 0)
        self.excess = ExcessEmbedding(n_enc, self.links.n_sigmas, width, dropout) if link_excess else None
        # modules a fine-tune may add to weights that lack them (zero-initialised: the model starts unchanged)
        self.zero_init_modules = ("excess.",) if link_excess else ()
        self.embed = nn.Sequential(common.mlp(n_enc, width, width, dropout), nn.LayerNorm(width))
        self.layers = nn.ModuleList(
            LSHGraphLayer(width, dist_dim, bin_size, num_hashes, ffn_mult, dropout, seed=lsh_seed + i)
            for i in range(num_layers)
        )
        self.heads = common.MLPFHeads(
            width, n_enc, dropout=dropout, measured_tracks=measured_tracks, class_logit_bias=class_logit_bias,
            massless_clusters=massless_clusters,
        )

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = features.shape[1]
        if n % self.bin_size != 0:
            raise ValueError(
                f"mlpf-gnnlsh: the element axis ({n}) must be a multiple of bin_size={self.bin_size}; "
                "pad events to a size bucket that is"
            )
        mask = mask.to(torch.bool)
        feats = common.masked_features(features, mask)
        x_enc = self.transform(feats, mask)
        x_enc, ex = link_inputs(self.links, self.excess, x_enc, feats, mask)
        h = self.embed(x_enc)
        if self.excess is not None:
            h = self.excess(h, x_enc, ex)
        for layer in self.layers:
            h = layer(h, mask)
        return self.heads(h, x_enc, feats)


_BIN_SIZE = 32


@register_model(
    "mlpf-gnnlsh",
    family="mlpf",
    task="particle-flow reconstruction (element-aligned classification + regression)",
    inputs=common.MLPF_INPUTS,
    outputs=common.MLPF_OUTPUTS,
    export=common.mlpf_export_spec(element_granularity=_BIN_SIZE, atol=2e-4, rtol=2e-4),
    permutation_tolerance=0.02,  # LSH sort ties (float precision) may move a few elements to other bins
)
def mlpf_gnnlsh(
    *,
    width: int = 64,
    num_layers: int = 3,
    bin_size: int = _BIN_SIZE,
    dist_dim: int = 16,
    num_hashes: int = 8,
    ffn_mult: int = 2,
    dropout: float = 0.0,
    lsh_seed: int = 1234,
    link_window: int = 0,
    link_excess: bool = False,
    measured_tracks: bool = False,
    class_logit_bias: Sequence[float] | None = None,
    massless_clusters: bool = False,
) -> MLPFGNNLSH:
    """MLPF GNN with LSH-binned graphs; cost linear in N; N must be a multiple of ``bin_size``.

    The export spec's element granularity is the default ``bin_size``; an override of ``bin_size`` must
    divide it or be exported with a matching granularity. ``link_window > 0`` adds the geometric link
    features (:mod:`hepzoo.models.mlpf_links`) to the inputs of the embedding and the heads (release 2).
    ``link_excess`` adds the calorimeter-minus-track excess and its zero-initialised embedding correction
    (:class:`hepzoo.models.mlpf_links.ExcessEmbedding`).
    """
    return MLPFGNNLSH(
        width=width,
        num_layers=num_layers,
        bin_size=bin_size,
        dist_dim=dist_dim,
        num_hashes=num_hashes,
        ffn_mult=ffn_mult,
        dropout=dropout,
        lsh_seed=lsh_seed,
        link_window=link_window,
        link_excess=link_excess,
        measured_tracks=measured_tracks,
        class_logit_bias=class_logit_bias,
        massless_clusters=massless_clusters,
    )
