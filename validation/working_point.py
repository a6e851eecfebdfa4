"""The decision working point of an MLPF model: per-class logit offsets chosen on a calibration sample.

A trained MLPF model gives class probabilities per element; the argmax is one working point among many. The
working point here is the one the issue states against the rule-based PF it replaces, per class on the same
events (:data:`RULES`):

* charged hadrons, photons, muons: efficiency at least PF's and fake rate at most PF's;
* neutral hadrons, electrons: the same, or a fake rate at most half of PF's with an efficiency at least
  0.9 x PF's.

This module finds per-class offsets ``b`` (``TargetClass`` order, added to the logits before the argmax; the
model's ``class_logit_bias``) that meet the rule **with the smallest change of the trained decision**:

* the offsets of ``NONE`` and ``CHARGED_HADRON`` stay 0 (the reference of the cluster and the track slots);
* for each other class in turn, with the other offsets fixed, the grid value closest to 0 that meets the rule
  is taken;
* the rule must hold by :data:`MARGIN_SIGMA` binomial standard deviations of the model's rates, so that
  it still holds on fresh samples (when no offset does, the rule without the margin; when none meets even
  that, the offset that comes closest: the smallest shortfall in standard deviations, :func:`rule_shortfall`,
  reported with the class as failing);
* two passes, because classes that compete for the same slots move each other's rates.

Moving a class far from the trained decision costs jet resolution (more candidates of a class means more
fakes whose energy is double-counted); the smallest offset keeps that cost small, and the driver prints the
jet and MET resolution before and after.

Efficiency and fake rate are the definitions of :mod:`hepzoo.validation.particles` (truth: the target slots;
candidates above 1 GeV matched within a class-dependent radius). The kinematics do not depend on the offsets
(the regression head reads the unbiased class probabilities), so they are computed once.

Choose the offsets on a **calibration sample** (``zoo/mlpf-v2-data.sh``: ttbar seed 206), never on the
held-out test samples. Driver: ``python -m hepzoo.validation.working_point`` (see :func:`main`).
"""

from __future__ import annotations

from collections.abc import Sequence

import awkward as ak
import numpy as np

from hepzoo.datasets.schema import TargetClass

from .diagnosis import Predict, candidates_from, jet_and_met, prediction_kinematics, release_predictor, snapshot_predictor
from .particles import class_flags, pf_particles, target_particles

FIXED_CLASSES = (TargetClass.NONE, TargetClass.CHARGED_HADRON)
TUNED_CLASSES = (TargetClass.NEUTRAL_HADRON, TargetClass.PHOTON, TargetClass.ELECTRON, TargetClass.MUON)
# (efficiency >= a x PF's and fake rate <= b x PF's) alternatives per class
RULES: dict[TargetClass, tuple[tuple[float, float], ...]] = {
    TargetClass.CHARGED_HADRON: ((1.0, 1.0),),
    TargetClass.PHOTON: ((1.0, 1.0),),
    TargetClass.MUON: ((1.0, 1.0),),
    TargetClass.NEUTRAL_HADRON: ((1.0, 1.0), (0.9, 0.5)),
    TargetClass.ELECTRON: ((1.0, 1.0), (0.9, 0.5)),
}
GRID = tuple(float(x) for x in np.round(np.arange(-3.0, 3.0001, 0.05), 2))
MARGIN_SIGMA = 1.0  # the rule must hold by this many binomial standard deviations of the calibration sample
PASSES = 2


def class_rates(truth: ak.Array, reco: ak.Array, cls: TargetClass) -> tuple[float, float, int, int]:
    """(efficiency, fake rate, truth count, candidate count) of one class (NaN where there is nothing to count)."""
    flags = class_flags(truth, reco, cls)
    found, real = flags["found"], flags["real"]
    eff = float(found.mean()) if len(found) else float("nan")
    fake = float(1.0 - real.mean()) if len(real) else float("nan")
    return eff, fake, len(found), len(real)


def _sigma(p: float, n: int) -> float:
    return float(np.sqrt(max(p * (1.0 - p), 1.0 / max(n, 1)) / max(n, 1)))


def meets_rule(
    cls: TargetClass, eff: float, fake: float, pf_eff: float, pf_fake: float, n_truth: int = 0, n_reco: int = 0,
    margin_sigma: float = 0.0,
) -> bool:
    """Does (efficiency, fake rate) meet the class's rule (:data:`RULES`) against PF's, by ``margin_sigma``
    binomial standard deviations of the model's rates (counts ``n_truth``, ``n_reco``)?"""
    if not (np.isfinite(eff) and np.isfinite(fake)):
        return False
    d_eff = margin_sigma * _sigma(eff, n_truth) if margin_sigma else 0.0
    d_fake = margin_sigma * _sigma(fake, n_reco) if margin_sigma else 0.0
    return any(eff - d_eff >= a * pf_eff and fake + d_fake <= b * pf_fake for a, b in RULES[cls])


