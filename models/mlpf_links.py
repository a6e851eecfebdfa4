"""Geometric link features: what the rule-based particle flow's linking step knows, given to the MLPF models.

The rule-based PF decides what a calorimeter cluster is by the tracks that point at it: a cluster whose energy
the linked tracks' momenta explain is no new particle, and the excess is a neutral one. A network can learn
that relation only if it sees, for each element, the tracks and clusters around it at the calorimeter. The
diagnosis of the /1 releases (docs/mlpf-physics.md) found exactly this missing: with true classes their cluster
energies were as bad as the raw cluster energy (charged deposits not subtracted).

:class:`LinkFeatures` computes, for every element ``i``, Gaussian-weighted sums over its neighbours ``j != i``
in (eta, phi) at the calorimeter surface (tracks at their extrapolated impact point, clusters at their
centroid), for a few fixed widths ``sigma``::

    L[i, q, s] = sum_j  exp(-dR_ij^2 / (2 sigma_s^2)) * Q[j, q]

with quantities ``Q`` = (track momentum, ECAL energy, HCAL energy, HF energy, track count, cluster count), then
``log1p``. ``dR^2 = deta^2 + 2 (1 - cos dphi)`` (the chord form, equal to ``dphi^2`` to fourth order, computed
from sin/cos without atan2).

Cost is linear in N: elements are sorted by azimuth (a monotone pseudo-angle of (sin, cos) phi), and each
element sees the ``window`` elements before and after it in that order, cyclically over the event's real
elements (so phi wraps around and padding is never a neighbour). For events of about 1000 elements and
``window = 128`` that is more than +-0.8 rad in phi, beyond the largest ``sigma``; at pile-up sizes the reach in
phi shrinks (about +-0.05 rad at 16 000 elements), so the widest kernel is truncated there. An event with at most
``2 window`` real elements sees each other element exactly once. Every op exports to ONNX and runs on the numba
backend (TopK for the sort, GatherElements, Where, batched MatMul, elementwise); there is no Pad, no Mod and no
data-dependent control flow.

The features are exactly permutation-equivariant up to float summation order, and do not depend on padding.

**Excess** (``excess=True``, :meth:`LinkFeatures.with_excess`): the rule-based PF makes a neutral particle from
the calorimeter energy that the tracks of a block do not explain. The same quantity, as a signed sum with the
element itself included, ``X[i, s] = asinh(Qc_i + sum_j k_s(dR_ij) Qc_j)`` with ``Qc`` = (ECAL + HCAL energy of a
cluster) - (momentum of a track) in GeV, is hard for a network to form from the log-sums above (a difference of
exponentials). :class:`ExcessEmbedding` reads it next to the other inputs and adds a correction to the embedding
whose last layer starts at zero, so a model fine-tuned from weights without it starts exactly where they were.
"""

from __future__ import annotations

import torch
from torch import nn

from hepzoo.datasets import schema
from hepzoo.models.mlpf_common import mlp, stable_argsort

EF = schema.ElementFeature
ET = schema.ElementType

LINK_QUANTITIES: tuple[str, ...] = ("track_p", "ecal_e", "hcal_e", "hf_e", "n_tracks", "n_clusters")
DEFAULT_SIGMAS: tuple[float, ...] = (0.03, 0.1, 0.3)
_PAD_KEY = 1.0e6


