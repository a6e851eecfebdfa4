"""Jet-level MLPF loss term: the predicted pT of each generator jet's slots against their targets' pT.

The element-aligned loss (:mod:`hepzoo.training.losses`) judges each slot alone, while the physics is judged on
jets: a neutral hadron the classifier misses, or cluster energy split over two slots, costs a jet its energy even
where every slot's regression is individually plausible. The rule-based PF gets jet energy right by construction
(calorimeter energy minus track momenta becomes neutrals); this term asks the model for the same sums.

For each generator jet (``jet_index`` from :func:`hepzoo.datasets.jet_assign.element_jet_index`) the term compares
the vector pT sum over the jet's slots of the *decoded* candidates (a slot counts when its argmax class is not
``NONE``) with the same sum over the slots' targets:

    r_J = log(|sum_i s_i pT_i (cos phi_i, sin phi_i)| / |sum_i pT^t_i (cos phi^t_i, sin phi^t_i)|) / scale
    jet = sum_J Huber_1(r_J) / n_jets

``s_i`` is a straight-through indicator: 1 or 0 from the argmax in the forward pass, with the gradient of
``1 - p_NONE`` in the backward pass, so the term trains both the pT regression and the class decision. The
predicted directions enter detached: the term may move pT and the class decision, never the angles. Jets whose
target sum is below ``MIN_TARGET_PT`` (5 GeV) are left out. ``scale`` (default 0.1, about the jet resolution
reached) makes a typical jet contribute O(1), like the per-element terms.

``vector=True`` compares the jet's axis too, so that pT moved onto displaced slots is penalised. With ``T`` the
target sum vector in the transverse plane, ``u`` its unit vector, ``v`` the unit vector perpendicular to it, and
``eta_w`` a pT-weighted mean eta:

    jet_J = Huber_1((P.u - |T|) / |T| / scale) + Huber_1(P.v / |T| / scale) + Huber_1((eta_w(P) - eta_w(T)) / scale)

``pt_power > 0`` weights each jet by ``w_J = (|T| / PT_REF)^pt_power`` (``PT_REF`` = 20 GeV, the lowest jet the
evaluation counts): the term becomes a weighted mean over jets (:func:`count_jets` returns the sum of the weights),
so energetic jets, a few per cent of all jets, weigh more than their number. 0 (default): every jet counts once.

What it bought is in docs/mlpf-physics.md (section 2, "A jet-level loss term"): better energy around the jet axes,
MET and the jets above 200 GeV; the jets it displaced (massive cluster candidates) are put back by the massless
decoding that the releases from 4 on use (``models.mlpf_common.MLPFHeads``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hepzoo.datasets.schema import TargetClass, TargetFeature
from hepzoo.models.mlpf_decode import REGRESSION_COLUMN

_PT, _ETA, _SIN, _COS = (
    REGRESSION_COLUMN[f] for f in (TargetFeature.PT, TargetFeature.ETA, TargetFeature.SIN_PHI, TargetFeature.COS_PHI)
)
MIN_TARGET_PT = 5.0
PT_REF = 20.0  # GeV: jet weights (|T| / PT_REF)^pt_power


def _jet_ids(jet_index: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(flat slot selection [B*S] bool, global jet id of the selected slots, number of ids B*K)."""
    b, s = jet_index.shape
    k = int(jet_index.max().item()) + 1 if jet_index.numel() else 1
    gid = torch.arange(b, device=jet_index.device).unsqueeze(1) * k + jet_index
    sel = (mask.bool() & (jet_index > 0)).reshape(-1)
    return sel, gid.reshape(-1)[sel], b * k


def _sums(
    pt: torch.Tensor, eta: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, gid: torch.Tensor, n: int
) -> torch.Tensor:
    """Per jet id ``[n, 4]``: (sum px, sum py, sum pT, sum pT*eta); (sin, cos) are normalised first (predictions
    need not be unit vectors)."""
    norm = torch.sqrt(sin * sin + cos * cos).clamp(min=1e-6)
    cols = torch.stack([pt * cos / norm, pt * sin / norm, pt, pt * eta], dim=-1)
    return torch.zeros(n, 4, dtype=pt.dtype, device=pt.device).index_add(0, gid, cols)


