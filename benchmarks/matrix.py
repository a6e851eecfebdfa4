"""The backend x size matrix of ``hepzoo bench``: which points to run, in which order, and the run itself.

The matrix: each zoo release x each implementation, i.e. the release in PyTorch eager (``torch-eager``),
every backend of :func:`hepzoo.runtime.available_backends` (picked up automatically) and, for MLPF,
jpata/particleflow's own ``MLPF`` at the same size (:mod:`hepzoo.benchmarks.reference`) x sizes: batch 1,
100, 10^4 for flash-sim; one event of 256 ... 16384 elements per call for MLPF (how cost grows with event
size) plus one batched point. Before timing, each runtime backend's outputs are checked against PyTorch
eager (``parity``).

Each point runs in its own process (:mod:`hepzoo.benchmarks.isolation`); FLOPs of hepzoo models are counted
on the ONNX graph here (:mod:`hepzoo.benchmarks.flops`), once per size. Long calls are not started when the
trend of the smaller sizes predicts more than ``max_call_s`` per call or more than ``memory_fraction`` of the
available memory (:func:`predict`); such points are recorded as ``skipped`` with the reason. A failed point
skips the larger sizes of its series.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from hepzoo.benchmarks import reference
from hepzoo.benchmarks.flops import onnx_matmul_flops
from hepzoo.benchmarks.isolation import hepzoo_torch_model, run_in_fresh_process
from hepzoo.benchmarks.machine import library_versions, machine_info
from hepzoo.benchmarks.peak import measure_peaks, peak_for
from hepzoo.benchmarks.points import (
    FLASHSIM_BATCHES,
    HEPZOO,
    MLPF_BATCHED,
    MLPF_ELEMENTS,
    PARTICLEFLOW,
    QUICK_MLPF_ELEMENTS,
    TORCH_EAGER,
    BenchSettings,
    Point,
)
from hepzoo.benchmarks.results import SCHEMA, write_json_atomic
from hepzoo.models.families import get_family

__all__ = ["parse_elements", "predict", "resolve_backends", "resolve_models", "run_benchmarks"]


def _sizes(family: str, quick: bool, elements: Sequence[int] | None = None) -> list[tuple[str, int, int | None]]:
    """(kind, batch, elements) in increasing cost; ``elements`` replaces the one-event MLPF sizes."""
    if not get_family(family).elements:
        return [("batch", b, None) for b in FLASHSIM_BATCHES]
    if elements is None:
        elements = QUICK_MLPF_ELEMENTS if quick else MLPF_ELEMENTS
    return [("elements", 1, int(n)) for n in sorted(elements)] + [("batched", MLPF_BATCHED[0], MLPF_BATCHED[1])]


def parse_elements(text: str | None) -> tuple[int, ...] | None:
    """``"1024,4096"`` -> ``(1024, 4096)`` (None for None or an empty string); each must be an integer from 1 to
    the largest size the reference is built for (:data:`hepzoo.benchmarks.reference.MAX_ELEMENTS`)."""
    if text is None or not text.strip():
        return None
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or not 1 <= int(item) <= reference.MAX_ELEMENTS:
            raise ValueError(
                f"--elements: {item!r} is not an element count from 1 to {reference.MAX_ELEMENTS} (comma-separated integers)"
            )
        out.append(int(item))
    return tuple(sorted(set(out)))


def predict(
    done: list[tuple[int, dict[str, Any]]], size: int, key: str, lo: float, hi: float, first: float | None
) -> float | None:
    """Extrapolate ``key`` of a series to ``size`` with the power law of its last two points (exponent clamped
    to ``[lo, hi]``; exponent ``first`` when only one point is known, no prediction if ``first`` is None)."""
    pts = [(s, float(r[key])) for s, r in done if r.get("status") == "ok" and r.get(key)]
    if not pts or (len(pts) == 1 and first is None):
        return None
    s2, v2 = pts[-1]
    p = first
    if len(pts) > 1:
        s1, v1 = pts[-2]
        if s1 != s2 and v1 > 0 and v2 > 0:
            p = min(hi, max(lo, math.log(v2 / v1) / math.log(s2 / s1)))
    return v2 * (size / s2) ** p


def _parity(card: Any, onnx_path: Path, model: Any, spec: Any, backend: str, threads: int) -> dict[str, Any]:
    """Backend vs PyTorch eager on one small seeded input: max |diff| per output on real (unmasked) rows."""
    import torch

    from hepzoo.runtime import create_backend

    batch, n = (2, 256) if get_family(card.family).elements else (100, 0)
    inputs = spec.make_inputs(batch, n, 0)
    with torch.inference_mode():
        ref = model(*(inputs[name] for name in spec.input_names))
    ref = dict(zip(spec.output_names, (t.numpy() for t in ref), strict=True))
    got = create_backend(backend, onnx_path, intra_op_threads=threads).run({k: v.numpy() for k, v in inputs.items()})
    real = inputs["mask"].numpy() if "mask" in inputs else None
    diffs, ok = {}, True
    tol = card.tolerance
    for name, expected in ref.items():
        a, b = np.asarray(got[name], dtype=np.float64), expected.astype(np.float64)
        if real is not None:
            a, b = a[real], b[real]
        diffs[name] = float(np.max(np.abs(a - b))) if a.size else 0.0
        ok &= bool(np.all(np.abs(a - b) <= tol.atol + tol.rtol * np.abs(b)))
    return {
        "backend": backend,
        "batch": batch,
        "n_elements": n or None,
        "max_abs_diff": diffs,
        "atol": tol.atol,
        "rtol": tol.rtol,
        "within_tolerance": ok,
    }


def _implementations(
    family: str, backends: Sequence[str], reference_ok: bool
) -> list[tuple[str, str]]:
    impls = [(HEPZOO, b) for b in backends if b != PARTICLEFLOW]
    if get_family(family).reference_implementation == PARTICLEFLOW and PARTICLEFLOW in backends and reference_ok:
        impls.append((PARTICLEFLOW, TORCH_EAGER))
    return impls


def resolve_backends(requested: Sequence[str] | None) -> list[str]:
    """``torch-eager``, every available runtime backend and ``particleflow`` (default), or the requested ones."""
    from hepzoo.runtime import available_backends

    known = [TORCH_EAGER, *available_backends(), PARTICLEFLOW]
    if not requested:
        return known
    names = [n.strip() for item in requested for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown or unavailable backend(s) {unknown}; available here: {known}")
    return list(dict.fromkeys(names))


def resolve_models(requested: Sequence[str] | None) -> list[Any]:
    """Zoo releases (highest version) with an exported ``model.onnx``: all of them, or the named ones."""
    from hepzoo.export.card import CARD
    from hepzoo.export.zoo import find_release, list_releases

    if requested:
        releases = [find_release(name) for name in requested]
    else:
        latest = {r.name: r for r in list_releases()}  # versions come sorted: the last one wins
        releases = list(latest.values())
    missing = [str(r.path) for r in releases if not (r.path / CARD).is_file()]
    if missing:
        raise FileNotFoundError(f"no card.json (not exported: run hepzoo export) in {missing}")
    if not releases:
        raise ValueError("no zoo releases to benchmark")
    return releases


def run_benchmarks(
    models: Sequence[str] | None = None,
    backends: Sequence[str] | None = None,
    settings: BenchSettings | None = None,
    out: str | os.PathLike | None = None,
    sizes: Mapping[str, Sequence[tuple[str, int, int | None]]] | None = None,
    elements: Sequence[int] | None = None,
    e2e: Callable[[BenchSettings], dict[str, Any]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the matrix and return the results (also written to ``out`` after every point, atomically).

    ``sizes`` overrides the sizes per family (``{"mlpf": [("elements", 1, 256)], ...}``, mainly for tests);
    ``elements`` replaces the one-event MLPF sizes (``hepzoo bench --elements``; the batched point stays);
    ``e2e`` (e.g. a partial of :func:`hepzoo.benchmarks.e2e.end_to_end`) is called last and its dict stored
    under ``end_to_end``.
    """
    import tempfile

    from hepzoo.export.card import load_card
    from hepzoo.models import get_spec

    settings = settings or BenchSettings.create()
    releases = resolve_models(models)
    names = resolve_backends(backends)
    ref_ok, ref_why = reference.available()
    machine = machine_info()
    log("measuring the float32 GEMM peak ...")
    peaks = measure_peaks({1, settings.threads, int(machine["usable_cpus"])}, n=512 if settings.quick else 2048,
                          repeats=2 if settings.quick else 5)
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine,
        "peak": peaks,
        "versions": library_versions(),
        "settings": asdict(settings),
        "backends": names,
        "methods": {
            "isolation": "one process per point, forked from a multiprocessing forkserver that preloaded the libraries",
            "timing": "time.perf_counter per call; warm-up excluded; stop at 95% CI (Student t) of the mean within "
            "target_rel_ci, or when the budget is spent (>= 3 calls), or at max_reps",
            "memory": "resource.getrusage(RUSAGE_SELF).ru_maxrss after the timed calls minus the RSS "
            "(/proc/self/statm) just before the first call, so warm-up is included (ONNX Runtime's arena growth, "
            "numba loading its compiled kernels and LLVM)",
            "flops": "hepzoo models: 2*M*N*K of every MatMul/Gemm of model.onnx at the concrete size (ONNX shape "
            "inference); particleflow: torch FlopCounterMode; element-wise ops not counted",
            "peak": peaks["method"],
            "nominal_peak": machine["peak_method"],
            "inputs": "the registry's make_inputs(batch, elements, seed): plausible physical ranges; MLPF one-event "
            "points have every element real, batched MLPF events have between N/2 and N real elements",
        },
        "reference": {"package": reference.PACKAGE, "available": ref_ok, "detail": ref_why, "models": {}},
        "parity": [],
        "records": [],
        "end_to_end": None,
    }
    if PARTICLEFLOW in names and not ref_ok:
        log(f"reference unavailable: {ref_why}")
    peak_core = machine["peak_gflops_per_core"]
    peak_measured = peak_for(peaks, settings.threads)
    mem_limit_mb = (machine["ram_available_gb"] or 0) * 1024 * settings.memory_fraction or None

    def save() -> None:
        if out is not None:
            write_json_atomic(out, results)

    with tempfile.TemporaryDirectory(prefix="hepzoo-bench-") as tmp:
        for release in releases:
            card = load_card(release.path)  # verifies the sha256 of model.onnx
            onnx_path = release.path / card.onnx.file
            cfg = release.config["model"]
            spec = get_spec(cfg["name"])
            family = card.family
            if get_family(family).reference_implementation == PARTICLEFLOW and ref_ok and PARTICLEFLOW in names:
                results["reference"]["models"][release.name] = reference.reference_config(
                    cfg["name"], cfg.get("kwargs", {})
                )
            onnx_backends = [b for b in names if b not in (TORCH_EAGER, PARTICLEFLOW)]
            if onnx_backends:
                import torch

                torch.set_num_threads(settings.threads)
                model = hepzoo_torch_model(Point(release.name, release.version, family, HEPZOO, TORCH_EAGER, "batch", 1))
                for b in onnx_backends:
                    try:
                        par = _parity(card, onnx_path, model, spec, b, settings.threads)
                    except Exception as err:  # noqa: BLE001 - recorded; the timing points will show the failure too
                        par = {"backend": b, "error": f"{type(err).__name__}: {err}", "within_tolerance": False}
                    results["parity"].append({"model": release.name, **par})
            flop_cache: dict[tuple[int, int | None], dict[str, Any]] = {}
            point_sizes = list(sizes[family]) if sizes and family in sizes else _sizes(family, settings.quick, elements)
            for impl, backend in _implementations(family, names, ref_ok):
                done: list[tuple[int, dict[str, Any]]] = []
                broken: str | None = None
                for kind, batch, n in point_sizes:
                    point = Point(release.name, release.version, family, impl, backend, kind, batch, n)
                    base = {**asdict(point), "label": point.label, "threads": settings.threads}
                    rec: dict[str, Any]
                    predicted_s = predicted_mb = None
                    if kind != "batched":
                        # cost grows about linearly with the batch, up to quadratically with the elements of an event
                        lo, hi, first = (1.0, 2.2, 2.0) if kind == "elements" else (0.0, 1.1, 1.0)
                        predicted_s = predict(done, point.size, "mean_s", lo, hi, first)
                        # memory: a single point is often all fixed overhead (arena, JIT), so it needs two
                        predicted_mb = predict(done, point.size, "peak_delta_mb", 0.0, hi, None)
                    if broken:
                        rec = {"status": "skipped", "reason": broken}
                    elif predicted_s is not None and predicted_s > settings.max_call_s:
                        rec = {"status": "skipped", "reason": f"predicted {predicted_s:.1f} s per call > max_call_s {settings.max_call_s:g} s"}
                    elif predicted_mb is not None and mem_limit_mb and predicted_mb > mem_limit_mb:
                        rec = {"status": "skipped", "reason": f"predicted {predicted_mb:.0f} MB > {mem_limit_mb:.0f} MB memory limit"}
                    else:
                        rec = run_in_fresh_process(point, settings, Path(tmp))
                        if rec["status"] == "failed":
                            broken = f"a smaller size failed ({rec['reason']})"
                    rec = {**base, **rec}
                    if rec["status"] == "ok":
                        if impl == HEPZOO:
                            key = (batch, n)
                            if key not in flop_cache:
                                flop_cache[key] = onnx_matmul_flops(onnx_path, {"batch": batch, "elements": n or 0})
                            rec["flops_per_call"] = flop_cache[key]["flops"]
                            rec["flop_method"] = "ONNX graph MatMul/Gemm, " + flop_cache[key]["shape_inference"]
                        _derive(rec, peak_measured, peak_core)
                        if kind != "batched":
                            done.append((point.size, rec))
                    results["records"].append(rec)
                    log(_describe(rec))
                    save()
        if e2e is not None:
            log("end to end ...")
            try:
                results["end_to_end"] = e2e(settings)
            except Exception as err:  # noqa: BLE001 - recorded; the matrix results stand
                results["end_to_end"] = {"status": "failed", "reason": f"{type(err).__name__}: {err}"}
            save()
    return results