def _positions_and_quantities(feats: torch.Tensor, mask: torch.Tensor, excess: bool = False):
    """(eta, sin phi, cos phi) at the calorimeter and the summed quantities ``[B, N, len(LINK_QUANTITIES)]``
    (with ``excess``, one more column: the signed calorimeter-minus-track energy ``Qc``)."""
    etype = feats[..., int(EF.TYPE)]
    m = mask.to(feats.dtype)
    trk = etype == float(ET.TRACK)
    is_trk = trk.to(feats.dtype) * m
    is_hf = (etype == float(ET.HF_CLUSTER)).to(feats.dtype) * m
    is_clu = m - is_trk
    eta = torch.where(trk, feats[..., int(EF.ETA_CALO)], feats[..., int(EF.ETA)])
    sin = torch.where(trk, feats[..., int(EF.SIN_PHI_CALO)], feats[..., int(EF.SIN_PHI)])
    cos = torch.where(trk, feats[..., int(EF.COS_PHI_CALO)], feats[..., int(EF.COS_PHI)])
    energy = torch.clamp(feats[..., int(EF.E)], min=0.0)
    track_p = energy * is_trk
    ecal_e = torch.clamp(feats[..., int(EF.E_ECAL)], min=0.0) * (is_clu - is_hf)
    hcal_e = torch.clamp(feats[..., int(EF.E_HCAL)], min=0.0) * (is_clu - is_hf)
    columns = [track_p, ecal_e, hcal_e, energy * is_hf, is_trk, is_clu]
    if excess:
        columns.append(ecal_e + hcal_e - track_p)
    return eta, sin, cos, torch.stack(columns, dim=-1)


def _step(x: torch.Tensor) -> torch.Tensor:
    """1 where the integer tensor ``x >= 0``, else 0 (as ``x``'s dtype), with Clip only: the comparison ops
    are kept out of the graph so that every backend (numba included) runs it."""
    return torch.clamp(x + 1, min=0, max=1)


