"""`hepzoo demo`: the main job on a small built-in sample, end to end, with printed and plotted physics.

Generates ttbar events (Pythia8 + detector simulation + PF baseline + targets) and single-particle guns, reads
them back through the schema-checked reader, and reports detector response, target composition and the
rule-based PF jet response against generator jets, and runs every exported zoo model through the runtime
(``hepzoo run``: ROOT in, ROOT out, ONNX artifact) on the same ttbar events (never seen in training: different
seed); the MLPF outputs are read back and compared with the PF baseline, and every released flash-sim
model against that full chain, next to the noise floor of a second, independent ttbar sample.
"""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np

from hepzoo.datasets.generate import GenerationConfig, generate
from hepzoo.datasets.io import read_events
from hepzoo.datasets.jets import antikt_jets
from hepzoo.datasets.schema import ClusterLayer, TargetClass
from hepzoo.datasets.sources import SourceSpec
from hepzoo.models.families import get_family

from .jets import binned_response, jet_response, summarize_response
from .mlpf import format_comparison, reconstruction_metrics
from .flashsim import evaluate_runtime
from .flashsim import format_report as format_flashsim
from .particles import pf_particles

JET_PT_EDGES = np.array([20.0, 40.0, 60.0, 100.0, 200.0, 1000.0])


