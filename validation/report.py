"""Plots (PNG, matplotlib + mplhep), and the Markdown and self-contained HTML report of ``hepzoo validate``.

The report is built once as a list of :class:`Section` (tables and plot files) and rendered twice: Markdown
(plots linked next to it) and one HTML page with the plots embedded as base64 PNG, so it can be mailed or
attached to a CI run as a single file. Plots use mplhep's CMS-like style with a neutral "hepzoo Simulation"
label (no experiment is claimed). Every file is written atomically.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hepzoo.datasets.atomic import write_bytes_atomic

__all__ = [
    "Section", "mlpf_plots", "mlpf_sections", "flashsim_plots", "flashsim_sections", "build_sections", "write_markdown",
    "write_html",
]  # fmt: skip

CLASS_LABELS = {
    "CHARGED_HADRON": "Charged hadrons",
    "NEUTRAL_HADRON": "Neutral hadrons",
    "PHOTON": "Photons",
    "ELECTRON": "Electrons",
    "MUON": "Muons",
}
STYLE = {"mlpf": dict(color="#1f4e9c", marker="o", label="MLPF"), "pf": dict(color="#c0392b", marker="s", label="Rule-based PF")}
FLASH_STYLE = {
    "full": dict(color="black", label="Full chain"),
    "flash": dict(color="#1f4e9c", label="Flash-sim"),
    "full_b": dict(color="#e67e22", label="Independent full chain (noise floor)"),
}


# ---- plotting helpers ----------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.CMS)
    return plt, mplhep


def _figure_label(fig, rlabel: str) -> None:
    """The experiment-style label above the top row of panels: bold "hepzoo", italic "Simulation" (no
    experiment is claimed) over the first panel, the model and sample over the last; above panel titles."""
    top = [ax for ax in fig.axes if ax.get_subplotspec() is not None and ax.get_subplotspec().is_first_row()]
    first, last = top[0], top[-1]
    y = 1.11 if first.get_title() else 1.015
    first.text(0.0, y, r"$\bf{hepzoo}$ $\it{Simulation}$", transform=first.transAxes, ha="left", va="bottom", fontsize=17)
    last.text(1.0, y, rlabel, transform=last.transAxes, ha="right", va="bottom", fontsize=13)


def _logx(ax) -> None:
    """Log x axis with plain major labels (1, 10, 100) and unlabelled minor ticks."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _headroom(ax, factor: float = 1.45) -> None:
    """Room above the data for the legend."""
    ax.set_ylim(0, ax.get_ylim()[1] * factor)


def _bins(values: np.ndarray, lo: float, hi: float, n: int = 40) -> np.ndarray:
    """``n`` equal bins over [lo, hi], or unit bins centred on integers for integer-valued data."""
    if len(values) and np.all(np.mod(values, 1) == 0) and hi - lo <= 200:
        return np.arange(np.floor(lo) - 0.5, np.ceil(hi) + 1.5)
    return np.linspace(lo, hi, n + 1)


def _save(fig, path: Path) -> str:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return path.name


