"""Process isolation of ``hepzoo bench``: each point is built, timed and measured in a fresh process.

* **Isolation.** Every point runs in its own process, forked from a server that has only imported the
  libraries (``multiprocessing`` "forkserver"): no arena, cache or thread pool survives from another point.
  The process writes its record (or its error) to a JSON file; a crash, a timeout or an out-of-memory kill
  becomes a ``failed`` record.
* **Memory.** ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the process's peak resident set; a forked child
  starts from the RSS it inherits): ``peak_delta_mb`` = peak RSS after the timed calls minus the RSS just before
  the first call (model and inputs loaded), i.e. the working memory of inference (arenas, activations,
  outputs). Native allocations count, unlike ``tracemalloc``. When setup itself peaked higher than inference,
  the delta is an upper bound (``memory_upper_bound``).
* **What runs.** The release in PyTorch eager (the registry model rebuilt with the release's ``weights.pt``,
  loaded with ``weights_only=True``), a runtime backend on the release's ``model.onnx``, or particleflow's
  ``MLPF`` at the release's size (:mod:`hepzoo.benchmarks.reference`), on the registry's seeded inputs.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import resource
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from hepzoo.benchmarks.flops import torch_flops
from hepzoo.benchmarks.points import HEPZOO, PARTICLEFLOW, TORCH_EAGER, BenchSettings, Point
from hepzoo.benchmarks.results import write_json_atomic
from hepzoo.benchmarks.timing import summarize, time_calls

__all__ = ["build_call", "hepzoo_torch_model", "measure_point", "run_in_fresh_process"]

# what the forkserver imports once, so that each point's process starts with the libraries loaded
_PRELOAD = ["numpy", "torch", "onnx", "onnxruntime", "hepzoo.models", "hepzoo.runtime", "hepzoo.benchmarks.isolation"]


def _rss_mb() -> float:
    """Current resident set of this process (MB)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024**2


def _maxrss_mb() -> float:
    """Peak resident set of this process (MB); ru_maxrss is KiB on Linux, bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024


def _release(point: Point) -> tuple[Any, dict[str, Any]]:
    from hepzoo.export.zoo import find_release

    release = find_release(point.model, point.version)
    return release, release.config["model"]


def _point_inputs(point: Point, seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs from the registry's ``make_inputs`` (plausible physical ranges; MLPF: first event full)."""
    from hepzoo.models import get_spec

    _, cfg = _release(point)
    inputs = get_spec(cfg["name"]).make_inputs(point.batch, point.n_elements or 0, seed)
    return {k: v.numpy() for k, v in inputs.items()}


def hepzoo_torch_model(point: Point) -> Any:
    """The registry model with the release's hyper-parameters and ``weights.pt`` (``weights_only=True``)."""
    from hepzoo.export.zoo import WEIGHTS
    from hepzoo.models import create_model
    from hepzoo.training.checkpoint import load_weights_file

    release, cfg = _release(point)
    model = create_model(cfg["name"], **cfg.get("kwargs", {}))
    model.load_state_dict(load_weights_file(release.path / WEIGHTS))
    return model.eval()


def _onnx_path(point: Point) -> Path:
    from hepzoo.export.card import load_card

    release, _ = _release(point)
    card = load_card(release.path, verify_onnx=False)
    return release.path / card.onnx.file


def build_call(point: Point, inputs: Mapping[str, np.ndarray], threads: int) -> Callable[[], Any]:
    if point.backend != TORCH_EAGER:
        if point.implementation != HEPZOO:
            raise ValueError(f"{point.implementation} runs only in {TORCH_EAGER}, not {point.backend}")
        from hepzoo.runtime import create_backend

        backend = create_backend(point.backend, _onnx_path(point), intra_op_threads=threads)
        feeds = dict(inputs)
        return lambda: backend.run(feeds)
    import torch

    if point.implementation == PARTICLEFLOW:
        from hepzoo.benchmarks.reference import build_reference

        _, cfg = _release(point)
        model, _ = build_reference(cfg["name"], cfg.get("kwargs", {}))
        args = (torch.from_numpy(inputs["features"]), torch.from_numpy(inputs["mask"]))
    else:
        model = hepzoo_torch_model(point)
        from hepzoo.models import get_spec

        _, cfg = _release(point)
        args = tuple(torch.from_numpy(inputs[name]) for name in get_spec(cfg["name"]).input_names)

    def call() -> Any:
        with torch.inference_mode():
            return model(*args)

    return call


def _set_threads(threads: int) -> None:
    """torch's intra-op pool (ONNX Runtime and Numba backends take their thread count when built; the Numba
    backend's kernels are serial). Numba's own pool is left alone: launching it next to torch's OpenMP pool
    made small torch calls tens of times slower."""
    import torch

    torch.set_num_threads(threads)


def measure_point(point: Point, settings: BenchSettings) -> dict[str, Any]:
    """Time one point in this process (call it in a fresh process: :func:`run_in_fresh_process`)."""
    _set_threads(settings.threads)
    inputs = _point_inputs(point, settings.seed)
    call = build_call(point, inputs, settings.threads)
    rss_before, peak_before = _rss_mb(), _maxrss_mb()
    timing = time_calls(call, settings)
    peak_after = _maxrss_mb()
    rec: dict[str, Any] = {
        "status": "ok",
        "reason": None,
        "warmup_calls": timing.warmup_calls,
        "stop": timing.stop,
        **summarize(timing.samples),
    }
    rec["cpu_mean_s"] = timing.cpu_s / len(timing.samples)
    rec["wall_over_cpu"] = rec["mean_s"] / rec["cpu_mean_s"] if rec["cpu_mean_s"] > 0 else None
    rec.update(
        rss_setup_mb=rss_before,
        peak_rss_mb=peak_after,
        peak_delta_mb=max(0.0, peak_after - rss_before),
        memory_upper_bound=bool(peak_after <= peak_before),
    )
    mask = inputs.get("mask")
    rec["objects_per_call"] = int(mask.sum()) if mask is not None else int(point.batch)
    if point.implementation == PARTICLEFLOW:  # after timing and memory: the counter's own overhead is not measured
        rec["flops_per_call"] = torch_flops(call)
        rec["flop_method"] = "torch.utils.flop_counter.FlopCounterMode (mm, addmm, bmm, attention)"
    return rec


def _child(point: dict[str, Any], settings: dict[str, Any], result_path: str) -> None:
    """Entry point of a point's process: measure and write the record (or the error) to ``result_path``."""
    try:
        rec = measure_point(Point(**point), BenchSettings(**settings))
    except BaseException as err:  # noqa: BLE001 - reported in the results, the run goes on
        rec = {"status": "failed", "reason": f"{type(err).__name__}: {err}"}
    write_json_atomic(result_path, rec)


@functools.lru_cache(maxsize=1)
def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def run_in_fresh_process(point: Point, settings: BenchSettings, workdir: Path) -> dict[str, Any]:
    """:func:`measure_point` in a process forked from the preloaded server; failures become records."""
    result_path = workdir / f"point-{uuid.uuid4().hex[:12]}.json"
    proc = _context().Process(target=_child, args=(asdict(point), asdict(settings), str(result_path)), daemon=True)
    proc.start()
    proc.join(settings.timeout_s)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return {"status": "failed", "reason": f"timed out after {settings.timeout_s:.0f} s"}
    if not result_path.exists():
        hint = " (killed: out of memory?)" if proc.exitcode in (-9, 137) else ""
        return {"status": "failed", "reason": f"the point's process exited with code {proc.exitcode}{hint}"}
    rec = json.loads(result_path.read_text())
    result_path.unlink()
    return rec
