"""BENCHMARKS.md section and plots of ``hepzoo bench``, written from the results file (never by hand).

The section sits between :data:`BEGIN` and :data:`END` markers, like the sections of ``benchmarks/bench_*.py``,
so a rerun replaces it and leaves every other section as it was. Plots are PNGs next to the results file
(``benchmarks/`` by default), linked relative to the markdown file.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hepzoo.datasets.atomic import atomic_output, write_text_atomic
from hepzoo.models.families import FLASHSIM, MLPF, families, get_family

__all__ = [
    "BEGIN",
    "END",
    "make_plots",
    "markers",
    "ratio_table",
    "render_section",
    "replace_section",
    "scaling_exponents",
    "write_report",
]

BEGIN = "<!-- runtime-benchmark:begin -->"
END = "<!-- runtime-benchmark:end -->"
PLOT_MLPF = "runtime_mlpf_scaling.png"
PLOT_FLASHSIM = "runtime_flashsim_throughput.png"
_PLOTS = {MLPF: PLOT_MLPF, FLASHSIM: PLOT_FLASHSIM}  # one figure per family
DASH = "—"
_REFERENCE_LABEL = "particleflow (torch-eager)"


def replace_section(path: str | os.PathLike, begin: str, end: str, body: str) -> Path:
    """Write ``body`` between the markers of ``path`` (appended when absent), atomically."""
    path = Path(path)
    section = "\n".join([begin, body.rstrip("\n"), end])
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEvery table here is written by a script.\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    return write_text_atomic(path, text)


# ---- numbers -> text ---------------------------------------------------------------------------------------


def _num(x: float | None, digits: int = 3) -> str:
    """Three significant digits, thousands separated from 1000 on."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return DASH
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _ms(seconds: float | None) -> str:
    return _num(None if seconds is None else 1e3 * seconds)


def _pct(fraction: float | None) -> str:
    return DASH if fraction is None else f"{100 * fraction:.2g}%"


def _size(rec: Mapping[str, Any]) -> str:
    if not get_family(rec["family"]).elements:
        return str(rec["batch"])
    return str(rec["n_elements"]) if rec["kind"] == "elements" else f"{rec['batch']} x {rec['n_elements']}"


def _ok(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in records if r["status"] == "ok"]


