"""Particle-level metrics: per-class efficiency and fake rate of reconstructed candidates against truth.

Truth particles are the non-empty MLPF target slots (``tgt_``), so MLPF and the rule-based PF are judged
against the same reference. A truth particle of class c is found if a candidate of class c lies within a
class-dependent radius in (eta, phi); a candidate of class c is fake if no truth particle of class c lies
within that radius. The same definition is applied to every reconstruction.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from hepzoo.datasets.schema import TargetClass

# Matching radius per class: neutral hadrons are measured by the coarse HCAL alone (cell 0.087).
MATCH_DR = {
    TargetClass.CHARGED_HADRON: 0.05,
    TargetClass.NEUTRAL_HADRON: 0.2,
    TargetClass.PHOTON: 0.1,
    TargetClass.ELECTRON: 0.05,
    TargetClass.MUON: 0.05,
}
MIN_PT = 1.0  # GeV, for both truth and candidates


def _has_match(a: ak.Array, b: ak.Array, max_dr: float) -> ak.Array:
    """Per element of ``a`` (jagged records with eta, phi): is any element of ``b`` within ``max_dr``?"""
    pairs = ak.cartesian({"a": a, "b": b}, axis=1, nested=True)
    dphi = (pairs.a.phi - pairs.b.phi + np.pi) % (2 * np.pi) - np.pi
    dr2 = (pairs.a.eta - pairs.b.eta) ** 2 + dphi**2
    return ak.fill_none(ak.any(dr2 < max_dr**2, axis=2), False)


def efficiency_and_fake_rate(truth: ak.Array, reco: ak.Array, min_pt: float = MIN_PT) -> dict[str, dict[str, float]]:
    """Per class: efficiency, fake rate and counts. ``truth``/``reco``: jagged records cls, pt, eta, phi."""
    out = {}
    for cls, max_dr in MATCH_DR.items():
        t = truth[(truth.cls == int(cls)) & (truth.pt > min_pt)]
        r = reco[(reco.cls == int(cls)) & (reco.pt > min_pt)]
        n_t, n_r = int(ak.sum(ak.num(t, axis=1))), int(ak.sum(ak.num(r, axis=1)))
        found = int(ak.sum(_has_match(t, r, max_dr)))
        real = int(ak.sum(_has_match(r, t, max_dr)))
        out[cls.name] = {
            "n_truth": n_t,
            "n_reco": n_r,
            "efficiency": found / n_t if n_t else float("nan"),
            "fake_rate": (n_r - real) / n_r if n_r else float("nan"),
        }
    return out


def target_particles(events: ak.Array) -> ak.Array:
    """The non-empty target slots of each event as records cls, pt, eta, phi, e."""
    tgt = events.tgt
    tgt = tgt[tgt.cls != int(TargetClass.NONE)]
    return ak.zip({"cls": tgt.cls, "pt": tgt.pt, "eta": tgt.eta, "phi": np.arctan2(tgt.sin_phi, tgt.cos_phi), "e": tgt.e})


def pf_particles(events: ak.Array) -> ak.Array:
    """Rule-based PF candidates as records cls, pt, eta, phi, e."""
    pf = events.pf
    return ak.zip({"cls": pf.cls, "pt": pf.pt, "eta": pf.eta, "phi": pf.phi, "e": pf.e})