def _derive(rec: dict[str, Any], peak: float | None, peak_core: float | None = None) -> None:
    """Throughputs, per-event FLOPs, achieved GFLOP/s, the fraction of ``peak`` (the GEMM peak measured at the
    record's thread count) and of the nominal peak (``peak_core`` per core x the threads used)."""
    mean = rec["mean_s"]
    rec["events_per_s"] = rec["batch"] / mean
    rec["objects_per_s"] = rec["objects_per_call"] / mean
    flops = rec.get("flops_per_call")
    rec["flops_per_event"] = flops / rec["batch"] if flops else None
    rec["gflops_per_s"] = flops / mean / 1e9 if flops else None
    rec["fraction_of_peak"] = rec["gflops_per_s"] / peak if peak and rec["gflops_per_s"] else None
    nominal = peak_core * rec["threads"] if peak_core else None
    rec["fraction_of_nominal_peak"] = rec["gflops_per_s"] / nominal if nominal and rec["gflops_per_s"] else None


def _describe(rec: dict[str, Any]) -> str:
    size = f"{rec['batch']} x {rec['n_elements']} el" if rec["n_elements"] else f"batch {rec['batch']}"
    head = f"{rec['model']:18s} {rec['label']:28s} {size:16s}"
    if rec["status"] != "ok":
        return f"{head} {rec['status']}: {rec['reason']}"
    ci = f"±{100 * rec['rel_ci95']:.1f}%" if rec.get("rel_ci95") is not None else "(1 call)"
    gf = f"{rec['gflops_per_s']:.1f} GFLOP/s" if rec.get("gflops_per_s") else ""
    return (
        f"{head} {1e3 * rec['mean_s']:10.3f} ms {ci:8s} {rec['events_per_s']:12.1f} ev/s "
        f"{rec['peak_delta_mb']:8.1f} MB  {gf}"
    )
