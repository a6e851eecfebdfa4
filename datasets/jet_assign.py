"""Element-to-generator-jet assignment for jet-level training terms (torch-free).

Jets are what the MLPF physics is judged on (anti-kt R=0.4 generator jets above 20 GeV, |eta| < 2.5, see
:mod:`hepzoo.validation.jets`), but the element-aligned loss sees one slot at a time. A jet-level loss needs to
know which slots make up which jet. :func:`element_jet_index` gives each element slot the number (1-based, within
its event) of the closest selected generator jet within ``radius`` of the slot's direction, or 0 for none. The
slot's direction is its target particle's where it has one (that is where the particle it should predict goes),
else the element's own measurement (a fake predicted there lands near the element).

The assignment is made from the inputs, targets and generator jets alone, so it is a constant of the batch: the
loss differentiates the predicted sums over a fixed set of slots.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
from numba import njit

from hepzoo.datasets import schema
from hepzoo.datasets.dtypes import SchemaError

EF = schema.ElementFeature
TF = schema.TargetFeature

#: the generator-jet selection of the validation (hepzoo.validation.jets.jet_response defaults)
JET_MIN_PT = 20.0
JET_MAX_ABS_ETA = 2.5
JET_RADIUS = 0.4


@njit(cache=True)
def _assign_kernel(eta, phi, off, jet_eta, jet_phi, jet_ok, joff, radius):  # pragma: no cover - numba
    out = np.zeros(eta.shape[0], dtype=np.int64)
    r2 = radius * radius
    for b in range(off.shape[0] - 1):
        for i in range(off[b], off[b + 1]):
            best = r2
            k = 0
            for j in range(joff[b], joff[b + 1]):
                if not jet_ok[j]:
                    continue
                deta = eta[i] - jet_eta[j]
                dphi = phi[i] - jet_phi[j]
                dphi = (dphi + np.pi) % (2.0 * np.pi) - np.pi
                d = deta * deta + dphi * dphi
                if d < best:
                    best = d
                    k = j - joff[b] + 1
            out[i] = k
    return out


def element_jet_index(
    events: ak.Array,
    features: np.ndarray,
    target_cls: np.ndarray,
    target_reg: np.ndarray,
    offsets: np.ndarray,
    *,
    min_pt: float = JET_MIN_PT,
    max_abs_eta: float = JET_MAX_ABS_ETA,
    radius: float = JET_RADIUS,
) -> np.ndarray:
    """int64[N_elem]: 1 + index (within its event) of the slot's generator jet, 0 for none.

    ``features``/``target_cls``/``target_reg``/``offsets``: the flat element rows of ``events`` (as made by
    :func:`hepzoo.datasets.elements.element_features` / ``element_targets``). ``events`` must hold the
    ``genjet`` collection.
    """
    if "genjet" not in events.fields:
        raise SchemaError(f"the chunk has no 'genjet' collection, needed by the jet loss (fields: {events.fields})")
    jets = events["genjet"]
    joff = np.zeros(len(jets) + 1, dtype=np.int64)
    np.cumsum(np.asarray(ak.num(jets, axis=1), dtype=np.int64), out=joff[1:])
    jpt, jeta, jphi = (ak.to_numpy(ak.flatten(jets[k], axis=1)).astype(np.float64) for k in ("pt", "eta", "phi"))
    jet_ok = (jpt > min_pt) & (np.abs(jeta) < max_abs_eta)

    has_target = target_cls != int(schema.TargetClass.NONE)
    eta = np.where(has_target, target_reg[:, TF.ETA], features[:, EF.ETA]).astype(np.float64)
    sin_phi = np.where(has_target, target_reg[:, TF.SIN_PHI], features[:, EF.SIN_PHI])
    cos_phi = np.where(has_target, target_reg[:, TF.COS_PHI], features[:, EF.COS_PHI])
    phi = np.arctan2(sin_phi, cos_phi).astype(np.float64)
    return _assign_kernel(eta, phi, np.asarray(offsets, np.int64), jeta, jphi, jet_ok, joff, float(radius))