class LinkFeatures(nn.Module):
    """``(features [B,N,F] with padded rows zeroed, mask [B,N]) -> [B, N, out_features]`` (see module docstring)."""

    def __init__(self, window: int = 128, sigmas: tuple[float, ...] = DEFAULT_SIGMAS, excess: bool = False):
        super().__init__()
        if window < 1:
            raise ValueError(f"LinkFeatures: window must be >= 1, got {window}")
        self.window = int(window)
        self.excess = bool(excess)
        self.n_sigmas = len(sigmas)
        inv = torch.tensor([1.0 / (2.0 * s * s) for s in sigmas], dtype=torch.float32)
        self.register_buffer("inv_two_sigma2", inv, persistent=False)
        offsets = [o for o in range(-self.window, self.window + 1) if o != 0]
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.out_features = len(LINK_QUANTITIES) * len(sigmas)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._aggregate(feats, mask, excess=False)[0]

    def with_excess(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(link features [B, N, out_features], excess [B, N, len(sigmas)])`` (see the module docstring)."""
        if not self.excess:
            raise ValueError("LinkFeatures.with_excess needs LinkFeatures(excess=True)")
        return self._aggregate(feats, mask, excess=True)

    def _aggregate(self, feats: torch.Tensor, mask: torch.Tensor, excess: bool):
        B, N = mask.shape
        mask = mask.to(torch.bool)
        eta, sin, cos, q = _positions_and_quantities(feats, mask, excess)

        # sort by a monotone pseudo-angle of phi in [0, 4); padding last, in a fixed order
        upper = torch.clamp(sin * 1.0e30, min=0.0, max=1.0)  # 1 for sin > 0 (phi in (0, pi)), 0 for sin <= 0
        pseudo = upper * (1.0 - cos) + (1.0 - upper) * (3.0 + cos)
        pos = torch.arange(N, device=feats.device, dtype=feats.dtype).unsqueeze(0)
        # stable: equal keys (clusters on one tower column share phi exactly) keep index order, as ONNX TopK does,
        # so every backend sees the same neighbours
        perm = stable_argsort(torch.where(mask, pseudo, _PAD_KEY + pos), dim=1)  # [B, N]
        geo = torch.stack([eta, sin, cos], dim=-1)
        geo_s = torch.gather(geo, 1, perm.unsqueeze(-1).expand(-1, -1, 3))
        q_s = torch.gather(q, 1, perm.unsqueeze(-1).expand(-1, -1, q.shape[-1]))

        # neighbour index (sorted position p + offset o), cyclic over the n real elements; with n <= 2 window
        # only the offsets -a..b (a + b + 1 = n) are kept, so each other element is seen once
        n = mask.to(torch.long).sum(1).view(B, 1, 1)
        p = torch.arange(N, device=feats.device).view(1, N, 1)
        o = self.offsets.view(1, 1, -1)
        idx = p + o
        idx = idx + n * (1 - _step(idx))  # idx < 0: wrap forward
        idx = idx - n * _step(idx - n)  # idx >= n: wrap back
        idx = torch.clamp(idx, min=0, max=N - 1)  # padded rows (p >= n): any in-range index, masked below
        a = ((n - 1).to(feats.dtype) * 0.5).to(torch.long)  # (n - 1) // 2 for n >= 1 (Cast truncates)
        ok = (_step(o + a) * _step(n - 1 - a - o) * (1 - _step(p - n))).to(feats.dtype)  # [B, N, 2W]
        W2 = idx.shape[-1]
        flat = idx.reshape(B, N * W2)

        def neighbours(x: torch.Tensor) -> torch.Tensor:  # [B, N, C] -> [B, N, 2W, C]
            c = x.shape[-1]
            return torch.gather(x, 1, flat.unsqueeze(-1).expand(B, N * W2, c)).reshape(B, N, W2, c)

        nb_geo = neighbours(geo_s)
        nb_q = neighbours(q_s) * ok.unsqueeze(-1)
        deta = geo_s[..., 0].unsqueeze(-1) - nb_geo[..., 0]
        cos_dphi = geo_s[..., 1].unsqueeze(-1) * nb_geo[..., 1] + geo_s[..., 2].unsqueeze(-1) * nb_geo[..., 2]
        dr2 = deta * deta + 2.0 * torch.clamp(1.0 - cos_dphi, min=0.0)  # [B, N, 2W]
        kern = torch.exp(-dr2.unsqueeze(-2) * self.inv_two_sigma2.view(-1, 1))  # [B, N, S, 2W]
        agg = kern @ nb_q  # [B, N, S, Q]
        n_q = len(LINK_QUANTITIES)
        extra = None
        if excess:  # the element's own Qc counts once, at every width
            extra = torch.asinh(agg[..., n_q] + q_s[..., n_q].unsqueeze(-1))  # [B, N, S]
            agg = agg[..., :n_q]
        agg = torch.log1p(agg.transpose(-1, -2)).reshape(B, N, -1)  # [B, N, Q*S], quantity-major
        if extra is not None:
            agg = torch.cat([agg, extra], dim=-1)

        out = torch.zeros_like(agg).scatter(1, perm.unsqueeze(-1).expand(-1, -1, agg.shape[-1]), agg)
        out = out * mask.unsqueeze(-1).to(out.dtype)
        if extra is None:
            return out, None
        return out[..., : n_q * self.n_sigmas], out[..., n_q * self.n_sigmas :]


class ExcessEmbedding(nn.Module):
    """Correction to the element embedding from the inputs and the excess (module docstring):
    ``h + MLP([x_enc, excess])``, the MLP's last layer initialised at zero."""

    def __init__(self, n_enc: int, n_sigmas: int, width: int, dropout: float = 0.0):
        super().__init__()
        self.mlp = mlp(n_enc + n_sigmas, width, width, dropout)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, h: torch.Tensor, x_enc: torch.Tensor, excess: torch.Tensor) -> torch.Tensor:
        return h + self.mlp(torch.cat([x_enc, excess], dim=-1))


def link_inputs(
    links: LinkFeatures | None, excess: ExcessEmbedding | None, x_enc: torch.Tensor, feats: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x_enc with the link features appended, excess or None)`` for a model's optional link modules."""
    if links is None:
        return x_enc, None
    if excess is None:
        return torch.cat([x_enc, links(feats, mask)], dim=-1), None
    link, ex = links.with_excess(feats, mask)
    return torch.cat([x_enc, link], dim=-1), ex