def _by_model(results: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for rec in results["records"]:
        out[rec["model"]].append(rec)
    return out


def scaling_exponents(results: Mapping[str, Any], min_elements: int = 1024) -> list[dict[str, Any]]:
    """Slope of log(time per event) vs log(elements) per MLPF series, fitted over sizes >= ``min_elements``."""
    rows = []
    for model, records in _by_model(results).items():
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for r in _ok(records):
            if get_family(r["family"]).elements and r["kind"] == "elements" and r["n_elements"] >= min_elements:
                series[r["label"]].append((r["n_elements"], r["mean_s"]))
        for label, pts in series.items():
            if len(pts) < 2:
                continue
            n, t = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
            slope = float(np.polyfit(n, t, 1)[0])
            rows.append({"model": model, "label": label, "exponent": slope, "from": min(p[0] for p in pts), "to": max(p[0] for p in pts)})
    return rows


def ratio_table(results: Mapping[str, Any], family: str) -> tuple[list[str], list[list[str]], str]:
    """(header, rows, reference label): throughput of each implementation / the reference at the same point.

    MLPF: the reference is particleflow in PyTorch eager when it was measured, else hepzoo's own PyTorch eager;
    flash-sim: hepzoo's PyTorch eager (no external flash-sim package exists to compare with).
    """
    header: list[str] = []
    rows: list[list[str]] = []
    reference = "torch-eager"
    has_reference = get_family(family).reference_implementation is not None
    if has_reference and any(r["label"] == _REFERENCE_LABEL and r["status"] == "ok" for r in results["records"]):
        reference = _REFERENCE_LABEL
    for model, records in _by_model(results).items():
        recs = [r for r in records if r["family"] == family]
        if not recs:
            continue
        sizes = list(dict.fromkeys(_size(r) for r in recs))
        header = header or ["model", "implementation / backend", *sizes]
        ref = {_size(r): r for r in _ok(recs) if r["label"] == reference}
        for label in dict.fromkeys(r["label"] for r in recs):
            if label == reference:
                continue
            cells = {_size(r): r for r in _ok(recs) if r["label"] == label}
            row = [model, label]
            for size in sizes:
                a, b = cells.get(size), ref.get(size)
                row.append(f"{a['events_per_s'] / b['events_per_s']:.2f}" if a and b else DASH)
            rows.append(row)
    return header, rows, reference


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> list[str]:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |", *("| " + " | ".join(r) + " |" for r in rows)]


def _peak_line(peaks: Mapping[str, Any] | None) -> str:
    """The measured GEMM peak (results files written before it was measured have none)."""
    if not peaks:
        return "- Measured peak: not in this results file (% peak is against the nominal peak below)."
    values = ", ".join(f"{_num(v)} GFLOP/s with {t} thread(s)" for t, v in sorted(peaks["gflops"].items(), key=lambda x: int(x[0])))
    return f"- Measured peak (100 % of the % peak columns): {values}; {peaks['method']}."


def _model_table(records: Sequence[Mapping[str, Any]]) -> list[str]:
    mlpf = get_family(records[0]["family"]).elements  # element-aligned models: sizes are events x elements
    header = [
        "implementation / backend",
        "events x elements" if mlpf else "batch",
        "events/s" if mlpf else "objects/s",
        "elements/s" if mlpf else "GFLOP/s",
        "p50 ms",
        "p99 ms",
        "±95% CI",
        "calls",
        "wall/CPU",
        "ΔRSS MB",
        "GFLOP/event" if mlpf else "kFLOP/object",
        "GFLOP/s" if mlpf else "% peak",
    ]
    if mlpf:
        header.append("% peak")
    rows = []
    for r in records:
        size = f"1 x {r['n_elements']}" if mlpf and r["kind"] == "elements" else _size(r)
        if r["status"] != "ok":
            rows.append([r["label"], size, f"{r['status']}: {r['reason']}", *[DASH] * (len(header) - 3)])
            continue
        per_event = r.get("flops_per_event")
        mem = _num(r["peak_delta_mb"]) + (" (≤)" if r.get("memory_upper_bound") else "")
        common = [
            _ms(r["p50_s"]),
            _ms(r["p99_s"]),
            _pct(r.get("rel_ci95")),
            str(r["reps"]),
            _num(r.get("wall_over_cpu")),
            mem,
        ]
        if mlpf:
            rows.append(
                [
                    r["label"],
                    size,
                    _num(r["events_per_s"]),
                    _num(r["objects_per_s"]),
                    *common,
                    _num(per_event / 1e9 if per_event else None),
                    _num(r.get("gflops_per_s")),
                    _pct(r.get("fraction_of_peak")),
                ]
            )
        else:
            rows.append(
                [
                    r["label"],
                    size,
                    _num(r["objects_per_s"]),
                    _num(r.get("gflops_per_s")),
                    *common,
                    _num(per_event / 1e3 if per_event else None),
                    _pct(r.get("fraction_of_peak")),
                ]
            )
    return _table(header, rows, right_from=2)


def _end_to_end_lines(e2e: Mapping[str, Any] | None) -> list[str]:
    lines = ["### End to end: `hepzoo run` vs the sum of its parts", ""]
    if not e2e or e2e.get("status") != "ok":
        why = (e2e or {}).get("reason", "not requested")
        return [*lines, f"Not measured: {why}."]
    lines.append(
        f"`{e2e['command']}` on {e2e['events']} events of `{e2e['input']}` ({e2e['elements']} elements), backend "
        f"{e2e['backend']}, best of {e2e['repeats']}."
    )
    lines.append("")
    header = ["step", "seconds", "events/s"]
    rows = [[p["step"], f"{p['seconds']:.3f}", _num(e2e["events"] / p["seconds"]) if p["seconds"] > 0 else DASH] for p in e2e["parts"]]
    rows.append(["sum of the parts", f"{e2e['sum_s']:.3f}", _num(e2e["events"] / e2e["sum_s"])])
    rows.append([f"`{e2e['command'].split()[0]} {e2e['command'].split()[1]}`", f"{e2e['run_s']:.3f}", _num(e2e["events"] / e2e["run_s"])])
    lines += _table(header, rows)
    lines += ["", f"Runtime overhead over the sum of the parts: {100 * (e2e['run_s'] / e2e['sum_s'] - 1):+.0f}%."]
    return lines


def render_section(results: Mapping[str, Any], links: Mapping[str, str] | None = None, tag: str | None = None) -> str:
    """The markdown section (without markers) for ``results``; ``links``: plot name -> relative path."""
    m = results["machine"]
    v = results["versions"]
    s = results["settings"]
    ref = results["reference"]
    ok = _ok(results["records"])
    load = float(np.median([r["wall_over_cpu"] for r in ok if r.get("wall_over_cpu")])) if ok else None
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val and k in ("python", "torch", "onnxruntime", "onnx", "numba", "numpy", "particleflow"))
    gpus = m.get("gpus") or []
    lines = [
        "## Inference runtime: zoo models on every backend" + (f" ({tag})" if tag else ""),
        "",
        f"Written by `hepzoo bench` ({results['date']}; command `{results['command']}`) from its results file.",
        "",
        f"- Machine: {m['cpu']}, {m['usable_cpus']} usable cores, {_num(m['ram_gb'])} GB RAM; {s['threads']} thread(s) per "
        f"implementation (ONNX Runtime intra-op threads, `torch.set_num_threads`)"
        + (f"; GPU: {'; '.join(gpus)}" if gpus else "; no GPU")
        + f". {versions}.",
        _peak_line(results.get("peak")),
        f"- Nominal peak: {_num(m['peak_gflops_per_core'])} GFLOP/s per core FP32 = {_num(m['freq_ghz'])} GHz "
        f"({m['freq_source']}) x {m['fp32_flops_per_cycle']} FLOPs/cycle ({m['flops_per_cycle_reason']})"
        + ("; not used for % peak." if results.get("peak") else "; % peak is against it, for the threads used."),
        f"- Timing: {results['methods']['timing']} (target {100 * s['target_rel_ci']:g}%, budget {s['budget_s']:g} s per "
        f"point, warm-up {s['warmup_s']:g} s). p99 of few calls is close to their maximum.",
        f"- Isolation: {results['methods']['isolation']}.",
        f"- Memory (ΔRSS): {results['methods']['memory']}; \"(≤)\" marks an upper bound (setup peaked higher).",
        f"- FLOPs: {results['methods']['flops']}.",
        f"- Inputs: {results['methods']['inputs']}.",
        f"- Load: median wall/CPU time per call {_num(load)} (1 on a quiet machine with one thread; higher means the "
        "machine was shared and the timings are pessimistic).",
    ]
    if s.get("quick"):
        lines.append("- **Quick run** (`--quick`): tiny budgets and fewer sizes; a check that the tool works, not numbers to quote.")
    if not ref["available"]:
        lines.append(f"- Reference: particleflow was not measured: {ref['detail']}.")
    else:
        lines.append(
            f"- Reference: `particleflow` {ref['detail']} (jpata/particleflow, PyPI), its `mlpf.model.mlpf.MLPF` built "
            "at each release's size (width, layers, bin size, distance dim, heads), seeded random weights, PyTorch eager."
        )
        for model, cfg in ref["models"].items():
            arch = {k: v for k, v in cfg.items() if k != "notes"}
            lines.append(f"  - {model}: `{arch}`; " + "; ".join(cfg.get("notes", [])))
    bad_parity = [p for p in results["parity"] if not p.get("within_tolerance")]
    par = "; ".join(
        f"{p['model']} {p['backend']}: " + (p.get("error") or ", ".join(f"{k} {val:.2g}" for k, val in p["max_abs_diff"].items()))
        for p in results["parity"]
    )
    if results["parity"]:
        lines.append(
            f"- Outputs checked against PyTorch eager before timing (max |diff| on real elements): {par}"
            + ("" if not bad_parity else f" — **{len(bad_parity)} outside the card tolerance**")
            + "."
        )
    lines.append("")

    for family in families():
        title = family.label[:1].upper() + family.label[1:]
        header, rows, reference = ratio_table(results, family)
        if not rows:
            continue
        ref_name = "particleflow's MLPF in PyTorch eager" if reference == _REFERENCE_LABEL else "hepzoo's model in PyTorch eager"
        lines += [
            f"### {title}: throughput ratio, implementation / {ref_name}",
            "",
            "Same inputs, same run; > 1 means faster than the reference. Columns: "
            + ("elements in one event per call, then events x elements of the batched point." if family.elements else "objects per call."),
            "",
            *_table(header, rows, right_from=2),
            "",
        ]
    exps = scaling_exponents(results)
    if exps:
        lines += [
            "### MLPF: how time per event grows with the number of elements",
            "",
            "Exponent a of time ∝ N^a, fitted over the one-event points from N = 1024 (GNN-LSH should be near 1, "
            "attention near 2 once the N² term dominates).",
            "",
            *_table(
                ["model", "implementation / backend", "a", "N range"],
                [[e["model"], e["label"], f"{e['exponent']:.2f}", f"{e['from']}–{e['to']}"] for e in exps],
                right_from=2,
            ),
            "",
        ]
    links = links or {}
    if links.get(PLOT_MLPF):
        lines += [f"![MLPF time per event vs elements]({links[PLOT_MLPF]})", ""]
    if links.get(PLOT_FLASHSIM):
        lines += [f"![Flash-sim throughput vs batch size]({links[PLOT_FLASHSIM]})", ""]
    for model, records in _by_model(results).items():
        lines += [f"### {model} {records[0]['version']}", "", *_model_table(records), ""]
    lines += _end_to_end_lines(results.get("end_to_end"))
    return "\n".join(lines).rstrip() + "\n"