def _magnitude(sums: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(sums[:, 0] ** 2 + sums[:, 1] ** 2 + 1e-12)


def _target_sums(
    target_cls: torch.Tensor, target_reg: torch.Tensor, sel: torch.Tensor, gid: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(target sums ``[n, 4]`` as in :func:`_sums`, which jet ids enter the loss ``[n]`` bool) of the slots ``sel``."""
    tgt = target_reg.reshape(-1, target_reg.shape[-1])[sel].float()
    on = (target_cls.reshape(-1)[sel] != int(TargetClass.NONE)).float()
    t = _sums(
        tgt[:, TargetFeature.PT] * on, tgt[:, TargetFeature.ETA], tgt[:, TargetFeature.SIN_PHI],
        tgt[:, TargetFeature.COS_PHI], gid, n,
    )  # fmt: skip
    return t, _magnitude(t) > MIN_TARGET_PT


def _jet_weights(t_mag: torch.Tensor, pt_power: float) -> torch.Tensor:
    """Per-jet weights ``(|T| / PT_REF)^pt_power`` of the target sums' magnitudes ``t_mag``; ones for power 0."""
    if not math.isfinite(pt_power) or pt_power < 0:
        raise ValueError(f"jet term: pt_power must be a finite number >= 0, got {pt_power!r}")
    return torch.ones_like(t_mag) if pt_power == 0 else (t_mag / PT_REF) ** pt_power


def count_jets(
    target_cls: torch.Tensor,
    target_reg: torch.Tensor,
    jet_index: torch.Tensor,
    mask: torch.Tensor,
    pt_power: float = 0.0,
) -> torch.Tensor:
    """Number of jets that enter the loss, or the sum of their weights with ``pt_power > 0`` (float32 scalar)."""
    t, valid = _target_sums(target_cls, target_reg, *_jet_ids(jet_index, mask))
    return _jet_weights(_magnitude(t[valid]), pt_power).sum().to(torch.float32)


def jet_loss_sum(
    cls_logits: torch.Tensor,
    regression: torch.Tensor,
    target_cls: torch.Tensor,
    target_reg: torch.Tensor,
    jet_index: torch.Tensor,
    mask: torch.Tensor,
    scale: float = 0.1,
    class_gradient: bool = True,
    vector: bool = False,
    pt_power: float = 0.0,
) -> torch.Tensor:
    """Sum over jets of ``Huber_1(log(pred/target jet pT) / scale)`` (see the module docstring).
    ``class_gradient=False``: the slots' 0/1 decision carries no gradient (the term trains the regression only).
    ``vector=True``: the jet's axis counts as well. ``pt_power``: each jet's term times ``(|T| / PT_REF)^pt_power``
    (see the module docstring)."""
    sel, gid, n = _jet_ids(jet_index, mask)
    t, valid = _target_sums(target_cls, target_reg, sel, gid, n)
    logits = cls_logits.reshape(-1, cls_logits.shape[-1])[sel].float()
    p_real = 1.0 - torch.softmax(logits, dim=-1)[:, int(TargetClass.NONE)]
    hard = (logits.argmax(-1) != int(TargetClass.NONE)).float()
    s = hard + p_real - p_real.detach() if class_gradient else hard
    reg = regression.reshape(-1, regression.shape[-1])[sel].float()
    # directions detached: the term may move pT and the class decision, never the angles (a shortcut that would
    # shrink the vector sum by spreading the candidates in phi instead of correcting their pT)
    p = _sums(s * reg[:, _PT], reg[:, _ETA].detach(), reg[:, _SIN].detach(), reg[:, _COS].detach(), gid, n)[valid]
    t = t[valid]
    t_mag = _magnitude(t)
    w = _jet_weights(t_mag, pt_power)
    if not vector:
        r = (torch.log(_magnitude(p) + 1e-3) - torch.log(t_mag)) / scale
        return (F.huber_loss(r, torch.zeros_like(r), reduction="none", delta=1.0) * w).sum()
    u = t[:, :2] / t_mag.unsqueeze(-1)  # unit vector of the target jet in the transverse plane
    r_par = ((p[:, 0] * u[:, 0] + p[:, 1] * u[:, 1]) - t_mag) / t_mag
    r_perp = (p[:, 1] * u[:, 0] - p[:, 0] * u[:, 1]) / t_mag
    r_eta = p[:, 3] / p[:, 2].clamp(min=1e-3) - t[:, 3] / t[:, 2]
    r = torch.stack([r_par, r_perp, r_eta], dim=-1) / scale
    return (F.huber_loss(r, torch.zeros_like(r), reduction="none", delta=1.0).sum(-1) * w).sum()
