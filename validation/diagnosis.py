"""MLPF diagnosis: where a model loses against the rule-based PF (oracle ablations, per-element response).

Everything here works on **element-aligned** predictions (one row per input element, tracks then clusters,
exactly like the ``tgt_`` targets), so a model's classes and kinematics can be swapped one at a time for the
truth:

* ``model``              predicted classes, predicted kinematics (what the model delivers);
* ``pred cls + true kin`` predicted classes, target kinematics: the loss due to regression alone is removed;
* ``true cls + pred kin`` target classes, predicted kinematics: the loss due to classification is removed;
* ``true cls + element`` target classes, the element's own measurement (track pT/p, cluster ET/E): what a
  model with perfect classification and *no* regression would give (how much the regression must do);
* ``resolution floor``   target classes; track slots keep their track, cluster slots get the target energy
  smeared by the detector's own single-particle resolution (EM for photons and electrons, hadron for neutral
  hadrons, HF terms in the HF; ``DetectorConfig``; seeded by :data:`FLOOR_SEED`): what a reconstruction that
  untangles every overlap perfectly could reach with these calorimeters;
* ``targets``            target classes and kinematics (the truth definition's floor);
* ``PF``                 the rule-based PF candidates of the same events.

For each: jet response median and IQR/median (anti-kt R=0.4, generator jets above 20 GeV, |eta| < 2.5,
inclusive and in generator pT bins) and MET response IQR/median. Per element type, the pT and E response
(reco / target) of slots with a particle target is given for the model, the raw element and the PF candidate
built from that element (``pf_trk_idx`` / ``pf_clu_idx``), with the classification accuracy. Per element type,
two more oracles say where the remaining loss sits: the model with the target kinematics on that type's slots
only, and with the target classes on that type's slots only.

``predict`` callables return ``{"cls_logits", "charge_logits", "regression"}`` flat per element (the runtime's
``Session.run_elements`` does; :func:`hepzoo.validation.mlpf.torch_predictor` wraps a PyTorch model, used for
training snapshots).
:func:`learning_curve` evaluates the snapshots a training run keeps (``snapshot_every_steps``) against events seen.
The driver is ``python -m hepzoo.validation.diagnosis`` (see :func:`main`).
"""

from __future__ import annotations

from collections.abc import Callable

import awkward as ak
import numpy as np

from hepzoo.datasets.jets import antikt_jets
from hepzoo.datasets.schema import ElementFeature, ElementType, TargetClass
from hepzoo.models.mlpf_decode import kinematics

from .jets import jet_response, summarize_response
from .met import gen_missing_et, met_response, missing_et

EF = ElementFeature
Predict = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]
JET_PT_EDGES = (20.0, 40.0, 60.0, 100.0, 200.0, 1000.0)
ABLATIONS = ("model", "pred cls + true kin", "true cls + pred kin", "true cls + element", "resolution floor", "targets",
             "PF")  # fmt: skip
FLOOR_SEED = 20261207  # smearing of the resolution floor (recorded in every diagnosis result)


def _targets_flat(events: ak.Array) -> dict[str, np.ndarray]:
    tgt = events.tgt
    flat = {name: ak.to_numpy(ak.flatten(tgt[name])) for name in tgt.fields}
    return {
        "cls": flat["cls"].astype(np.int32),
        "pt": flat["pt"].astype(np.float32),
        "eta": flat["eta"].astype(np.float32),
        "phi": np.arctan2(flat["sin_phi"], flat["cos_phi"]).astype(np.float32),
        "e": flat["e"].astype(np.float32),
    }


def _element_kinematics(features: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "pt": features[:, EF.PT],
        "eta": features[:, EF.ETA],
        "phi": np.arctan2(features[:, EF.SIN_PHI], features[:, EF.COS_PHI]).astype(np.float32),
        "e": features[:, EF.E],
    }


