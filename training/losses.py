"""MLPF losses on element-aligned targets.

For every real element (``mask``) the model predicts a class, and for elements with a particle target a
charge and the kinematics (decoded physical values, see ``hepzoo.models``):

* ``cls``: focal loss ``-w_t (1 - p_t)^gamma log p_t`` over real elements (``w`` optional class weights);
* ``charge``: cross-entropy over charge classes (-1, 0, +1) on elements whose **target class is charged**
  (charged hadron, electron, muon);
* regression on elements whose target class is not ``NONE``: Huber(``delta``) of
  ``log pred_pt - log tgt_pt``, ``pred_eta - tgt_eta``, ``pred_sin_phi - tgt_sin_phi``,
  ``pred_cos_phi - tgt_cos_phi`` and ``log pred_e - log tgt_e`` (pt and e are clamped to ``eps`` before the
  log). Log ratios make the loss relative, as the model decodes relative to its element.

Each component is a **sum over its elements divided by a denominator**: by default the number of elements it
runs over in this batch (``loss_counts``), clamped to >= 1. Under DDP the training loop passes
``norm = global counts / world size`` so that the averaged gradient equals the gradient of the global mean,
whatever the split of elements across ranks. ``norm = ones`` gives plain sums (used to accumulate validation).

``total = cls_weight * cls + charge_weight * charge + reg_weight * (pt + eta + sin_phi + cos_phi + e)
+ jet_weight * jet``. ``jet`` is the optional jet-level term of :mod:`hepzoo.training.jet_loss`,
a sum over generator jets divided by the number of jets (the fourth count).

Energy weighting (``energy_weight_power`` p > 0, release 2): jets and MET sum energies, so an element's error
matters in proportion to its energy. Each element's ``cls`` and regression terms are multiplied by
``max(E_ref, 1 GeV)^p``. ``energy_weight_source="element"`` (the default) takes ``E_ref`` = the element's
measured energy: the weight is then known from the inputs alone, so it does not bias the regression.
``"element_or_target"`` takes the larger of the measured and the target energy; the diagnosis showed that this
pulls the predicted energies up (targets above the measurement weigh more: a weighted median above the median),
by about +7 % on track slots, so it is kept only to reproduce the first stage of the release-2 trainings. The
denominators stay the element counts, so p = 0 is exactly the unweighted loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from hepzoo.datasets.schema import TargetClass, TargetFeature
from hepzoo.training.jet_loss import count_jets, jet_loss_sum

CHARGED_CLASSES: tuple[TargetClass, ...] = (TargetClass.CHARGED_HADRON, TargetClass.ELECTRON, TargetClass.MUON)
REGRESSION_NAMES: tuple[str, ...] = ("pt", "eta", "sin_phi", "cos_phi", "e")  # model regression output order
COMPONENTS: tuple[str, ...] = ("total", "cls", "charge", "reg", *REGRESSION_NAMES, "jet")
_LOG_REG = {"pt", "e"}


def _charged(target_cls: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(target_cls, dtype=torch.bool)
    for c in CHARGED_CLASSES:
        out |= target_cls == int(c)
    return out


def loss_counts(
    target_cls: torch.Tensor,
    mask: torch.Tensor,
    target_reg: torch.Tensor | None = None,
    jet_index: torch.Tensor | None = None,
    jet_pt_power: float = 0.0,
) -> torch.Tensor:
    """float32[4]: (real elements, elements with a charged target, elements with a particle target, jets of the
    jet term (their summed weights with ``jet_pt_power > 0``); 0 without ``jet_index``)."""
    mask = mask.bool()
    jets = torch.zeros((), dtype=torch.float32, device=mask.device)
    if jet_index is not None:
        if target_reg is None:
            raise ValueError("loss_counts: counting jets needs target_reg")
        jets = count_jets(target_cls, target_reg, jet_index, mask, jet_pt_power)
    return torch.stack(
        [
            mask.sum().to(torch.float32),
            (mask & _charged(target_cls)).sum().to(torch.float32),
            (mask & (target_cls != int(TargetClass.NONE))).sum().to(torch.float32),
            jets,
        ]
    )


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-element focal loss ``-w_t (1 - p_t)^gamma log p_t``; logits ``[M, C]``, target ``[M]`` -> ``[M]``."""
    logp = F.log_softmax(logits.float(), dim=-1)
    logp_t = logp.gather(-1, target.long().unsqueeze(-1)).squeeze(-1)
    loss = -logp_t if gamma == 0 else -((1.0 - logp_t.exp()).clamp(min=0.0) ** gamma) * logp_t
    if class_weights is not None:
        loss = loss * class_weights.to(loss)[target.long()]
    return loss