def rule_shortfall(
    cls: TargetClass, eff: float, fake: float, pf_eff: float, pf_fake: float, n_truth: int, n_reco: int
) -> float:
    """How far (efficiency, fake rate) is from the class's rule against PF's, in binomial standard deviations of
    the model's rates: 0 where the rule is met, else the larger of the two shortfalls of the closest alternative."""
    if not (np.isfinite(eff) and np.isfinite(fake)):
        return float("inf")
    s_eff, s_fake = _sigma(eff, n_truth), _sigma(fake, n_reco)
    return min(
        max(0.0, (a * pf_eff - eff) / s_eff, (fake - b * pf_fake) / s_fake) for a, b in RULES[cls]
    )


class _Sample:
    """One calibration sample: its truth, PF and the model's candidates at any offsets."""

    def __init__(self, events: ak.Array, out: dict[str, np.ndarray], counts: np.ndarray) -> None:
        self.events = events
        self.logits = np.asarray(out["cls_logits"], dtype=np.float64)
        self.kin = prediction_kinematics(out)
        self.counts = counts
        self.truth = target_particles(events)
        self.pf = pf_particles(events)
        self.at_zero = self.reco(np.zeros(self.logits.shape[1]))  # the trained decision, reported next to the chosen

    def reco(self, bias: np.ndarray) -> ak.Array:
        return candidates_from((self.logits + bias).argmax(-1).astype(np.int32), self.kin, self.counts)

    def report(self, cls: TargetClass, bias: np.ndarray, margin_sigma: float) -> dict:
        pf_eff, pf_fake, _, _ = class_rates(self.truth, self.pf, cls)
        eff0, fake0, _, _ = class_rates(self.truth, self.at_zero, cls)
        eff, fake, n_t, n_r = class_rates(self.truth, self.reco(bias), cls)
        return {
            "offset": float(bias[int(cls)]), "pf_efficiency": pf_eff, "pf_fake_rate": pf_fake,
            "efficiency_at_0": eff0, "fake_rate_at_0": fake0, "efficiency": eff, "fake_rate": fake,
            "n_truth": n_t, "n_reco": n_r,
            "meets_rule": meets_rule(cls, eff, fake, pf_eff, pf_fake),
            "shortfall_sigma": rule_shortfall(cls, eff, fake, pf_eff, pf_fake, n_t, n_r),
            "meets_rule_with_margin": meets_rule(cls, eff, fake, pf_eff, pf_fake, n_t, n_r, margin_sigma),
        }


def choose_offsets(
    events: ak.Array,
    out: dict[str, np.ndarray],
    counts: np.ndarray,
    classes: Sequence[TargetClass] = TUNED_CLASSES,
    grid: Sequence[float] = GRID,
    passes: int = PASSES,
    margin_sigma: float = MARGIN_SIGMA,
) -> dict:
    """The working point (see the module docstring) for element-level predictions ``out`` of ``events``.

    Returns ``{"class_logit_bias": [...], "classes": {name: {offset, efficiency, fake_rate, pf_efficiency,
    pf_fake_rate, efficiency_at_0, fake_rate_at_0, ...}}, "jets_at_0", "jets"}``.
    """
    return choose_offsets_on([(events, out, counts)], classes, grid, passes, margin_sigma)


def choose_offsets_on(
    samples: Sequence[tuple[ak.Array, dict[str, np.ndarray], np.ndarray]],
    classes: Sequence[TargetClass] = TUNED_CLASSES,
    grid: Sequence[float] = GRID,
    passes: int = PASSES,
    margin_sigma: float = MARGIN_SIGMA,
) -> dict:
    """One working point for several calibration samples ``(events, out, counts)`` (e.g. ttbar and QCD): an
    offset meets a class's rule when it meets it on every sample; the shortfall is the largest over the samples.

    Returns the keys of :func:`choose_offsets` for the first sample, and ``"samples"``: the same per sample.
    """
    data = [_Sample(*s) for s in samples]
    bias = np.zeros(data[0].logits.shape[1])
    pf_rates = {cls: [class_rates(d.truth, d.pf, cls) for d in data] for cls in classes}
    for _ in range(passes):
        for cls in classes:
            rates: dict[float, list[tuple[float, float, int, int]]] = {}

            def against_pf(b: float, cls: TargetClass = cls) -> list[tuple]:
                """Per sample (eff, fake, PF eff, PF fake, n_truth, n_reco) at offset b: the rule functions' arguments."""
                if b not in rates:
                    trial = bias.copy()
                    trial[int(cls)] = b
                    rates[b] = [class_rates(d.truth, d.reco(trial), cls) for d in data]
                return [(e, f, pf[0], pf[1], n_t, n_r) for (e, f, n_t, n_r), pf in zip(rates[b], pf_rates[cls])]

            def meets(b: float, margin: float, cls: TargetClass = cls) -> bool:
                return all(meets_rule(cls, *args, margin_sigma=margin) for args in against_pf(b))

            ordered = sorted(grid, key=lambda v: (abs(v), v))  # closest to the trained decision first
            chosen = None
            for margin in (margin_sigma, 0.0):  # without the margin only when no offset meets it with one
                chosen = next((b for b in ordered if meets(b, margin)), None)
                if chosen is not None:
                    break
            if chosen is None:  # nothing meets the rule: the offset that comes closest (ties: closest to 0)
                chosen = min(ordered, key=lambda b: max(rule_shortfall(cls, *args) for args in against_pf(b)))
            bias[int(cls)] = float(chosen) + 0.0
    per_sample = [
        {
            "classes": {cls.name: d.report(cls, bias, margin_sigma) for cls in classes},
            "jets_at_0": jet_and_met(d.events, d.at_zero),
            "jets": jet_and_met(d.events, d.reco(bias)),
        }
        for d in data
    ]
    return {"class_logit_bias": [float(b) for b in bias], **per_sample[0], "samples": per_sample}


