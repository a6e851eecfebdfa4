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


# ---- per-object flags, binned rates and particle response (hepzoo validate) --------------------------------

PT_EDGES = np.array([1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 200.0])  # GeV, for efficiency/fake rate vs pT
ETA_EDGES = np.linspace(-3.0, 3.0, 13)


def _flat_np(x: ak.Array) -> np.ndarray:
    return ak.to_numpy(ak.flatten(x, axis=None)).astype(np.float64)


def class_flags(truth: ak.Array, reco: ak.Array, cls: TargetClass, min_pt: float = MIN_PT) -> dict[str, np.ndarray]:
    """Flat per-object arrays for one class, with the same definitions as :func:`efficiency_and_fake_rate`:
    ``truth_pt/eta``, ``found`` (truth has a candidate within the radius), ``reco_pt/eta``, ``real``."""
    max_dr = MATCH_DR[cls]
    t = truth[(truth.cls == int(cls)) & (truth.pt > min_pt)]
    r = reco[(reco.cls == int(cls)) & (reco.pt > min_pt)]
    return {
        "truth_pt": _flat_np(t.pt),
        "truth_eta": _flat_np(t.eta),
        "found": ak.to_numpy(ak.flatten(_has_match(t, r, max_dr), axis=None)).astype(bool),
        "reco_pt": _flat_np(r.pt),
        "reco_eta": _flat_np(r.eta),
        "real": ak.to_numpy(ak.flatten(_has_match(r, t, max_dr), axis=None)).astype(bool),
    }


def _rate(values: np.ndarray, passed: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, _ = np.histogram(values, bins=edges)
    k, _ = np.histogram(values, bins=edges, weights=passed.astype(np.float64))
    return k, n


def binned_rates(flags: dict[str, np.ndarray], var: str, edges: np.ndarray) -> dict[str, list[float]]:
    """Efficiency (in bins of the truth ``var``) and fake rate (in bins of the candidate ``var``) with
    Agresti-Coull one-sigma uncertainties; empty bins give NaN. ``var``: ``pt`` or ``eta``."""
    from .uncertainty import binomial_uncertainty

    k_t, n_t = _rate(flags[f"truth_{var}"], flags["found"], edges)
    k_r, n_r = _rate(flags[f"reco_{var}"], ~flags["real"], edges)

    def ratio(k: np.ndarray, n: np.ndarray) -> list[float]:
        return [float(a / b) if b else float("nan") for a, b in zip(k, n)]

    return {
        "edges": [float(e) for e in edges],
        "n_truth": [int(x) for x in n_t],
        "efficiency": ratio(k_t, n_t),
        "efficiency_unc": [binomial_uncertainty(a, b) for a, b in zip(k_t, n_t)],
        "n_reco": [int(x) for x in n_r],
        "fake_rate": ratio(k_r, n_r),
        "fake_rate_unc": [binomial_uncertainty(a, b) for a, b in zip(k_r, n_r)],
    }


def particle_response(
    truth: ak.Array, reco: ak.Array, cls: TargetClass, min_pt: float = MIN_PT
) -> dict[str, np.ndarray]:
    """Truth particles of one class matched to the closest candidate of that class within the class radius:
    flat ``truth_pt``, ``truth_eta`` and the ratios ``pt_ratio`` = reco/truth pT and ``e_ratio`` = reco/truth E.

    Candidates of any pT may match (only truth is cut at ``min_pt``), so the cut does not bias the response."""
    from .jets import match_jets

    t = truth[(truth.cls == int(cls)) & (truth.pt > min_pt)]
    r = reco[reco.cls == int(cls)]
    index = match_jets(t, r, MATCH_DR[cls])  # closest within the radius, -1 when none
    matched = index >= 0
    partner = r[index[matched]]
    tm = t[matched]
    return {
        "truth_pt": _flat_np(tm.pt),
        "truth_eta": _flat_np(tm.eta),
        "pt_ratio": _flat_np(partner.pt) / _flat_np(tm.pt),
        "e_ratio": _flat_np(partner.e) / _flat_np(tm.e),
    }