def _arr(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _centers(edges: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(edges, np.float64)
    return 0.5 * (e[1:] + e[:-1]), 0.5 * (e[1:] - e[:-1])


# ---- MLPF plots ---------------------------------------------------------------------------------------------


def mlpf_plots(
    metrics: Mapping[str, Any], arrays: Mapping[str, Any], out: Path, rlabel: str, limits: Mapping[str, float] | None = None
) -> dict[str, str]:
    """Efficiency and fake rate vs pT and eta, particle, jet and MET response: MLPF next to the PF baseline.
    ``limits`` (gate limits by metric name) are not drawn on these plots."""
    plt, mplhep = _pyplot()
    files: dict[str, str] = {}
    classes = list(metrics["mlpf"]["particles"])

    for var, xlabel, log in (("pt", r"$p_{T}$ [GeV]", True), ("eta", r"$\eta$", False)):
        fig, axes = plt.subplots(2, len(classes), figsize=(4.6 * len(classes), 8.5), sharex=True, squeeze=False)
        for col, cls in enumerate(classes):
            for row, (key, ylabel) in enumerate((("efficiency", "Efficiency"), ("fake_rate", "Fake rate"))):
                ax = axes[row, col]
                for algo in ("mlpf", "pf"):
                    b = metrics[algo]["particles"][cls][f"vs_{var}"]
                    x, xerr = _centers(b["edges"])
                    ax.errorbar(x, _arr(b[key]), yerr=_arr(b[f"{key}_unc"]), xerr=xerr, ls="none", ms=5, **STYLE[algo])
                ax.set_ylim(0, 1.15)
                if log:
                    _logx(ax)
                if row == 0:
                    ax.set_title(CLASS_LABELS.get(cls, cls), fontsize=16)
                if row == 1:
                    ax.set_xlabel(xlabel, fontsize=15)
                if col == 0:
                    ax.set_ylabel(ylabel, fontsize=16)
                ax.tick_params(labelsize=12)
        axes[0, 0].legend(fontsize=12, loc="lower right")
        _figure_label(fig, rlabel)
        fig.text(0.5, -0.02, "efficiency: in bins of the truth particle; fake rate: in bins of the candidate", ha="center", fontsize=13)
        files[f"rates_vs_{var}"] = _save(fig, out / f"rates_vs_{var}.png")

    fig, axes = plt.subplots(1, len(classes), figsize=(4.6 * len(classes), 4.8), squeeze=False)
    bins = np.linspace(0.0, 2.0, 101)
    for col, cls in enumerate(classes):
        ax = axes[0, col]
        for algo in ("mlpf", "pf"):
            r = arrays[algo]["particles"][cls]["pt_ratio"]
            s = metrics[algo]["particles"][cls]["pt_response"]
            if len(r):
                h, _ = np.histogram(np.clip(r, bins[0], bins[-1] - 1e-9), bins)
                label = f"{STYLE[algo]['label']}\nmed {_fmt(s['median'])}, IQR/med {_fmt(s['iqr_over_median'])}"
                mplhep.histplot(h / max(h.sum(), 1), bins, ax=ax, color=STYLE[algo]["color"], label=label, lw=1.8)
        ax.set_title(CLASS_LABELS.get(cls, cls), fontsize=16)
        ax.set_xlabel(r"$p_{T}^{reco} / p_{T}^{truth}$ (last bin: overflow)", fontsize=13)
        _headroom(ax, 1.6)
        ax.legend(fontsize=10, loc="upper left")
        ax.tick_params(labelsize=12)
    axes[0, 0].set_ylabel("Fraction of matched particles", fontsize=14)
    _figure_label(fig, rlabel)
    files["particle_response"] = _save(fig, out / "particle_response.png")

    for name, xlabel, ratio_label, edges_key in (
        ("jets", r"Generator jet $p_{T}$ [GeV]", r"$p_{T}^{reco} / p_{T}^{gen}$ (anti-$k_{T}$ R=0.4)", "binned"),
        ("met", r"Generator $p_{T}^{miss}$ [GeV]", r"$p_{T}^{miss, reco} / p_{T}^{miss, gen}$", "binned"),
    ):
        fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
        bins = np.linspace(0.0, 2.0 if name == "jets" else 3.0, 51)
        for algo in ("mlpf", "pf"):
            r = arrays[algo][name]["ratio"]
            s = metrics[algo][name]["inclusive"]
            h, _ = np.histogram(np.clip(r, bins[0], bins[-1] - 1e-9), bins)
            label = f"{STYLE[algo]['label']}\nmed {_fmt(s['median'])}, IQR/med {_fmt(s['iqr_over_median'])}"
            mplhep.histplot(h / max(h.sum(), 1), bins, ax=axes[0], color=STYLE[algo]["color"], label=label, lw=1.8)
            rows = metrics[algo][name][edges_key]
            edges = [rows[0]["lo"]] + [row["hi"] for row in rows] if rows else [0, 1]
            x, xerr = _centers(edges)
            for ax, key in ((axes[1], "median"), (axes[2], "iqr_over_median")):
                ax.errorbar(x, _arr([row[key] for row in rows]), yerr=_arr([row[f"{key}_unc"] for row in rows]),
                            xerr=xerr, ls="none", ms=5, **STYLE[algo])  # fmt: skip
        axes[0].set_xlabel(ratio_label, fontsize=15)
        axes[0].set_ylabel("Fraction of " + ("matched jets" if name == "jets" else "events"), fontsize=15)
        _headroom(axes[0], 1.5)
        axes[0].legend(fontsize=11, loc="upper right")
        axes[1].axhline(1.0, color="grey", ls="--", lw=1)
        axes[1].set_ylabel("Response (median)", fontsize=15)
        axes[2].set_ylabel("Resolution (IQR / median)", fontsize=15)
        axes[2].set_ylim(0, None)
        for ax in axes[1:]:
            _logx(ax)
            ax.set_xlabel(xlabel, fontsize=15)
            ax.legend(fontsize=11)
        for ax in axes:
            ax.tick_params(labelsize=12)
        _figure_label(fig, rlabel)
        files[f"{name}_response"] = _save(fig, out / f"{name}_response.png")
    return files


# ---- flash-sim plots ------------------------------------------------------------------------------------------


def flashsim_plots(
    report: Mapping[str, Any], arrays: Mapping[str, Any], out: Path, rlabel: str, limits: Mapping[str, float] | None = None
) -> dict[str, str]:
    """Per-variable distributions, efficiency curves and W1/AUC against the noise floor. ``limits``: gate
    limits by metric name (``variables.<v>.w1_ratio``, ``auc.excess``), drawn when given."""
    limits = limits or {}
    plt, mplhep = _pyplot()
    files: dict[str, str] = {}
    names = list(arrays["names"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.8), squeeze=False)
    for j, name in enumerate(names):
        ax = axes[0, j]
        full = arrays["full"][:, j]
        lo, hi = np.percentile(full, [0.5, 99.5]) if len(full) else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = _bins(full, lo, hi)
        lo, hi = bins[0], bins[-1]
        for key in ("full", "flash", "full_b"):
            v = arrays[key][:, j]
            h, _ = np.histogram(np.clip(v, lo, hi - 1e-12 * (hi - lo)), bins)
            mplhep.histplot(h / max(h.sum(), 1), bins, ax=ax, lw=1.8, ls="--" if key == "full_b" else "-",
                            color=FLASH_STYLE[key]["color"], label=FLASH_STYLE[key]["label"] if j == 0 else None)  # fmt: skip
        w1 = report["variables"][name]["w1"]
        ax.set_title(f"W1 ratio to floor {_fmt(w1['ratio'])} ± {_fmt(w1['ratio_unc'])}", fontsize=12)
        ax.set_xlabel(name.replace("_", " "), fontsize=15)
        ax.set_ylim(0, None)
        ax.tick_params(labelsize=11)
    axes[0, 0].set_ylabel("Fraction of matched objects", fontsize=14)
    for ax in axes[0]:
        _headroom(ax, 1.35)
    axes[0, 0].legend(fontsize=10, loc="upper left")
    _figure_label(fig, rlabel)
    files["variables"] = _save(fig, out / "flashsim_variables.png")

    eff = report.get("efficiency", {})
    if eff:
        fig, axes = plt.subplots(1, len(eff), figsize=(6.5 * len(eff), 5.2), squeeze=False)
        for col, (var, entry) in enumerate(eff.items()):
            ax = axes[0, col]
            x, xerr = _centers(entry["edges"])
            for key, shift in (("full", 0.0), ("flash", -0.15), ("full_b", 0.15)):
                if key in entry:
                    dx = shift * xerr
                    ax.errorbar(x + dx, _arr(entry[key]["efficiency"]), yerr=_arr(entry[key]["uncertainty"]), xerr=xerr,
                                ls="none", marker="o", ms=4, color=FLASH_STYLE[key]["color"], label=FLASH_STYLE[key]["label"])  # fmt: skip
            ax.set_xlabel(r"Generator $p_{T}$ [GeV]" if var == "pt" else r"Generator $\eta$", fontsize=15)
            if var == "pt":
                _logx(ax)
            ax.set_ylabel("Reconstruction efficiency", fontsize=15)
            ax.set_ylim(0, 1.15)
            ax.tick_params(labelsize=12)
        axes[0, 0].legend(fontsize=11, loc="lower right")
        _figure_label(fig, rlabel)
        files["efficiency"] = _save(fig, out / "flashsim_efficiency.png")

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [len(names), 2]})
    ratio = _arr([report["variables"][n]["w1"]["ratio"] for n in names])
    ratio_unc = _arr([report["variables"][n]["w1"]["ratio_unc"] for n in names])
    axes[0].errorbar(np.arange(len(names)), ratio, yerr=ratio_unc, ls="none", marker="o", color=FLASH_STYLE["flash"]["color"])
    axes[0].axhline(1.0, color="grey", ls="--", lw=1, label="noise floor")
    w1_limits = _arr([limits.get(f"variables.{n}.w1_ratio") for n in names])
    if np.isfinite(w1_limits).any():
        axes[0].plot(np.arange(len(names)), w1_limits, ls="none", marker="v", ms=9, color="#c0392b", label="gate threshold")
    axes[0].set_xticks(np.arange(len(names)), [n.replace("_", " ") for n in names], fontsize=12, rotation=20)
    axes[0].set_ylabel("W1(flash, full) / W1(floor)", fontsize=14)
    axes[0].set_ylim(0, None)
    axes[0].legend(fontsize=11)
    auc = report["auc"]
    axes[1].errorbar([0, 1], [auc["flash_vs_full"], auc["noise_floor"]], yerr=[auc.get("flash_vs_full_unc") or 0, auc.get("noise_floor_unc") or 0],
                     ls="none", marker="o", color="black")  # fmt: skip
    axes[1].axhline(0.5, color="grey", ls="--", lw=1)
    if limits.get("auc.excess") is not None:
        auc_limit = max(auc["noise_floor"], 0.5) + limits["auc.excess"]
        axes[1].plot([0], [auc_limit], ls="none", marker="v", ms=9, color="#c0392b", label="gate threshold")
        axes[1].legend(fontsize=11)
    axes[1].set_xticks([0, 1], ["flash vs full", "floor"], fontsize=12)
    axes[1].set_xlim(-0.5, 1.5)
    lo_y, hi_y = axes[1].get_ylim()
    axes[1].set_ylim(min(lo_y, 0.45), max(hi_y, 0.6))
    axes[1].set_ylabel("Classifier AUC", fontsize=14)
    for ax in axes:
        ax.tick_params(labelsize=12)
    _figure_label(fig, rlabel)
    files["summary"] = _save(fig, out / "flashsim_summary.png")
    return files