def prediction_kinematics(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``pt, eta, phi, e`` of the model's ``regression`` output (the MLPF decoder's columns)."""
    return kinematics(out["regression"])


def candidates_from(cls: np.ndarray, kin: dict[str, np.ndarray], counts: np.ndarray) -> ak.Array:
    keep = cls != int(TargetClass.NONE)
    fields = {"cls": cls, **kin}
    arr = ak.zip({k: ak.unflatten(np.asarray(v), counts) for k, v in fields.items()})
    return arr[ak.unflatten(keep, counts)]


def jet_and_met(events: ak.Array, cand: ak.Array) -> dict:
    jets = antikt_jets(cand.pt, cand.eta, cand.phi, cand.e)
    gen_pt, ratio, eff = jet_response(events.genjet, jets)
    binned = []
    for lo, hi in zip(JET_PT_EDGES[:-1], JET_PT_EDGES[1:]):
        sel = (gen_pt >= lo) & (gen_pt < hi)
        binned.append({"lo": lo, "hi": hi, **summarize_response(ratio[sel]).as_dict()})
    _, met_ratio = met_response(missing_et(cand.pt, cand.phi), gen_missing_et(events))
    return {
        "jet": summarize_response(ratio).as_dict(),
        "jet_matching_efficiency": eff,
        "jet_binned": binned,
        "met": summarize_response(met_ratio).as_dict(),
    }


def resolution_floor_kinematics(
    cls: np.ndarray, true_kin: dict[str, np.ndarray], elem: dict[str, np.ndarray], etype: np.ndarray,
    seed: int = FLOOR_SEED,
) -> dict[str, np.ndarray]:
    """Kinematics of the ``resolution floor`` row: track slots their track, cluster slots the target direction and
    the target energy times ``1 + sigma(E) * N(0, 1)`` (floored at 0.05), sigma the detector configuration's
    single-particle resolution for the target's class and calorimeter."""
    from hepzoo.datasets.detector_config import DetectorConfig

    cfg = DetectorConfig()
    e = np.maximum(true_kin["e"].astype(np.float64), 1e-3)
    em = np.isin(cls, [int(TargetClass.PHOTON), int(TargetClass.ELECTRON)])
    hf = etype == int(ElementType.HF_CLUSTER)
    hf_em = np.sqrt(cfg.hf_em_a**2 / e + cfg.hf_em_c**2)
    rel = np.where(hf, np.where(em, hf_em, cfg.hf_had_resolution(e)),
                   np.where(em, cfg.em_resolution(e, true_kin["eta"]), cfg.had_resolution(e)))  # fmt: skip
    factor = np.clip(1.0 + rel * np.random.default_rng(seed).standard_normal(e.size), 0.05, None)
    cluster = etype != int(ElementType.TRACK)
    out = {k: np.where(cluster, true_kin[k], elem[k]) for k in ("pt", "eta", "phi", "e")}
    out["pt"] = np.where(cluster, true_kin["pt"] * factor, out["pt"]).astype(np.float32)
    out["e"] = np.where(cluster, true_kin["e"] * factor, out["e"]).astype(np.float32)
    return out


def per_type_oracles(
    events: ak.Array, counts: np.ndarray, etype: np.ndarray, pred_cls: np.ndarray, pred: dict, tgt: dict
) -> dict[str, dict]:
    """Per element type: jets and MET of the model with the target kinematics on that type's slots only
    (``true kin``) and with the target classes on that type's slots only (``true cls``)."""
    out = {}
    for t in ElementType:
        of_type = etype == int(t)
        if not of_type.any():
            continue
        with_target = of_type & (tgt["cls"] != 0)
        kin = {k: np.where(with_target, tgt[k], pred[k]) for k in pred}
        out[t.name] = {
            "true kin": jet_and_met(events, candidates_from(pred_cls, kin, counts)),
            "true cls": jet_and_met(events, candidates_from(np.where(of_type, tgt["cls"], pred_cls), pred, counts)),
        }
    return out


