"""Run an MLPF model over events and compare it with the rule-based PF baseline on the same events.

This evaluates the PyTorch model directly (used for training-time comparisons); the deployed-artifact
validation of the runtime calls the same metric functions on the runtime's outputs. torch is imported only by
:func:`torch_predictor`: ``hepzoo validate`` of an exported model runs without it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import awkward as ak
import numpy as np

from hepzoo.datasets.jets import antikt_jets
from hepzoo.datasets.elements import element_features
from hepzoo.datasets.ragged import DEFAULT_BUCKETS, group_by_bucket, pad
from hepzoo.datasets.schema import TargetClass
from hepzoo.models.mlpf_decode import CHARGE_CLASSES, REGRESSION_FEATURES, decode_candidates

from .jets import binned_response, jet_response, summarize_response
from .particles import efficiency_and_fake_rate, pf_particles, target_particles

if TYPE_CHECKING:
    import torch

JET_PT_EDGES = np.array([20.0, 40.0, 60.0, 100.0, 200.0, 1000.0])


def torch_predictor(model: torch.nn.Module, batch_size: int = 32, buckets: Sequence[int] = DEFAULT_BUCKETS):
    """``predict(features, offsets) -> {"cls_logits", "charge_logits", "regression"}`` flat per element: a PyTorch
    MLPF model run in eval mode without gradients, events grouped by size bucket (rounded up to the model's element
    granularity) and padded, ``batch_size`` events per call."""
    import torch

    @torch.no_grad()
    def predict(features: np.ndarray, offsets: np.ndarray) -> dict[str, np.ndarray]:
        model.eval()
        counts = np.diff(offsets)
        n = int(offsets[-1])
        res: dict[str, np.ndarray | None] = {"cls_logits": None, "charge_logits": None, "regression": None}
        granularity = int(getattr(model, "element_granularity", 1))
        for size, index in group_by_bucket(counts, buckets).items():
            size = -(-size // granularity) * granularity
            for start in range(0, len(index), batch_size):
                chosen = index[start : start + batch_size]
                rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in chosen])
                sub_offsets = np.concatenate([[0], np.cumsum(counts[chosen])])
                x, mask = pad(features[rows], sub_offsets, size)
                outs = model(torch.from_numpy(x), torch.from_numpy(mask))
                m = torch.from_numpy(mask)
                for key, value in zip(res, outs):
                    v = value[m].numpy()
                    if res[key] is None:
                        res[key] = np.zeros((n, v.shape[-1]), np.float32)
                    res[key][rows] = v
        return res

    return predict


def predict_candidates(
    model: torch.nn.Module, events: ak.Array, batch_size: int = 32, buckets: Sequence[int] = DEFAULT_BUCKETS
) -> ak.Array:
    """MLPF candidates per event (records cls, charge, pt, eta, phi, e), empty slots removed, event order kept:
    the MLPF decoder (:func:`hepzoo.models.mlpf_decode.decode_candidates`, as the runtime's) on the outputs."""
    features, offsets = element_features(events)
    out = torch_predictor(model, batch_size, buckets)(features, offsets)
    if out["cls_logits"] is None:  # no elements at all
        out = {"cls_logits": np.zeros((0, len(TargetClass)), np.float32),
               "charge_logits": np.zeros((0, len(CHARGE_CLASSES)), np.float32),
               "regression": np.zeros((0, len(REGRESSION_FEATURES)), np.float32)}  # fmt: skip
    return decode_candidates(out, offsets)


def reconstruction_metrics(events: ak.Array, candidates: ak.Array) -> dict:
    """Per-class efficiency/fake rate against the targets, and jet response against generator jets."""
    jets = antikt_jets(candidates.pt, candidates.eta, candidates.phi, candidates.e)
    gen_pt, ratio, efficiency = jet_response(events.genjet, jets)
    return {
        "particles": efficiency_and_fake_rate(target_particles(events), candidates),
        "jets": {
            "matching_efficiency": efficiency,
            "inclusive": summarize_response(ratio).as_dict(),
            "binned": binned_response(gen_pt, ratio, JET_PT_EDGES),
        },
    }


def compare_with_baseline(model: torch.nn.Module, events: ak.Array, batch_size: int = 32) -> dict:
    """Side-by-side metrics of the MLPF model and the rule-based PF on the same events."""
    return {
        "mlpf": reconstruction_metrics(events, predict_candidates(model, events, batch_size)),
        "pf": reconstruction_metrics(events, pf_particles(events)),
        "n_events": len(events),
    }


def release_metrics(model: torch.nn.Module, config: dict, events: ak.Array, **_: object) -> dict:
    """``hepzoo zoo release``: the trained model next to the rule-based PF on the held-out ``events``."""
    return compare_with_baseline(model, events)


def format_comparison(result: dict) -> str:
    """A plain-text table: one row per metric, MLPF next to PF."""
    lines = [f"{result['n_events']} events", f"{'metric':42s} {'MLPF':>9s} {'PF':>9s}"]
    for cls in result["pf"]["particles"]:
        for key in ("efficiency", "fake_rate"):
            a = result["mlpf"]["particles"][cls][key]
            b = result["pf"]["particles"][cls][key]
            lines.append(f"{cls.lower() + ' ' + key:42s} {a:9.3f} {b:9.3f}")
    a, b = result["mlpf"]["jets"], result["pf"]["jets"]
    lines.append(f"{'jet matching efficiency':42s} {a['matching_efficiency']:9.3f} {b['matching_efficiency']:9.3f}")
    lines.append(f"{'jet response median (inclusive)':42s} {a['inclusive']['median']:9.3f} {b['inclusive']['median']:9.3f}")
    lines.append(
        f"{'jet IQR/median (inclusive)':42s} {a['inclusive']['iqr_over_median']:9.3f} {b['inclusive']['iqr_over_median']:9.3f}"
    )
    for ra, rb in zip(a["binned"], b["binned"]):
        label = f"jet pT {ra['pt_lo']:.0f}-{ra['pt_hi']:.0f}: median / IQR/median"
        lines.append(
            f"{label:42s} {ra['median']:.3f}/{ra['iqr_over_median']:.3f} {rb['median']:.3f}/{rb['iqr_over_median']:.3f}"
        )
    return "\n".join(lines)


# ---- deployed-artifact validation (hepzoo validate): every metric with its statistical uncertainty -----------

JET_GEN_MIN_PT = 20.0  # GeV, generator jets entering the jet response
JET_MAX_ABS_ETA = 2.5


def _summary(ratios: np.ndarray, seed: int) -> dict[str, float]:
    """Median and IQR/median with their bootstrap uncertainties."""
    from .uncertainty import median_iqr_uncertainty

    median_unc, width_unc = median_iqr_uncertainty(ratios, seed=seed)
    return {**summarize_response(ratios).as_dict(), "median_unc": median_unc, "iqr_over_median_unc": width_unc}


def _binned_summary(x: np.ndarray, ratios: np.ndarray, edges: np.ndarray, seed: int) -> list[dict[str, float]]:
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (x >= lo) & (x < hi)
        rows.append({"lo": float(lo), "hi": float(hi), **_summary(ratios[sel], seed)})
    return rows


def validation_metrics(events: ak.Array, candidates: ak.Array, seed: int = 0) -> tuple[dict, dict]:
    """All ``hepzoo validate`` metrics of one reconstruction (MLPF or the PF baseline) on ``events``.

    Returns ``(metrics, arrays)``: JSON-able metrics with uncertainties (binomial for rates, seeded bootstrap
    for medians and IQR/median), and the per-object ratio arrays the plots histogram.
    """
    from .met import MET_EDGES, gen_missing_et, met_response, missing_et
    from .particles import ETA_EDGES, MATCH_DR, PT_EDGES, binned_rates, class_flags, particle_response
    from .uncertainty import binomial_uncertainty

    truth = target_particles(events)
    metrics: dict = {"particles": {}}
    arrays: dict = {"particles": {}}
    for cls in MATCH_DR:
        flags = class_flags(truth, candidates, cls)
        n_t, n_r = len(flags["found"]), len(flags["real"])
        k_t, k_fake = int(flags["found"].sum()), int((~flags["real"]).sum())
        response = particle_response(truth, candidates, cls)
        metrics["particles"][cls.name] = {
            "n_truth": n_t,
            "n_reco": n_r,
            "efficiency": k_t / n_t if n_t else float("nan"),
            "efficiency_unc": binomial_uncertainty(k_t, n_t),
            "fake_rate": k_fake / n_r if n_r else float("nan"),
            "fake_rate_unc": binomial_uncertainty(k_fake, n_r),
            "pt_response": _summary(response["pt_ratio"], seed),
            "e_response": _summary(response["e_ratio"], seed),
            "pt_response_vs_pt": _binned_summary(response["truth_pt"], response["pt_ratio"], PT_EDGES, seed),
            "vs_pt": binned_rates(flags, "pt", PT_EDGES),
            "vs_eta": binned_rates(flags, "eta", ETA_EDGES),
        }
        arrays["particles"][cls.name] = response

    jets = antikt_jets(candidates.pt, candidates.eta, candidates.phi, candidates.e)
    gen_pt, ratio, _ = jet_response(events.genjet, jets, gen_min_pt=JET_GEN_MIN_PT, max_abs_eta=JET_MAX_ABS_ETA)
    genjet = events.genjet
    n_gen = int(ak.sum((genjet.pt > JET_GEN_MIN_PT) & (np.abs(genjet.eta) < JET_MAX_ABS_ETA)))
    metrics["jets"] = {
        "n_gen": n_gen,
        "matching_efficiency": len(ratio) / n_gen if n_gen else float("nan"),
        "matching_efficiency_unc": binomial_uncertainty(len(ratio), n_gen),
        "inclusive": _summary(ratio, seed),
        "binned": _binned_summary(gen_pt, ratio, JET_PT_EDGES, seed),
    }
    arrays["jets"] = {"gen_pt": gen_pt, "ratio": ratio}

    gen_met = gen_missing_et(events)
    reco_met = missing_et(candidates.pt, candidates.phi)
    met_gen, met_ratio = met_response(reco_met, gen_met)
    metrics["met"] = {"inclusive": _summary(met_ratio, seed), "binned": _binned_summary(met_gen, met_ratio, MET_EDGES, seed)}
    arrays["met"] = {"gen": gen_met, "reco": reco_met, "ratio": met_ratio, "gen_selected": met_gen}
    return metrics, arrays


def compare_runtime_with_baseline(session, events: ak.Array, seed: int = 0) -> tuple[dict, dict]:
    """The deployed model (a :class:`hepzoo.runtime.Session`) next to the rule-based PF on the same events.

    Returns ``(metrics, arrays)`` with keys ``mlpf`` and ``pf`` (see :func:`validation_metrics`).
    """
    candidates = session.run(events)
    mlpf, mlpf_arrays = validation_metrics(events, candidates, seed)
    pf, pf_arrays = validation_metrics(events, pf_particles(events), seed)
    return {"mlpf": mlpf, "pf": pf, "n_events": len(events)}, {"mlpf": mlpf_arrays, "pf": pf_arrays}


def physics_metrics(model: Any, events: Any, buckets: Sequence[int], batch_size: int = 32) -> dict[str, float]:
    """MLPF jet figures on ``events``: inclusive IQR/median and median of the reco/gen jet pT response, and the
    generator-jet matching efficiency; what ``hepzoo tune`` reports per epoch (``Family.training_metrics``). The model's train/eval mode is kept; a model
    on a GPU is evaluated on a CPU copy (the prediction helper feeds CPU tensors)."""
    was_training = model.training
    param = next(model.parameters(), None)
    net = model if param is None or param.device.type == "cpu" else copy.deepcopy(model).cpu()
    try:
        jets = reconstruction_metrics(events, predict_candidates(net, events, batch_size, buckets))["jets"]
    finally:
        model.train(was_training)
    return {
        "jet_iqr_over_median": float(jets["inclusive"]["iqr_over_median"]),
        "jet_response_median": float(jets["inclusive"]["median"]),
        "jet_matching_efficiency": float(jets["matching_efficiency"]),
    }