# ---- report content -------------------------------------------------------------------------------------------


@dataclass
class Section:
    title: str
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    row_status: list[str] = field(default_factory=list)  # per row: "pass" | "fail" | "skipped" | ""
    images: list[str] = field(default_factory=list)


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}f}" if abs(x) >= 10 ** (-digits) or x == 0 else f"{x:.2e}"


def _pm(v: Any, u: Any, digits: int = 3) -> str:
    return _fmt(v, digits) if u is None or not math.isfinite(float(u)) else f"{_fmt(v, digits)} ± {_fmt(u, digits)}"


def _gate_section(metrics: Mapping[str, Any]) -> Section:
    gate = metrics.get("gate") or {}
    if not gate.get("checks"):
        return Section("Gate", gate.get("message", "No thresholds: the gate was not run."))
    checks = gate["checks"]
    failed = [c for c in checks if c["status"] == "fail"]
    verdict = "**PASSED**" if not failed else f"**FAILED**: {len(failed)} metric(s) regressed"
    text = (f"{verdict} ({sum(c['status'] == 'pass' for c in checks)} pass, {len(failed)} fail, "
            f"{sum(c['status'] == 'skipped' for c in checks)} skipped; n_sigma = {gate['n_sigma']}). {gate['rule']}")  # fmt: skip
    order = sorted(checks, key=lambda c: {"fail": 0, "skipped": 2}.get(c["status"], 1))
    rows = [[c["metric"], _pm(c["measured"], c["measured_unc"], 4), str(c["n"]), c["condition"],
             _pm(c["reference"], c["reference_unc"], 4), c["status"]] for c in order]  # fmt: skip
    return Section("Gate", text, ["metric", "measured", "entries", "threshold", "release", "status"], rows, [c["status"] for c in order])