def mlpf_loss(
    cls_logits: torch.Tensor,
    charge_logits: torch.Tensor,
    regression: torch.Tensor,
    target_cls: torch.Tensor,
    target_reg: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 2.0,
    class_weights: Sequence[float] | torch.Tensor | None = None,
    huber_delta: float = 1.0,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    norm: torch.Tensor | None = None,
    eps: float = 1e-6,
    energy_weight_power: float = 0.0,
    element_energy: torch.Tensor | None = None,
    energy_weight_source: str = "element",
    jet_index: torch.Tensor | None = None,
    jet_weight: float = 0.0,
    jet_scale: float = 0.1,
    jet_class_gradient: bool = True,
    jet_vector: bool = False,
    jet_pt_power: float = 0.0,
) -> dict[str, torch.Tensor]:
    """All loss components (scalars, keys ``COMPONENTS``) for one padded batch.

    Shapes: ``cls_logits [B,N,C]``, ``charge_logits [B,N,3]``, ``regression [B,N,5]`` (pt, eta, sin_phi,
    cos_phi, e), ``target_cls [B,N]``, ``target_reg [B,N,6]`` (``TargetFeature`` order), ``mask [B,N]``.
    ``norm``: denominators (real, charged, particle) replacing this batch's counts (see module docstring).
    ``element_energy [B,N]``: the elements' measured energies, needed when ``energy_weight_power > 0``.
    ``jet_index [B,N]``: each slot's generator jet (1-based, 0 = none); with it the ``jet`` component is computed
    (:mod:`hepzoo.training.jet_loss`, jets weighted by ``(pT / 20 GeV)^jet_pt_power``) and enters ``total`` with
    ``jet_weight``; without it ``jet`` is 0.
    """
    mask = mask.bool()
    if jet_weight > 0 and jet_index is None:
        raise ValueError("mlpf_loss: jet_weight > 0 needs jet_index (load the batches with jets=True)")
    if norm is None:
        norm = loss_counts(target_cls, mask, target_reg, jet_index, jet_pt_power)
    norm = norm.to(device=cls_logits.device, dtype=torch.float32).clamp(min=1.0)
    cw = None
    if class_weights is not None:
        cw = torch.as_tensor(class_weights, dtype=torch.float32, device=cls_logits.device)

    if energy_weight_power > 0:
        if element_energy is None:
            raise ValueError("mlpf_loss: energy_weight_power > 0 needs element_energy")
        e_ref = element_energy.float()
        if energy_weight_source == "element_or_target":
            e_ref = torch.maximum(e_ref, target_reg[..., TargetFeature.E].float())
        elif energy_weight_source != "element":
            raise ValueError(f"mlpf_loss: energy_weight_source must be 'element' or 'element_or_target', not {energy_weight_source!r}")
        weight = torch.clamp(e_ref, min=1.0) ** energy_weight_power
    else:
        weight = torch.ones_like(target_cls, dtype=torch.float32)

    out: dict[str, torch.Tensor] = {}
    out["cls"] = (focal_loss(cls_logits[mask], target_cls[mask], gamma, cw) * weight[mask]).sum() / norm[0]

    charged = mask & _charged(target_cls)
    q = target_reg[charged][:, TargetFeature.CHARGE].round().long().clamp(-1, 1) + 1
    out["charge"] = F.cross_entropy(charge_logits[charged].float(), q, reduction="sum") / norm[1]

    sel = mask & (target_cls != int(TargetClass.NONE))
    pred = regression[sel].float()
    tgt = target_reg[sel].float()
    w_sel = weight[sel]
    reg_total = torch.zeros((), dtype=torch.float32, device=cls_logits.device)
    for i, name in enumerate(REGRESSION_NAMES):
        p, t = pred[:, i], tgt[:, TargetFeature[name.upper()]]
        if name in _LOG_REG:
            p, t = p.clamp(min=eps).log(), t.clamp(min=eps).log()
        out[name] = (F.huber_loss(p, t, reduction="none", delta=huber_delta) * w_sel).sum() / norm[2]
        reg_total = reg_total + out[name]
    out["reg"] = reg_total
    out["jet"] = torch.zeros((), dtype=torch.float32, device=cls_logits.device)
    if jet_index is not None:
        out["jet"] = jet_loss_sum(
            cls_logits, regression, target_cls, target_reg, jet_index, mask, jet_scale, jet_class_gradient, jet_vector,
            jet_pt_power,
        ) / norm[3]
    out["total"] = weights[0] * out["cls"] + weights[1] * out["charge"] + weights[2] * reg_total
    if jet_weight > 0:
        out["total"] = out["total"] + jet_weight * out["jet"]
    return {k: out[k] for k in COMPONENTS}
