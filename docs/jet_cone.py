"""Jet matching efficiency against the matching radius, and a matching-free cone response, of training snapshots.

Used for the jet-loss ablation in docs/mlpf-physics.md (section 2). For every selected generator jet (pT > 20 GeV,
|eta| < 2.5, as in hepzoo.validation.jets) the cone response is |pT vector sum of the candidates within dR 0.4 of
the generator jet axis| / generator jet pT: no clustering, no matching, so energy that anti-kt would build into a
displaced or extra jet still counts if it is near the jet.

    python docs/jet_cone.py --events data/v2/ttbar_calib.root -n 2000 [--decoding massless_clusters=true] RUN_DIR [RUN_DIR ...]

RUN_DIR holds a training run's config.yaml and last.pt. PF is printed first.
"""

from __future__ import annotations

import argparse

import awkward as ak
import numpy as np

from hepzoo.datasets.elements import element_features
from hepzoo.datasets.io import read_range
from hepzoo.datasets.jets import antikt_jets
from hepzoo.models.mlpf_common import parse_decoding
from hepzoo.validation.diagnosis import JET_PT_EDGES, candidates_from, prediction_kinematics, snapshot_predictor
from hepzoo.validation.jets import jet_response, summarize_response


def cone_response(events: ak.Array, cand: ak.Array, radius: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """(generator jet pT, cone response) of the selected generator jets."""
    g = events.genjet
    g = g[(g.pt > 20) & (abs(g.eta) < 2.5)]
    pairs = ak.cartesian({"g": g, "c": cand}, axis=1, nested=True)
    dphi = (pairs.g.phi - pairs.c.phi + np.pi) % (2 * np.pi) - np.pi
    inside = np.hypot(pairs.g.eta - pairs.c.eta, dphi) < radius
    px = ak.sum(ak.where(inside, pairs.c.pt * np.cos(pairs.c.phi), 0), axis=2)
    py = ak.sum(ak.where(inside, pairs.c.pt * np.sin(pairs.c.phi), 0), axis=2)
    return ak.to_numpy(ak.flatten(g.pt)), ak.to_numpy(ak.flatten(np.hypot(px, py) / g.pt))


def report(label: str, events: ak.Array, cand: ak.Array) -> str:
    jets = antikt_jets(cand.pt, cand.eta, cand.phi, cand.e)
    row = [label]
    for dr in (0.1, 0.2, 0.3):
        _, ratio, eff = jet_response(events.genjet, jets, max_dr=dr)
        row.append(f"dR<{dr}: eff {eff:.3f} IQR/med {summarize_response(ratio).iqr_over_median:.3f}")
    gpt, r = cone_response(events, cand)
    edges = list(zip(JET_PT_EDGES[:-1], JET_PT_EDGES[1:]))
    bins = [summarize_response(r[(gpt >= a) & (gpt < b)]).iqr_over_median for a, b in edges]
    row.append(f"cone: {summarize_response(r).iqr_over_median:.3f} (" + " / ".join(f"{x:.3f}" for x in bins) + ")")
    return " | ".join(row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", required=True)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--decoding", action="append", default=[], help="NAME=true|false decoding option for every run")
    ap.add_argument("runs", nargs="*")
    args = ap.parse_args()
    decoding = parse_decoding(args.decoding)
    events = read_range(args.events, 0, args.n)
    features, offsets = element_features(events)
    counts = np.diff(offsets)
    pf = events.pf
    print(report("PF", events, ak.zip({"cls": pf.cls, "pt": pf.pt, "eta": pf.eta, "phi": pf.phi, "e": pf.e})))
    for run in args.runs:
        out = snapshot_predictor(f"{run}/last.pt", f"{run}/config.yaml", **decoding)(features, offsets)
        cls = out["cls_logits"].argmax(-1).astype(np.int32)
        print(report(run, events, candidates_from(cls, prediction_kinematics(out), counts)), flush=True)


if __name__ == "__main__":
    main()