def mlpf_sections(metrics: Mapping[str, Any], images: Mapping[str, str]) -> list[Section]:
    m, p = metrics["mlpf"]["mlpf"], metrics["mlpf"]["pf"]
    rows = []
    for cls in m["particles"]:
        a, b = m["particles"][cls], p["particles"][cls]
        rows.append([CLASS_LABELS.get(cls, cls), str(a["n_truth"]),
                     _pm(a["efficiency"], a["efficiency_unc"]), _pm(b["efficiency"], b["efficiency_unc"]),
                     _pm(a["fake_rate"], a["fake_rate_unc"]), _pm(b["fake_rate"], b["fake_rate_unc"]),
                     f"{_fmt(a['pt_response']['median'])} / {_fmt(a['pt_response']['iqr_over_median'])}",
                     f"{_fmt(b['pt_response']['median'])} / {_fmt(b['pt_response']['iqr_over_median'])}",
                     f"{_fmt(a['e_response']['median'])} / {_fmt(a['e_response']['iqr_over_median'])}",
                     f"{_fmt(b['e_response']['median'])} / {_fmt(b['e_response']['iqr_over_median'])}"])  # fmt: skip
    particles = Section(
        "Particles",
        "Truth particles are the non-empty MLPF target slots (pT > 1 GeV); a truth particle is found when a candidate of "
        "its class lies within the class radius in (η, φ), a candidate is fake when no truth particle of its class does. "
        "Response: candidate/truth of the closest candidate of the class (median / IQR over median).",
        ["class", "truth", "eff. MLPF", "eff. PF", "fake MLPF", "fake PF", "pT resp. MLPF", "pT resp. PF",
         "E resp. MLPF", "E resp. PF"], rows,  # fmt: skip
        images=[images[k] for k in ("rates_vs_pt", "rates_vs_eta", "particle_response") if k in images],
    )
    jrows = [["inclusive (pT > 20 GeV, |η| < 2.5)", _pm(m["jets"]["inclusive"]["median"], m["jets"]["inclusive"]["median_unc"]),
              _pm(p["jets"]["inclusive"]["median"], p["jets"]["inclusive"]["median_unc"]),
              _pm(m["jets"]["inclusive"]["iqr_over_median"], m["jets"]["inclusive"]["iqr_over_median_unc"]),
              _pm(p["jets"]["inclusive"]["iqr_over_median"], p["jets"]["inclusive"]["iqr_over_median_unc"]),
              str(m["jets"]["inclusive"]["n"]), str(p["jets"]["inclusive"]["n"])]]  # fmt: skip
    for ra, rb in zip(m["jets"]["binned"], p["jets"]["binned"]):
        jrows.append([f"{ra['lo']:.0f}–{ra['hi']:.0f} GeV", _pm(ra["median"], ra["median_unc"]), _pm(rb["median"], rb["median_unc"]),
                      _pm(ra["iqr_over_median"], ra["iqr_over_median_unc"]), _pm(rb["iqr_over_median"], rb["iqr_over_median_unc"]),
                      str(ra["n"]), str(rb["n"])])  # fmt: skip
    jets = Section(
        "Jets",
        f"Anti-kT R=0.4 jets of the candidates matched to generator jets within ΔR < 0.1. Matching efficiency: MLPF "
        f"{_pm(m['jets']['matching_efficiency'], m['jets']['matching_efficiency_unc'])}, PF "
        f"{_pm(p['jets']['matching_efficiency'], p['jets']['matching_efficiency_unc'])} ({m['jets']['n_gen']} generator jets).",
        ["gen jet pT", "median MLPF", "median PF", "IQR/med MLPF", "IQR/med PF", "jets MLPF", "jets PF"], jrows,
        images=[images["jets_response"]] if "jets_response" in images else [],
    )
    mrows = []
    for label, ra, rb in [("inclusive (gen > 20 GeV)", m["met"]["inclusive"], p["met"]["inclusive"])] + [
        (f"{a['lo']:.0f}–{a['hi']:.0f} GeV", a, b) for a, b in zip(m["met"]["binned"], p["met"]["binned"])
    ]:
        mrows.append([label, _pm(ra["median"], ra["median_unc"]), _pm(rb["median"], rb["median_unc"]),
                      _pm(ra["iqr_over_median"], ra["iqr_over_median_unc"]), _pm(rb["iqr_over_median"], rb["iqr_over_median_unc"]), str(ra["n"])])  # fmt: skip
    met = Section(
        "Missing transverse momentum",
        "Reconstructed: |−Σ pT| of all candidates; generator: pT of the neutrino sum; events with generator MET > 20 GeV.",
        ["gen MET", "median MLPF", "median PF", "IQR/med MLPF", "IQR/med PF", "events"], mrows,
        images=[images["met_response"]] if "met_response" in images else [],
    )
    return [particles, jets, met]