# ---- plots -------------------------------------------------------------------------------------------------


def _save_atomic(fig: Any, path: Path) -> None:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def make_plots(results: Mapping[str, Any], plot_dir: str | os.PathLike, prefix: str = "") -> dict[str, Path]:
    """MLPF time per event vs elements (log-log, with N and N² guides) and flash-sim objects/s vs batch;
    keys are the plot names, files are ``prefix + name`` in ``plot_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir = Path(plot_dir)
    out: dict[str, Path] = {}
    by_model = _by_model(results)
    title = f"{results['machine']['cpu']}, {results['settings']['threads']} thread(s)"
    for family, name in _PLOTS.items():
        models = [m for m, recs in by_model.items() if recs[0]["family"] == family and _ok(recs)]
        if not models:
            continue
        fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
        for ax, model in zip(axes[0], models, strict=True):
            recs = [r for r in _ok(by_model[model]) if r["kind"] in ("elements", "batch")]
            for label in dict.fromkeys(r["label"] for r in recs):
                pts = sorted((r["n_elements"] or r["batch"], r) for r in recs if r["label"] == label)
                x = np.array([p[0] for p in pts], dtype=float)
                if family.elements:
                    y = np.array([p[1]["mean_s"] for p in pts])
                else:
                    y = np.array([p[1]["objects_per_s"] for p in pts])
                ax.plot(x, y, marker="o", label=label)
            if family.elements and recs:
                x0 = min(r["n_elements"] for r in recs)
                y0 = min(r["mean_s"] for r in recs if r["n_elements"] == x0)
                xs = np.array(sorted({r["n_elements"] for r in recs}), dtype=float)
                ax.plot(xs, y0 * xs / x0, "k:", lw=1, label="∝ N")
                ax.plot(xs, y0 * (xs / x0) ** 2, "k--", lw=1, label="∝ N²")
                ax.set_xlabel("elements in the event")
                ax.set_ylabel("seconds per event")
                ax.set_xscale("log", base=2)
            else:
                ax.set_xlabel("batch size (objects per call)")
                ax.set_ylabel("objects per second")
                ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(model)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        _save_atomic(fig, plot_dir / (prefix + name))
        plt.close(fig)
        out[name] = plot_dir / (prefix + name)
    return out


def markers(tag: str | None = None) -> tuple[str, str]:
    """Section markers; a ``tag`` (e.g. ``gpu-h100``) gives a second section, so a GPU run does not replace the CPU one."""
    if tag is None:
        return BEGIN, END
    if not tag.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"section tag {tag!r}: use letters, digits, '-' and '_' only")
    return f"<!-- runtime-benchmark-{tag}:begin -->", f"<!-- runtime-benchmark-{tag}:end -->"


def write_report(
    results: Mapping[str, Any], markdown: str | os.PathLike, plot_dir: str | os.PathLike, tag: str | None = None
) -> dict[str, Path]:
    """Plots into ``plot_dir`` and the section into ``markdown`` (other sections untouched)."""
    markdown = Path(markdown)
    begin, end = markers(tag)
    plots = make_plots(results, plot_dir, prefix="" if tag is None else f"{tag}_")
    links = {name: Path(os.path.relpath(path.resolve(), markdown.resolve().parent)).as_posix() for name, path in plots.items()}
    replace_section(markdown, begin, end, render_section(results, links, tag))
    return plots
