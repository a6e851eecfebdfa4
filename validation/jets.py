"""Jet-level physics metrics: generator-jet matching, response median and resolution (IQR / median)."""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np

# Matching radius between a generator jet and a reconstructed jet (both anti-kt R=0.4).
MATCH_DR = 0.1


@dataclass(frozen=True)
class ResponseSummary:
    n: int
    median: float
    iqr_over_median: float

    def as_dict(self) -> dict[str, float]:
        return {"n": self.n, "median": self.median, "iqr_over_median": self.iqr_over_median}


def summarize_response(ratios: np.ndarray) -> ResponseSummary:
    """Median and IQR/median of reco/gen ratios: robust against the non-Gaussian tails of jet response."""
    ratios = np.asarray(ratios, dtype=np.float64)
    if len(ratios) == 0:
        return ResponseSummary(0, float("nan"), float("nan"))
    q25, q50, q75 = np.percentile(ratios, [25, 50, 75])
    return ResponseSummary(len(ratios), float(q50), float((q75 - q25) / q50) if q50 != 0 else float("nan"))


def match_jets(gen: ak.Array, reco: ak.Array, max_dr: float = MATCH_DR) -> ak.Array:
    """For each generator jet, the index of the closest reco jet within ``max_dr`` (else -1), per event.

    ``gen`` and ``reco`` are jagged records with ``eta`` and ``phi``. Anti-kt R=0.4 generator jets are at least
    0.4 apart, so with ``max_dr`` <= 0.2 no reco jet can be matched to two generator jets.
    """
    pairs = ak.cartesian({"g": gen, "r": reco}, axis=1, nested=True)
    deta = pairs.g.eta - pairs.r.eta
    dphi = (pairs.g.phi - pairs.r.phi + np.pi) % (2 * np.pi) - np.pi
    dr = np.sqrt(deta**2 + dphi**2)
    best = ak.argmin(dr, axis=2, keepdims=True)
    best_dr = ak.fill_none(ak.firsts(dr[best], axis=2), np.inf)
    best = ak.fill_none(ak.firsts(best, axis=2), -1)
    return ak.where(best_dr < max_dr, best, -1)


def jet_response(
    gen: ak.Array, reco: ak.Array, gen_min_pt: float = 20.0, max_abs_eta: float = 2.5, max_dr: float = MATCH_DR
) -> tuple[np.ndarray, np.ndarray, float]:
    """Matched (gen pT, reco/gen pT ratio) pairs and the matching efficiency for selected generator jets."""
    selected = gen[(gen.pt > gen_min_pt) & (np.abs(gen.eta) < max_abs_eta)]
    index = match_jets(selected, reco, max_dr)
    matched = index >= 0
    reco_pt = reco.pt[index[matched]]
    gen_pt = ak.to_numpy(ak.flatten(selected.pt[matched])).astype(np.float64)
    ratio = ak.to_numpy(ak.flatten(reco_pt)).astype(np.float64) / gen_pt
    n_selected = int(ak.sum(ak.num(selected, axis=1)))
    efficiency = len(gen_pt) / n_selected if n_selected else float("nan")
    return gen_pt, ratio, efficiency


def binned_response(gen_pt: np.ndarray, ratio: np.ndarray, edges: np.ndarray) -> list[dict[str, float]]:
    """Response summary in bins of generator-jet pT."""
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (gen_pt >= lo) & (gen_pt < hi)
        rows.append({"pt_lo": float(lo), "pt_hi": float(hi), **summarize_response(ratio[sel]).as_dict()})
    return rows