def flashsim_sections(metrics: Mapping[str, Any], images: Mapping[str, str]) -> list[Section]:
    r = metrics["flashsim"]
    rows = []
    for name, v in r["variables"].items():
        w1, ks = v["w1"], v["ks"]
        rows.append([name, _pm(w1["flash_vs_full"], w1.get("flash_vs_full_unc"), 4), _pm(w1["noise_floor"], w1.get("noise_floor_unc"), 4),
                     _pm(w1.get("ratio"), w1.get("ratio_unc"), 2), _fmt(ks["flash_vs_full"], 4), _fmt(ks["noise_floor"], 4)])  # fmt: skip
    n = r["n"]
    auc, eff = r["auc"], r["efficiency_inclusive"]
    text = (
        f"{r['kind']} flash-sim vs the full chain, next to the noise floor (full chain vs an independent full chain). "
        f"Split: {r['split']} ({r['n_events']['full']} + {r['n_events']['noise_floor']} events). Objects: flash "
        f"{n['flash']['rows']} ({n['flash']['matched']} reconstructed), full {n['full']['rows']} ({n['full']['matched']}), "
        f"floor {n['full_b']['rows']} ({n['full_b']['matched']}). Sampling seed {r['seed']}."
    )
    variables = Section("Flash-sim fidelity", text, ["variable", "W1 flash vs full", "W1 noise floor", "W1 ratio",
                        "KS flash", "KS floor"], rows, images=[images[k] for k in ("variables", "summary") if k in images])  # fmt: skip
    summary = Section(
        "Classifier test and efficiency",
        "Classifier two-sample test (MLP on the reconstructed quantities and the generator context, train/test split by "
        "event): AUC 0.5 = indistinguishable.",
        ["quantity", "flash vs full", "noise floor"],
        [["classifier AUC", _pm(auc["flash_vs_full"], auc.get("flash_vs_full_unc")), _pm(auc["noise_floor"], auc.get("noise_floor_unc"))],
         ["AUC excess over max(floor, 0.5)", _pm(auc["excess"], auc.get("excess_unc")), ""],
         ["inclusive efficiency", f"flash {_pm(eff['flash'], eff['flash_unc'])} / full {_pm(eff['full'], eff['full_unc'])}",
          _pm(eff["full_b"], eff["full_b_unc"])]],  # fmt: skip
        images=[images["efficiency"]] if "efficiency" in images else [],
    )
    return [variables, summary]