def run_demo(out_dir: Path, n_events: int = 200, workers: int = 2, seed: int = 7) -> dict:
    """Generate the demo samples into ``out_dir`` and return (and write) the metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = {
        "ttbar": SourceSpec("ttbar"),
        # an independent full-chain sample of the same process: the noise floor of the flash-sim comparison
        "ttbar_b": SourceSpec("ttbar"),
        "electron_gun": SourceSpec("gun", gun_pid=11, gun_pt=(5.0, 100.0), gun_eta=(-1.4, 1.4)),
        "pion_gun": SourceSpec("gun", gun_pid=211, gun_pt=(5.0, 100.0), gun_eta=(-1.4, 1.4)),
    }
    events = {}
    for name, spec in samples.items():
        path = out_dir / f"{name}.root"
        sample_seed = seed + 1000 if name == "ttbar_b" else seed
        config = GenerationConfig(spec, n_events=n_events, seed=sample_seed, chunk_size=50)
        generate(config, path, workers=workers)
        events[name] = read_events(path)

    runs = _run_zoo(out_dir / "ttbar.root", out_dir / "run", seed)
    # the deterministic (reconstruction) models' candidates, compared with the rule-based PF below; the generative
    # (flash-sim) models are compared with the full chain
    zoo_candidates = {
        name: run["output"][run["collection"]] for name, run in runs.items() if not get_family(run["family"]).generative
    }
    metrics = {
        "seed": seed,
        "n_events": n_events,
        "runs": {
            name: {k: v for k, v in run.items() if k not in ("output", "collection")} for name, run in runs.items()
        },
        "calorimeter_response": {
            name: _calo_response(events[name]) for name in ("electron_gun", "pion_gun")
        },
        "ttbar": _ttbar_metrics(events["ttbar"]),
        "zoo": {
            name: {
                "mlpf": reconstruction_metrics(events["ttbar"], candidates),
                "pf": reconstruction_metrics(events["ttbar"], pf_particles(events["ttbar"])),
                "n_events": len(events["ttbar"]),
            }
            for name, candidates in zoo_candidates.items()
        },
        # deployed artifacts through the runtime; even events are the full chain, odd ones the noise floor
        "flashsim": {
            name: evaluate_runtime(session, ak.concatenate([events["ttbar"], events["ttbar_b"]]), seed=seed)[0]
            for name, session in _flashsim_sessions().items()
        },
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _plot(events["ttbar"], zoo_candidates, out_dir)
    _plot_flashsim(events["ttbar"], seed, out_dir)
    return metrics


def _calo_response(events: ak.Array) -> dict:
    """Energy of the clusters the gun particle (gen[0]) dominates, over its true energy.

    Truth-matched clusters keep noise clusters elsewhere in the calorimeter out of the sum.
    """
    e_true = ak.to_numpy(ak.firsts(events.gen.e))
    e_clu = ak.to_numpy(ak.sum(events.clu.e[events.clu.gen_idx == 0], axis=1))
    ratio = e_clu / e_true
    return summarize_response(ratio).as_dict()


def _ttbar_metrics(events: ak.Array) -> dict:
    gen_pt, ratio, efficiency = jet_response(events.genjet, events.recojet)
    classes = ak.to_numpy(ak.flatten(events.tgt.cls))
    n_trk = ak.to_numpy(ak.num(events.trk, axis=1))
    n_clu = ak.to_numpy(ak.num(events.clu, axis=1))
    layers = ak.to_numpy(ak.flatten(events.clu.layer))
    return {
        "mean_tracks": float(n_trk.mean()),
        "mean_clusters": float(n_clu.mean()),
        "clusters_per_layer": {layer.name: int((layers == layer).sum()) for layer in ClusterLayer},
        "target_classes": {cls.name: int((classes == cls).sum()) for cls in TargetClass},
        "pf_jets": {
            "matching_efficiency": efficiency,
            "inclusive": summarize_response(ratio).as_dict(),
            "binned": binned_response(gen_pt, ratio, JET_PT_EDGES),
        },
    }


def _flashsim_sessions() -> dict:
    """Exported flash-sim releases of the zoo, as runtime sessions, by ``name/version``."""
    from hepzoo.export.zoo import list_releases
    from hepzoo.runtime import Session

    sessions = {}
    for release in list_releases():
        if (release.path / "card.json").is_file():
            session = Session.load(release.path)
            if session.family.generative:
                sessions[f"{release.name}/{release.version}"] = session
    return sessions


def _run_zoo(events_file: Path, out_dir: Path, seed: int) -> dict[str, dict]:
    """Every exported zoo release over ``events_file`` through the runtime, as ``hepzoo run`` does
    (ROOT in, ROOT out, one folder per release: ``out_dir/<name>-<version>/``, so that two versions of a model
    do not write the same file); returns per model the run summary and the output read back."""
    import time

    from hepzoo.export.zoo import list_releases
    from hepzoo.runtime import Session
    from hepzoo.runtime.runfile import output_collection, read_output, run_files

    runs = {}
    for release in list_releases():
        if not (release.path / "card.json").is_file():
            continue
        session = Session.load(release.path)
        generative = session.family.generative
        started = time.perf_counter()
        folder = out_dir / f"{release.name}-{release.version}"
        (result,) = run_files(session, events_file, folder, seed=seed if generative else None, overwrite=True)
        seconds = time.perf_counter() - started
        runs[f"{release.name}/{release.version}"] = {
            "family": session.card.family,
            "collection": output_collection(session),  # not in metrics.json (the run record has it)
            "backend": session.backend_name,
            "output_file": result.output,
            "n_events": result.n_events,
            "n_objects": result.n_objects,
            "seconds": seconds,
            "output": read_output(result.output),
        }
    return runs


def _plot(ttbar: ak.Array, zoo_candidates: dict[str, ak.Array], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.CMS)
    _, ratio, _ = jet_response(ttbar.genjet, ttbar.recojet)
    fig, ax = plt.subplots(figsize=(8, 6))
    bins = np.linspace(0.0, 2.0, 41)
    ax.hist(ratio, bins=bins, histtype="step", linewidth=2, label="rule-based PF")
    for name, cands in zoo_candidates.items():
        jets = antikt_jets(cands.pt, cands.eta, cands.phi, cands.e)
        _, model_ratio, _ = jet_response(ttbar.genjet, jets)
        ax.hist(model_ratio, bins=bins, histtype="step", linewidth=2, label=name)
    ax.set_xlabel(r"jet $p_T^{reco} / p_T^{gen}$")
    ax.set_ylabel("jets / 0.05")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.6)  # room for the legend above the peak
    ax.legend(title=r"$t\bar{t}$, anti-$k_T$ R=0.4, $p_T^{gen}>20$ GeV", loc="upper left", fontsize="small",
              title_fontsize="small")
    fig.savefig(out_dir / "jet_response.png", dpi=100, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 6))
    for name, values in (("tracks", ak.num(ttbar.trk, axis=1)), ("clusters", ak.num(ttbar.clu, axis=1))):
        ax.hist(ak.to_numpy(values), bins=30, histtype="step", linewidth=2, label=name)
    ax.set_xlabel("elements per event")
    ax.set_ylabel("events")
    ax.legend()
    fig.savefig(out_dir / "elements.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def _plot_flashsim(ttbar: ak.Array, seed: int, out_dir: Path) -> None:
    """pT response of matched objects: each released flash-sim model whose object kind names a ``demo_response``
    target column (jets) vs the full chain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, session in _flashsim_sessions().items():
        kind = session.objects
        if kind.demo_response is None:
            continue
        table = kind.encode(ttbar)
        drawn = session.sample(table["context"], seed)
        flash = {"matched": drawn["matched"], "target": drawn["sample"]}
        column = kind.target_names.index(kind.demo_response)
        fig, ax = plt.subplots(figsize=(8, 6))
        bins = np.linspace(0.4, 1.6, 49)
        full = table["target"][table["matched"], column]
        ax.hist(full, bins=bins, histtype="step", linewidth=2, label="full chain (detector sim + PF)")
        ax.hist(flash["target"][flash["matched"], column], bins=bins, histtype="step", linewidth=2, label=name)
        ax.set_xlabel(rf"matched {kind.name} $p_T^{{reco}} / p_T^{{gen}}$")
        ax.set_ylabel(f"{kind.name}s / 0.025")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.4)
        ax.legend(loc="upper left", fontsize="small")
        fig.savefig(out_dir / f"flashsim_{name.replace('/', '_')}_response.png", dpi=100, bbox_inches="tight")
        plt.close(fig)


