"""The MLPF output decoder: element-slot outputs -> particle candidates (numpy + awkward, no torch).

The one place that reads MLPF output tensors by column; every column is named from the schema enums. Outputs
per element slot (flat rows, as ``Session.run_elements`` returns them; see :mod:`hepzoo.models.mlpf_common`):

* ``cls_logits [N, len(TargetClass)]``;
* ``charge_logits [N, 3]``, classes :data:`CHARGE_CLASSES` (-1, 0, +1);
* ``regression [N, 5]``: physical values in :data:`REGRESSION_FEATURES` order (``TargetFeature`` without
  ``CHARGE``: pt, eta, sin_phi, cos_phi, e).

A candidate is ``cls, charge, pt, eta, phi, e`` (``phi = atan2(sin_phi, cos_phi)``); its charge is 0 for the
neutral classes and ``TargetClass.NONE`` and -1 or +1 for the charged classes (:func:`decode_charge`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hepzoo.datasets import schema

__all__ = [
    "CHARGED_CLASSES",
    "CHARGE_CLASSES",
    "REGRESSION_COLUMN",
    "REGRESSION_FEATURES",
    "REGRESSION_FEATURE_NAMES",
    "REGRESSION_TARGET_INDEX",
    "candidate_fields",
    "decode_candidates",
    "decode_charge",
    "kinematics",
]

TF = schema.TargetFeature
TC = schema.TargetClass

CHARGE_CLASSES: tuple[int, ...] = (-1, 0, 1)  # charge_logits columns
REGRESSION_FEATURES: tuple[schema.TargetFeature, ...] = tuple(f for f in TF if f != TF.CHARGE)
REGRESSION_FEATURE_NAMES: tuple[str, ...] = tuple(f.name.lower() for f in REGRESSION_FEATURES)
# columns of a loader batch's target_reg (TargetFeature order) that line up with ``regression``
REGRESSION_TARGET_INDEX: tuple[int, ...] = tuple(int(f) for f in REGRESSION_FEATURES)
# column of each TargetFeature in ``regression``
REGRESSION_COLUMN: Mapping[schema.TargetFeature, int] = {f: i for i, f in enumerate(REGRESSION_FEATURES)}
CHARGED_CLASSES: tuple[schema.TargetClass, ...] = (TC.CHARGED_HADRON, TC.ELECTRON, TC.MUON)
_MINUS, _PLUS = CHARGE_CLASSES.index(-1), CHARGE_CLASSES.index(1)


def kinematics(regression: np.ndarray) -> dict[str, np.ndarray]:
    """``regression [N, 5]`` -> ``pt, eta, phi, e`` (float32 phi from the sin/cos columns)."""
    col = REGRESSION_COLUMN
    return {
        "pt": regression[:, col[TF.PT]],
        "eta": regression[:, col[TF.ETA]],
        "phi": np.arctan2(regression[:, col[TF.SIN_PHI]], regression[:, col[TF.COS_PHI]]).astype(np.float32),
        "e": regression[:, col[TF.E]],
    }


def decode_charge(cls: np.ndarray, charge_logits: np.ndarray) -> np.ndarray:
    """Per-candidate charge from the predicted class and the charge head: 0 for ``TargetClass.NONE``,
    ``NEUTRAL_HADRON`` and ``PHOTON``; -1 or +1 for the charged classes (never 0)."""
    charged = np.isin(cls, np.array([int(c) for c in CHARGED_CLASSES]))
    plus = charge_logits[:, _PLUS] > charge_logits[:, _MINUS]
    return np.where(charged, np.where(plus, 1, -1), 0).astype(np.int32)


def candidate_fields(out: Mapping[str, np.ndarray], probabilities: bool = False) -> dict[str, np.ndarray]:
    """Flat outputs -> flat candidate columns ``cls, charge, pt, eta, phi, e`` (one row per element slot);
    ``probabilities`` adds ``cls_prob`` (softmax of ``cls_logits``, ``[n_classes]`` per row)."""
    cls = out["cls_logits"].argmax(-1).astype(np.int32)
    fields = {"cls": cls, "charge": decode_charge(cls, out["charge_logits"]), **kinematics(out["regression"])}
    if probabilities:
        logits = out["cls_logits"]
        p = np.exp(logits - (logits.max(-1, keepdims=True) if len(logits) else 0))
        fields["cls_prob"] = (p / p.sum(-1, keepdims=True)).astype(np.float32)
    return fields


def decode_candidates(
    out: Mapping[str, np.ndarray], offsets: np.ndarray, probabilities: bool = False, keep_empty: bool = False
):
    """Flat MLPF outputs + event ``offsets`` -> per-event candidate records (awkward).

    Element slots predicted as ``TargetClass.NONE`` are dropped unless ``keep_empty`` (then records stay
    element-aligned: tracks then clusters). See :func:`candidate_fields` for ``probabilities``.
    """
    import awkward as ak

    counts = np.diff(np.asarray(offsets, dtype=np.int64))
    fields = candidate_fields(out, probabilities)
    candidates = ak.zip({k: ak.unflatten(v, counts) for k, v in fields.items()}, depth_limit=2)
    return candidates if keep_empty else candidates[candidates.cls != int(TC.NONE)]