def build_sections(metrics: Mapping[str, Any], images: Mapping[str, str]) -> list[Section]:
    """The report's sections: gate first, then the family's physics tables and plots (its ``sections`` hook)."""
    from hepzoo.models.families import get_family

    body = get_family(metrics["family"]).validation.sections(metrics, images)
    return [_gate_section(metrics), *body]


def _title(metrics: Mapping[str, Any]) -> tuple[str, str]:
    model, data = metrics["model"], metrics["data"]
    title = f"hepzoo validate: {model['name']} {model['version']}"
    files = ", ".join(f"{Path(p).name} ({sha[:12]})" for p, sha in data["files"].items())
    sub = (f"Deployed artifact {model['onnx']} (sha256 {model['sha256'][:16]}…) on backend {model['backend']}; "
           f"{data['n_events']} events from {files}.")  # fmt: skip
    return title, sub


def write_markdown(metrics: Mapping[str, Any], sections: Sequence[Section], path: Path) -> None:
    """The report as Markdown; plots are linked by file name (they lie next to it)."""
    title, sub = _title(metrics)
    lines = [f"# {title}", "", sub, ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.text:
            lines += [s.text, ""]
        if s.header:
            lines.append("| " + " | ".join(s.header) + " |")
            lines.append("|" + "---|" * len(s.header))
            for i, row in enumerate(s.rows):
                status = s.row_status[i] if i < len(s.row_status) else ""
                cells = [f"**{c}**" if status == "fail" else c for c in row]
                lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
            lines.append("")
        lines += [f"![{img}]({img})" for img in s.images] + ([""] if s.images else [])
    write_bytes_atomic(path, "\n".join(lines).encode())


_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1500px;color:#222;padding:0 16px}
h1{font-size:26px;margin-bottom:4px}h2{font-size:20px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
p.sub{color:#555;margin-top:0}table{border-collapse:collapse;margin:12px 0;font-size:14px}
th,td{border:1px solid #ddd;padding:4px 10px;text-align:right;white-space:nowrap}th{background:#f3f5f8}
td:first-child,th:first-child{text-align:left}tr.fail td{background:#fde2e1;font-weight:600}tr.skipped td{color:#888}
.badge{display:inline-block;padding:3px 10px;border-radius:4px;color:#fff;font-weight:700}
.badge.pass{background:#2e8540}.badge.fail{background:#c0392b}.badge.none{background:#777}
img{max-width:100%;display:block;margin:12px 0;border:1px solid #eee}p.text{max-width:1100px;line-height:1.45}
"""


def write_html(metrics: Mapping[str, Any], sections: Sequence[Section], folder: Path, path: Path) -> None:
    """One self-contained HTML page: tables, and the plots embedded as base64 PNG."""
    title, sub = _title(metrics)
    gate = metrics.get("gate") or {}
    if gate.get("checks"):
        badge = '<span class="badge pass">GATE PASSED</span>' if gate["passed"] else '<span class="badge fail">GATE FAILED</span>'
    else:
        badge = '<span class="badge none">NO GATE</span>'
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)} {badge}</h1>",
             f"<p class='sub'>{html.escape(sub)}</p>"]  # fmt: skip
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p class='text'>{html.escape(s.text).replace('**', '')}</p>")
        if s.header:
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in s.header) + "</tr>")
            for i, row in enumerate(s.rows):
                status = s.row_status[i] if i < len(s.row_status) else ""
                parts.append(f"<tr class='{status}'>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
            parts.append("</table>")
        for img in s.images:
            data = base64.b64encode((folder / img).read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(img)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    write_bytes_atomic(path, "\n".join(parts).encode())