def _ratio_summary(reco: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    ok = truth > 0
    return summarize_response(reco[ok] / truth[ok]).as_dict()


def _pf_per_element(events: ak.Array, counts_trk: np.ndarray, counts_clu: np.ndarray) -> dict[str, np.ndarray]:
    """PF candidate pT/E per element slot (tracks: by ``pf_trk_idx``; clusters: neutral candidates by
    ``pf_clu_idx``); 0 where the element made no PF candidate."""
    n = counts_trk + counts_clu
    off = np.concatenate([[0], np.cumsum(n)])
    pt = np.zeros(int(off[-1]), np.float32)
    e = np.zeros(int(off[-1]), np.float32)
    pf = events.pf
    ev = np.repeat(np.arange(len(events)), ak.to_numpy(ak.num(pf, axis=1)))
    trk_idx = ak.to_numpy(ak.flatten(pf.trk_idx))
    clu_idx = ak.to_numpy(ak.flatten(pf.clu_idx))
    ppt, pe = ak.to_numpy(ak.flatten(pf.pt)), ak.to_numpy(ak.flatten(pf.e))
    has_trk = trk_idx >= 0
    rows = off[ev[has_trk]] + trk_idx[has_trk]
    np.add.at(pt, rows, ppt[has_trk])
    np.add.at(e, rows, pe[has_trk])
    neutral = ~has_trk & (clu_idx >= 0)
    rows = off[ev[neutral]] + counts_trk[ev[neutral]] + clu_idx[neutral]
    np.add.at(pt, rows, ppt[neutral])
    np.add.at(e, rows, pe[neutral])
    return {"pt": pt, "e": e}


def diagnose(events: ak.Array, predict: Predict) -> dict:
    """The diagnosis tables (see the module docstring) of one model on ``events``."""
    from hepzoo.datasets.elements import element_counts, element_features

    features, offsets = element_features(events)
    counts = np.diff(offsets)
    out = predict(features, offsets)
    pred_cls = out["cls_logits"].argmax(-1).astype(np.int32)
    pred = prediction_kinematics(out)
    tgt = _targets_flat(events)
    true_kin = {k: tgt[k] for k in ("pt", "eta", "phi", "e")}
    elem = _element_kinematics(features)

    etype = features[:, EF.TYPE].astype(np.int32)
    pf = events.pf
    recos = {
        "model": candidates_from(pred_cls, pred, counts),
        "pred cls + true kin": candidates_from(np.where(tgt["cls"] != 0, pred_cls, 0), true_kin, counts),
        "true cls + pred kin": candidates_from(tgt["cls"], pred, counts),
        "true cls + element": candidates_from(tgt["cls"], elem, counts),
        "resolution floor": candidates_from(
            tgt["cls"], resolution_floor_kinematics(tgt["cls"], true_kin, elem, etype), counts
        ),
        "targets": candidates_from(tgt["cls"], true_kin, counts),
        "PF": ak.zip({"cls": pf.cls, "pt": pf.pt, "eta": pf.eta, "phi": pf.phi, "e": pf.e}),
    }
    ablations = {name: jet_and_met(events, cand) for name, cand in recos.items()}
    # pred cls + true kin: a slot predicted as a particle but with no target has no true kinematics; it is
    # dropped there (its energy is a fake the regression cannot fix), so also report how many such slots exist.
    fakes = (pred_cls != 0) & (tgt["cls"] == 0)

    ntrk, nclu = element_counts(events)
    pf_elem = _pf_per_element(events, ntrk, nclu)
    per_type = {}
    for t in ElementType:
        sel = (etype == int(t)) & (tgt["cls"] != 0)
        if not sel.any():
            continue
        made = pf_elem["e"][sel] > 0
        per_type[t.name] = {
            "n_with_target": int(sel.sum()),
            "n_without_target": int(((etype == int(t)) & (tgt["cls"] == 0)).sum()),
            "class_accuracy": float((pred_cls[sel] == tgt["cls"][sel]).mean()),
            "predicted_none": float((pred_cls[sel] == 0).mean()),
            "fake_particle_rate": float(((pred_cls != 0) & (tgt["cls"] == 0) & (etype == int(t))).sum())
            / max(1, int((etype == int(t)).sum())),
            "pt_model": _ratio_summary(pred["pt"][sel], tgt["pt"][sel]),
            "pt_element": _ratio_summary(elem["pt"][sel], tgt["pt"][sel]),
            "e_model": _ratio_summary(pred["e"][sel], tgt["e"][sel]),
            "e_element": _ratio_summary(elem["e"][sel], tgt["e"][sel]),
            "e_pf": _ratio_summary(pf_elem["e"][sel][made], tgt["e"][sel][made]),
            "pf_made_candidate": float(made.mean()),
        }
    return {
        "n_events": len(events),
        "ablations": ablations,
        "predicted_particle_without_target": int(fakes.sum()),
        "per_element_type": per_type,
        "per_type_oracles": per_type_oracles(events, counts, etype, pred_cls, pred, tgt),
        "resolution_floor_seed": FLOOR_SEED,
    }


def learning_curve(run_dir, events: ak.Array, every: int = 1) -> list[dict]:
    """Validation loss and jet/MET resolution against training events seen, from a training run's snapshots
    (``snapshot_every_steps``): one row per snapshot (every ``every``-th), ``{step, events, val_total, jet_median,
    jet_iqr_over_median, met_iqr_over_median}``, evaluated with the run's own model config on ``events``."""
    import json
    from pathlib import Path

    run = Path(run_dir)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    snaps = [r for r in records if "snapshot" in r][::every]
    rows = []
    for r in snaps:
        snap = run / r["snapshot"]  # logged relative to the run folder (older runs: as given at the time)
        predict = snapshot_predictor(snap if snap.is_file() else Path(r["snapshot"]), run / "config.yaml")
        res = diagnose(events, predict)["ablations"]["model"]
        rows.append({"step": r["step"], "events": r["events"], "val_total": r["val"]["total"] if r["val"] else None,
                     "jet_median": res["jet"]["median"], "jet_iqr_over_median": res["jet"]["iqr_over_median"],
                     "met_iqr_over_median": res["met"]["iqr_over_median"]})  # fmt: skip
    return rows


def format_learning_curve(rows: list[dict], label: str) -> str:
    lines = [f"### {label}", "", "| step | events seen | validation loss | jet median | jet IQR/median | MET IQR/median |",
             "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        val = f"{r['val_total']:.4f}" if r["val_total"] is not None else "-"
        lines.append(f"| {r['step']} | {r['events']} | {val} | {r['jet_median']:.3f} | {r['jet_iqr_over_median']:.3f} |"
                     f" {r['met_iqr_over_median']:.3f} |")  # fmt: skip
    return "\n".join(lines)


def format_diagnosis(result: dict, label: str) -> str:
    """Markdown tables of one diagnosis."""
    lines = [f"### {label} ({result['n_events']} events)", "", "| reconstruction | jet median | jet IQR/median |"
             " IQR/median by gen pT " + " / ".join(f"{lo:.0f}-{hi:.0f}" for lo, hi in zip(JET_PT_EDGES[:-1], JET_PT_EDGES[1:]))
             + " | MET IQR/median |", "|---|---:|---:|---|---:|"]  # fmt: skip
    for name in ABLATIONS:
        a = result["ablations"][name]
        binned = " / ".join(f"{b['iqr_over_median']:.3f}" for b in a["jet_binned"])
        lines.append(
            f"| {name} | {a['jet']['median']:.3f} | {a['jet']['iqr_over_median']:.3f} | {binned} |"
            f" {a['met']['iqr_over_median']:.3f} |"
        )
    lines += ["", "| oracle on one element type | jet median | jet IQR/median | by gen pT | MET IQR/median |",
              "|---|---:|---:|---|---:|"]  # fmt: skip
    for t, rows in result.get("per_type_oracles", {}).items():
        for kind, a in rows.items():
            binned = " / ".join(f"{b['iqr_over_median']:.3f}" for b in a["jet_binned"])
            lines.append(f"| {kind} on {t} slots | {a['jet']['median']:.3f} | {a['jet']['iqr_over_median']:.3f} |"
                         f" {binned} | {a['met']['iqr_over_median']:.3f} |")  # fmt: skip
    lines += ["", f"Slots predicted as a particle without a target: {result['predicted_particle_without_target']}", "",
              "| element type | slots with target / without | class accuracy | predicted none | fake rate |"
              " E response model (median, IQR/med) | element | PF |", "|---|---:|---:|---:|---:|---|---|---|"]  # fmt: skip
    for t, r in result["per_element_type"].items():

        def fmt(s: dict) -> str:
            return f"{s['median']:.3f}, {s['iqr_over_median']:.3f}"

        lines.append(
            f"| {t} | {r['n_with_target']} / {r['n_without_target']} | {r['class_accuracy']:.3f} |"
            f" {r['predicted_none']:.3f} | {r['fake_particle_rate']:.3f} | {fmt(r['e_model'])} |"
            f" {fmt(r['e_element'])} | {fmt(r['e_pf'])} |"
        )
    return "\n".join(lines)


def release_predictor(spec: str) -> tuple[str, Predict]:
    """(``NAME/VERSION``, element-level predictor) of a zoo release ``NAME`` or ``NAME/VERSION``: the deployed
    ``model.onnx`` on ONNX Runtime CPU."""
    from hepzoo.runtime import Session

    name, _, version = spec.partition("/")
    sess = Session.load(name, version=version or None, backend="onnxruntime-cpu")
    return f"{sess.name}/{sess.version}", sess.run_elements


def snapshot_predictor(path, config, **kwargs) -> Predict:
    """Element-level predictor of training weights ``path`` (a checkpoint, snapshot or weights file) built from the
    model section of the training config ``config`` (``kwargs`` override the model's keyword arguments)."""
    from hepzoo.training.checkpoint import load_weights_file
    from hepzoo.training.config import load_config
    from hepzoo.training.loop import build_model

    from .mlpf import torch_predictor

    cfg = load_config(config).model
    model = build_model(cfg.model_copy(update={"kwargs": {**cfg.kwargs, **kwargs}}))
    model.load_state_dict(load_weights_file(path))
    return torch_predictor(model)


def main(argv: list[str] | None = None) -> int:
    """``python -m hepzoo.validation.diagnosis --events FILE [--model NAME[/VERSION] ...] [--snapshot PT
    --config YAML] [-n N] [--json OUT]``: prints the diagnosis tables (markdown)."""
    import argparse
    import json

    from hepzoo.datasets.io import read_range

    ap = argparse.ArgumentParser(prog="python -m hepzoo.validation.diagnosis", description=main.__doc__)
    ap.add_argument("--events", required=True, help="held-out ROOT file in the hepzoo schema")
    ap.add_argument("--model", action="append", default=[], help="zoo release NAME or NAME/VERSION (repeatable)")
    ap.add_argument("--snapshot", action="append", default=[], help="training checkpoint or snapshot (.pt)")
    ap.add_argument("--config", action="append", default=[],
                    help="training config (model section) of each --snapshot, in order; one config serves them all")
    ap.add_argument("--run", action="append", default=[], help="training run folder: learning curve of its snapshots")
    ap.add_argument("-n", type=int, default=1000, help="events to read")
    ap.add_argument("--json", help="write all results to this JSON file")
    ap.add_argument("--decoding", action="append", default=[],
                    help="NAME=true|false: a decoding option applied to every --snapshot (repeatable)")
    args = ap.parse_args(argv)
    from hepzoo.models.mlpf_common import parse_decoding

    decoding = parse_decoding(args.decoding)
    events = read_range(args.events, 0, args.n)
    results = {}
    for spec in args.model:
        label, predict = release_predictor(spec)
        results[label] = diagnose(events, predict)
    if args.snapshot and len(args.config) not in (1, len(args.snapshot)):
        ap.error(f"give one --config, or one per --snapshot ({len(args.snapshot)}), not {len(args.config)}")
    for i, path in enumerate(args.snapshot):
        config = args.config[i if len(args.config) > 1 else 0]
        results[f"{path} ({config})"] = diagnose(events, snapshot_predictor(path, config, **decoding))
    for label, res in results.items():
        print(format_diagnosis(res, label), "\n")
    for run in args.run:
        rows = learning_curve(run, events)
        results[f"learning curve {run}"] = rows
        print(format_learning_curve(rows, f"learning curve: {run}"), "\n")
    if args.json:
        from hepzoo.datasets.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