def format_metrics(metrics: dict) -> str:
    """Human-readable summary printed by the CLI."""
    lines = [f"demo: {metrics['n_events']} events per sample, seed {metrics['seed']}"]
    for name, resp in metrics["calorimeter_response"].items():
        lines.append(
            f"  {name:13s} calorimeter E/E_true: median {resp['median']:.3f}, IQR/median {resp['iqr_over_median']:.3f}"
        )
    tt = metrics["ttbar"]
    lines.append(f"  ttbar: {tt['mean_tracks']:.0f} tracks and {tt['mean_clusters']:.0f} clusters per event")
    lines.append("  target classes: " + ", ".join(f"{k}={v}" for k, v in tt["target_classes"].items()))
    jets = tt["pf_jets"]
    inc = jets["inclusive"]
    lines.append(
        f"  PF jets vs gen jets (dR<0.1, pT>20, |eta|<2.5): matched {jets['matching_efficiency']:.2f}, "
        f"response median {inc['median']:.3f}, IQR/median {inc['iqr_over_median']:.3f} ({inc['n']} jets)"
    )
    for row in jets["binned"]:
        lines.append(
            f"    pT {row['pt_lo']:5.0f}-{row['pt_hi']:<5.0f} n={row['n']:4d} median {row['median']:.3f} "
            f"IQR/median {row['iqr_over_median']:.3f}"
        )
    for name, run in metrics.get("runs", {}).items():
        lines.append(
            f"  hepzoo run {name} ({run['backend']}): {run['n_events']} events -> {run['n_objects']} objects "
            f"in {run['seconds']:.1f} s -> {run['output_file']}"
        )
    for name, result in metrics.get("zoo", {}).items():
        lines.append(f"  zoo model {name} vs rule-based PF on the same ttbar events:")
        lines.extend("    " + line for line in format_comparison(result).splitlines())
    for name, report in metrics.get("flashsim", {}).items():
        lines.append(f"  zoo model {name}:")
        lines.extend("    " + line for line in format_flashsim(report).splitlines())
    return "\n".join(lines)