def _verdict(r: dict) -> str:
    if r["meets_rule"]:
        return f"yes ({'yes' if r['meets_rule_with_margin'] else 'no'})"
    return f"no, {r.get('shortfall_sigma', float('nan')):.1f} sigma short (no)"


def format_working_point(result: dict, label: str) -> str:
    lines = [f"#### working point of {label}", "", f"class_logit_bias (TargetClass order): {result['class_logit_bias']}"]
    for per in result.get("samples", [result]):
        lines += [
            "",
            f"calibration sample: {per.get('events', {}).get('file', '(in memory)')}",
            "",
            "| class | offset | efficiency at 0 -> chosen | fake rate at 0 -> chosen | PF efficiency | PF fake rate | rule met (with margin) |",
            "|---|---:|---|---|---:|---:|---|",
        ]
        for name, r in per["classes"].items():
            lines.append(
                f"| {name} | {r['offset']:+.2f} | {r['efficiency_at_0']:.3f} -> {r['efficiency']:.3f} | "
                f"{r['fake_rate_at_0']:.3f} -> {r['fake_rate']:.3f} | {r['pf_efficiency']:.3f} | {r['pf_fake_rate']:.3f} | {_verdict(r)} |"
            )
        j0, j = per["jets_at_0"], per["jets"]
        lines += [
            "",
            f"jet IQR/median {j0['jet']['iqr_over_median']:.4f} -> {j['jet']['iqr_over_median']:.4f}, "
            f"median {j0['jet']['median']:.4f} -> {j['jet']['median']:.4f}; "
            f"MET IQR/median {j0['met']['iqr_over_median']:.4f} -> {j['met']['iqr_over_median']:.4f}",
        ]
    return "\n".join(lines)


def working_point(events: ak.Array | Sequence[ak.Array], predict: Predict) -> dict:
    """The working point of ``predict`` on one calibration sample, or one for several (the rule on each)."""
    from hepzoo.datasets.elements import element_features

    samples = []
    for ev in [events] if isinstance(events, ak.Array) else list(events):
        features, offsets = element_features(ev)
        samples.append((ev, predict(features, offsets), np.diff(offsets)))
    return choose_offsets_on(samples)


def main(argv: list[str] | None = None) -> int:
    """``python -m hepzoo.validation.working_point --events CALIB.root [--events CALIB2.root ...] (--model
    NAME/VERSION | --snapshot PT --config YAML) [-n N] [--decoding NAME=true] [--json OUT]``: prints the working
    point and the offsets for ``class_logit_bias``."""
    import argparse
    import json

    from hepzoo.datasets.io import num_entries, read_range

    ap = argparse.ArgumentParser(prog="python -m hepzoo.validation.working_point", description=main.__doc__)
    ap.add_argument("--events", required=True, action="append",
                    help="calibration ROOT file (not a held-out test sample); repeat for several (the rule must hold on each)")
    ap.add_argument("--model", help="zoo release NAME/VERSION")
    ap.add_argument("--snapshot", help="training checkpoint or weights file (.pt)")
    ap.add_argument("--config", help="training config of --snapshot (its model section is used)")
    ap.add_argument("-n", type=int, default=2000, help="events to read from each file (at most; fewer where a file has fewer)")
    ap.add_argument("--json", help="write the result to this JSON file")
    ap.add_argument("--decoding", action="append", default=[],
                    help="NAME=true|false: a decoding option of the --snapshot model (repeatable), e.g. massless_clusters=true")
    args = ap.parse_args(argv)
    samples = [read_range(path, 0, min(args.n, num_entries(path))) for path in args.events]
    from hepzoo.models.mlpf_common import parse_decoding

    decoding = parse_decoding(args.decoding)
    if args.model and decoding:
        ap.error("--decoding applies to --snapshot (a release keeps its own decoding)")
    if args.model:
        label, predict = release_predictor(args.model)
    elif args.snapshot and args.config:
        # the trained decision: a working point already in the config is not applied before choosing a new one
        label, predict = args.snapshot, snapshot_predictor(
            args.snapshot, args.config, class_logit_bias=None, **decoding
        )
    else:
        ap.error("give --model, or --snapshot with --config")
    result = working_point(samples, predict)
    files = [{"file": path, "n": len(ev)} for path, ev in zip(args.events, samples)]
    result["events"] = files[0]
    for entry, per in zip(files, result["samples"]):
        per["events"] = entry
    result["decoding"] = decoding
    print(format_working_point(result, label))
    if args.json:
        from hepzoo.datasets.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
