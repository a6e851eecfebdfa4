"""particleflow's own MLPF (PyPI ``particleflow``) behind the zoo's MLPF interface, so that it trains and is
validated through exactly the same pipeline as our models (issue 16: the anchor, side by side on our data).

Use it as a ``'package.module:factory'`` model in a training config::

    model:
      name: hepzoo.particleflow_adapter:particleflow_mlpf
      kwargs: {reference: mlpf-gnnlsh, width: 128, num_layers: 4, bin_size: 64, dist_dim: 16}

``reference`` picks the zoo model whose size is matched (:func:`hepzoo.benchmarks.reference.reference_config`
maps it to particleflow's ``gnn_lsh`` or ``attention`` architecture, as ``hepzoo bench`` does). The adapter
only translates inputs and outputs; the network is particleflow's class, unchanged:

* **inputs**: particleflow reads the element type, pT, eta, sin phi, cos phi and E from columns 0-5 and uses
  pT and E as the references of its pT and energy regression, so those six raw columns come first; then the
  zoo's :class:`~hepzoo.models.mlpf_common.InputTransform` of every feature (log1p of energies, asinh of
  impact parameters, one-hot type), the same transform our models see;
* **classes**: particleflow predicts "particle or not" (``binary``) and the particle type (``pid``); the
  adapter returns their joint log-probabilities as ``cls_logits`` (``log P(none)`` and
  ``log P(particle) + log P(type | particle)``), so the zoo's focal loss and argmax apply unchanged;
* **charge**: particleflow 3.1.0 has no charge head; the adapter returns the measured track charge as
  confident logits (clusters: 0). Its charge loss is then a constant with no gradient;
* **regression**: particleflow's pT and energy outputs are log ratios to the element's pT and E, its eta,
  sin phi, cos phi outputs are absolute; the adapter decodes them to physical values like
  :func:`hepzoo.models.mlpf_common.decode_regression`.

Needs ``pip install --no-deps particleflow==3.1.0`` (what ``make bench`` installs); training configs only,
no zoo release is made from it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hepzoo.benchmarks.reference import available, reference_config
from hepzoo.datasets import schema
from hepzoo.models import mlpf_common as common

EF = schema.ElementFeature
TF = schema.TargetFeature
# the columns particleflow reads by position (mlpf/model/mlpf.py: X[..., 0] type, 1 pt, 2 eta, 3 sin, 4 cos, 5 e)
PARTICLEFLOW_COLUMNS: tuple[schema.ElementFeature, ...] = (EF.TYPE, EF.PT, EF.ETA, EF.SIN_PHI, EF.COS_PHI, EF.E)
# particleflow's momentum output columns (preds_momentum = cat([pt, eta, sin_phi, cos_phi, energy]))
_PF_OUT = {TF.PT: 0, TF.ETA: 1, TF.SIN_PHI: 2, TF.COS_PHI: 3, TF.E: 4}
CHARGE_LOGIT = 10.0  # confidence of the measured track charge


class ParticleflowMLPF(nn.Module):
    """particleflow's ``MLPF`` with the zoo's ``(features, mask) -> (cls_logits, charge_logits, regression)``."""

    def __init__(self, reference: str = "mlpf-gnnlsh", seed: int = 0, **kwargs: Any) -> None:
        super().__init__()
        ok, why = available()
        if not ok:
            raise RuntimeError(f"hepzoo.particleflow_adapter: {why}")
        import logging

        from mlpf.conf import MLPFConfig
        from mlpf.model.mlpf import MLPF

        arch = reference_config(reference, kwargs)
        self.notes = arch.pop("notes")
        self.transform = common.InputTransform()
        self.register_buffer(
            "pf_columns", torch.tensor([int(c) for c in PARTICLEFLOW_COLUMNS], dtype=torch.long), persistent=False
        )
        config = MLPFConfig(
            dataset="clic",  # required by particleflow; the dimensions below override what it implies
            data_dir=".",
            model=arch,
            conv_type=arch["type"],
            input_dim=len(PARTICLEFLOW_COLUMNS) + self.transform.out_features,
            num_classes=len(schema.TargetClass),
            elemtypes_nonzero=[int(t) for t in schema.ElementType],
        )
        logging.getLogger("mlpf").setLevel(logging.WARNING)  # its constructor logs every layer at INFO
        torch.manual_seed(seed)
        self.net = MLPF(config)
        self.element_granularity = int(arch["gnn_lsh"]["bin_size"]) if arch["type"] == "gnn_lsh" else 1
        self.architecture = config.model.model_dump(mode="json", exclude_none=True)

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = mask.to(torch.bool)
        feats = common.masked_features(features, mask)
        x = torch.cat([feats.index_select(-1, self.pf_columns), self.transform(feats, mask)], dim=-1)
        binary, pid, momentum, _ = self.net(x, mask)
        log_binary = torch.log_softmax(binary, dim=-1)  # [..., 0] no particle, [..., 1] particle
        log_type = torch.log_softmax(pid[..., 1:], dim=-1)  # the particle classes (TargetClass without NONE)
        cls_logits = torch.cat([log_binary[..., :1], log_binary[..., 1:] + log_type], dim=-1)
        q = feats[..., int(EF.CHARGE)].round().clamp(-1, 1).long() + 1
        charge_logits = CHARGE_LOGIT * nn.functional.one_hot(q, len(common.CHARGE_CLASSES)).to(feats.dtype)
        pt0 = torch.clamp(feats[..., int(EF.PT)], min=common.PT_MIN)
        e0 = torch.clamp(feats[..., int(EF.E)], min=common.E_MIN)
        lim = common.RAW_LOG_CLAMP
        cols = {
            TF.PT: pt0 * torch.exp(torch.clamp(momentum[..., _PF_OUT[TF.PT]], -lim, lim)),
            TF.ETA: momentum[..., _PF_OUT[TF.ETA]],
            TF.SIN_PHI: momentum[..., _PF_OUT[TF.SIN_PHI]],
            TF.COS_PHI: momentum[..., _PF_OUT[TF.COS_PHI]],
            TF.E: e0 * torch.exp(torch.clamp(momentum[..., _PF_OUT[TF.E]], -lim, lim)),
        }
        regression = torch.stack([cols[f] for f in common.REGRESSION_FEATURES], dim=-1)
        return cls_logits, charge_logits, regression


def particleflow_mlpf(**kwargs: Any) -> ParticleflowMLPF:
    """Factory for training configs (``model.name: hepzoo.particleflow_adapter:particleflow_mlpf``)."""
    return ParticleflowMLPF(**kwargs)
