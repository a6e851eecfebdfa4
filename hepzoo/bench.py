"""``hepzoo bench``: speed, latency, memory and FLOPs of every zoo model on every backend, next to the references.

The matrix: each zoo release x each implementation, i.e. the release in PyTorch eager (``torch-eager``: the
registry model rebuilt with the release's ``weights.pt``, loaded with ``weights_only=True``), every backend of
:func:`hepzoo.runtime.available_backends` (picked up automatically) and, for MLPF, jpata/particleflow's own
``MLPF`` at the same size (:mod:`hepzoo.benchmarks.reference`) x sizes: batch 1, 100, 10^4 for flash-sim; one event
of 256 ... 16384 elements per call for MLPF (how cost grows with event size) plus one batched point.

How each point is measured (recorded in the results file under ``settings`` and ``methods``):

* **Isolation.** Every point runs in its own process, forked from a server that has only imported the
  libraries (``multiprocessing`` "forkserver"): no arena, cache or thread pool survives from another point.
* **Timing.** ``time.perf_counter`` around each call; warm-up calls (at least one, until ``warmup_s``) are
  excluded; repetitions stop when the 95% confidence interval of the mean (Student t) is within
  ``target_rel_ci`` of the mean, or when the time budget is spent (at least 3 calls), or at ``max_reps``.
* **Memory.** ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the process's peak resident set; a forked child
  starts from the RSS it inherits): ``peak_delta_mb`` = peak RSS after the timed calls minus the RSS just before
  the first call (model and inputs loaded), i.e. the working memory of inference (arenas, activations,
  outputs). Native allocations count, unlike ``tracemalloc``. When setup itself peaked higher than inference,
  the delta is an upper bound (``memory_upper_bound``).
* **FLOPs.** For hepzoo models: counted on the exported ONNX graph at the concrete size, ``2*M*N*K`` (times
  broadcast batch dimensions) for every ``MatMul``/``Gemm``, shapes from ONNX shape inference (ONNX Runtime's
  symbolic shape inference where ONNX's cannot resolve a shape); element-wise ops, softmax and normalisation
  are not counted. For the particleflow reference: ``torch.utils.flop_counter.FlopCounterMode`` on one forward
  (mm/addmm/bmm, and attention via ``sdpa_flop_count``). Both count multiply-adds as 2 FLOPs.
* **Peak.** ``cores x frequency x FP32 FLOPs per cycle``, the last from the CPU's vendor, family and flags
  (:func:`machine_info` records the reasoning); the fraction of peak uses the threads of the run.

Long calls are not started when the trend of the smaller sizes predicts more than ``max_call_s`` per call or
more than ``memory_fraction`` of the available memory; such points are recorded as ``skipped`` with the reason.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import resource
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hepzoo.atomic import write_text_atomic

__all__ = [
    "FLASHSIM_BATCHES",
    "MLPF_BATCHED",
    "MLPF_ELEMENTS",
    "PARTICLEFLOW",
    "SCHEMA",
    "TORCH_EAGER",
    "BenchSettings",
    "Point",
    "Timing",
    "gemm_flops",
    "machine_info",
    "matmul_flops",
    "mean_ci",
    "onnx_matmul_flops",
    "run_benchmarks",
    "summarize",
    "time_calls",
    "torch_flops",
    "end_to_end",
    "validate_results",
    "write_json_atomic",
]

SCHEMA = "hepzoo-bench/1"
TORCH_EAGER = "torch-eager"  # the release's registry model in PyTorch eager
PARTICLEFLOW = "particleflow"  # jpata/particleflow's MLPF (implementation name; it runs in torch-eager)
HEPZOO = "hepzoo"
FLASHSIM_BATCHES: tuple[int, ...] = (1, 100, 10_000)
MLPF_ELEMENTS: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192, 16384)
MLPF_BATCHED: tuple[int, int] = (32, 512)  # (events, elements) of the batched MLPF point
QUICK_MLPF_ELEMENTS: tuple[int, ...] = (256, 1024, 4096)
_PRELOAD = ["numpy", "torch", "onnx", "onnxruntime", "hepzoo.models", "hepzoo.runtime", "hepzoo.bench"]


# ---- settings and points ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchSettings:
    """How hard each point is measured (see the module docstring)."""

    threads: int = 1
    budget_s: float = 2.0  # timed calls stop once this much time is spent (and >= 3 calls)
    warmup_s: float = 0.3  # warm-up: at least one call, until this much time
    target_rel_ci: float = 0.05  # stop early when the 95% CI half-width is within this fraction of the mean
    min_reps: int = 5
    max_reps: int = 100_000
    max_call_s: float = 8.0  # skip points predicted to take longer than this per call
    memory_fraction: float = 0.5  # skip points predicted to need more than this fraction of MemAvailable
    timeout_s: float = 600.0  # a point's process is killed after this long
    seed: int = 0
    quick: bool = False

    @classmethod
    def create(cls, quick: bool = False, **overrides: Any) -> BenchSettings:
        """Defaults for a full run, or for ``quick`` (a check that everything works: tiny budgets)."""
        base = cls(budget_s=0.3, warmup_s=0.05, min_reps=3, max_call_s=3.0, timeout_s=300.0, quick=True) if quick else cls()
        settings = replace(base, **{k: v for k, v in overrides.items() if v is not None})
        if settings.threads < 1 or settings.budget_s <= 0 or settings.warmup_s < 0 or settings.target_rel_ci <= 0:
            raise ValueError(f"invalid bench settings: {settings}")
        return settings


@dataclass(frozen=True)
class Point:
    """One cell of the matrix."""

    model: str  # zoo release name
    version: str
    family: str  # "mlpf" | "flashsim"
    implementation: str  # HEPZOO | PARTICLEFLOW
    backend: str  # TORCH_EAGER or a runtime backend name
    kind: str  # "batch" (flash-sim), "elements" (MLPF, one event), "batched" (MLPF, several events)
    batch: int
    n_elements: int | None = None

    @property
    def label(self) -> str:
        return f"{PARTICLEFLOW} ({self.backend})" if self.implementation == PARTICLEFLOW else self.backend

    @property
    def size(self) -> int:
        """The axis a series grows along: elements for MLPF, batch for flash-sim."""
        return int(self.n_elements if self.kind == "elements" else self.batch)


# ---- statistics --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _t_quantile(confidence: float, dof: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2.0, dof))


def mean_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its ``confidence`` interval (Student t); ``inf`` half-width for one sample."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci needs at least one sample")
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.inf
    return mean, _t_quantile(confidence, int(x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)


def summarize(samples: Sequence[float]) -> dict[str, float | int]:
    """Per-call seconds -> mean, 95% CI half-width (absolute and relative), p50, p99, min, count."""
    x = np.asarray(samples, dtype=np.float64)
    mean, half = mean_ci(x)
    return {
        "reps": int(x.size),
        "mean_s": mean,
        "ci95_s": half if math.isfinite(half) else None,
        "rel_ci95": half / mean if math.isfinite(half) and mean > 0 else None,
        "p50_s": float(np.percentile(x, 50)),
        "p99_s": float(np.percentile(x, 99)),
        "min_s": float(x.min()),
    }


@dataclass
class Timing:
    """What :func:`time_calls` measured: wall seconds per timed call, and the process CPU seconds over them."""

    samples: list[float]
    warmup_calls: int
    stop: str  # "ci" | "budget" | "max_reps"
    cpu_s: float  # process CPU time of all timed calls (wall >> CPU with one thread: the machine was busy)


def time_calls(
    call: Callable[[], Any],
    settings: BenchSettings,
    clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.process_time,
) -> Timing:
    """Warm up, then time ``call`` until the stopping rule of the module docstring."""
    _t_quantile(0.95, 1)  # imports scipy now, not inside the timed loop
    start = clock()
    warm = 0
    while True:
        call()
        warm += 1
        if clock() - start >= settings.warmup_s or warm >= 1000:
            break
    samples: list[float] = []
    n, mean, m2 = 0, 0.0, 0.0  # Welford running mean and sum of squared deviations
    cpu0 = cpu_clock()
    t0 = clock()
    stop = ""
    while not stop:
        s = clock()
        call()
        e = clock()
        dt = e - s
        samples.append(dt)
        n += 1
        delta = dt - mean
        mean += delta / n
        m2 += delta * (dt - mean)
        elapsed = e - t0
        if n >= settings.max_reps:
            stop = "max_reps"
        elif n >= settings.min_reps and mean > 0 and elapsed >= 0.25 * settings.budget_s and (
            _t_quantile(0.95, n - 1) * math.sqrt(max(m2, 0.0) / (n - 1) / n) <= settings.target_rel_ci * mean
        ):
            stop = "ci"
        elif (elapsed >= settings.budget_s and n >= 3) or elapsed >= 3 * settings.budget_s:
            stop = "budget"
    return Timing(samples, warm, stop, cpu_clock() - cpu0)


# ---- FLOPs -------------------------------------------------------------------------------------------------


def matmul_flops(a: Sequence[int], b: Sequence[int]) -> int:
    """FLOPs of ONNX/NumPy ``MatMul`` (2 per multiply-add), with 1-D operands and broadcast batch dims."""
    a, b = [int(d) for d in a], [int(d) for d in b]
    if not a or not b:
        raise ValueError(f"MatMul of a scalar: shapes {a} x {b}")
    a = [1, *a] if len(a) == 1 else a
    b = [*b, 1] if len(b) == 1 else b
    m, k = a[-2], a[-1]
    k2, n = b[-2], b[-1]
    if k != k2:
        raise ValueError(f"MatMul inner dimensions differ: {a} x {b}")
    batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return 2 * math.prod(batch) * m * n * k


def gemm_flops(a: Sequence[int], b: Sequence[int], trans_a: bool = False, trans_b: bool = False) -> int:
    """FLOPs of ONNX ``Gemm`` (``alpha*A'B' + beta*C``: the bias add is not counted)."""
    if len(a) != 2 or len(b) != 2:
        raise ValueError(f"Gemm needs 2-D operands, got {list(a)} x {list(b)}")
    m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
    k2, n = (b[1], b[0]) if trans_b else (b[0], b[1])
    if k != k2:
        raise ValueError(f"Gemm inner dimensions differ: {list(a)} (transA={trans_a}) x {list(b)} (transB={trans_b})")
    return 2 * int(m) * int(n) * int(k)


_COUNTED = ("MatMul", "Gemm")


def _known_shapes(model: Any) -> dict[str, list[int | None]]:
    g = model.graph
    shapes: dict[str, list[int | None]] = {t.name: [int(d) for d in t.dims] for t in g.initializer}
    for v in [*g.input, *g.value_info, *g.output]:
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
    for node in g.node:  # Constant nodes carry their shape in the attribute
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = [int(d) for d in attr.t.dims]
    return shapes


def _count_graph(model: Any) -> tuple[dict[str, int], list[str]]:
    """(FLOPs by op type, descriptions of the counted nodes whose operand shapes are unknown)."""
    shapes = _known_shapes(model)
    flops = {op: 0 for op in _COUNTED}
    unresolved = []
    for node in model.graph.node:
        if node.op_type not in _COUNTED:
            continue
        a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
        if a is None or b is None or None in a or None in b:
            unresolved.append(f"{node.op_type} node {node.name!r} (inputs {list(node.input[:2])}: shapes {a} x {b})")
            continue
        if node.op_type == "MatMul":
            flops["MatMul"] += matmul_flops(a, b)
        else:
            attrs = {at.name: at.i for at in node.attribute}
            flops["Gemm"] += gemm_flops(a, b, bool(attrs.get("transA", 0)), bool(attrs.get("transB", 0)))
    return flops, unresolved


def onnx_matmul_flops(model: str | os.PathLike | Any, dims: Mapping[str, int]) -> dict[str, Any]:
    """MatMul/Gemm FLOPs of an ONNX graph with its symbolic input axes set to ``dims`` (e.g. batch, elements).

    Returns ``{"flops", "by_op", "shape_inference"}``. Raises ``ValueError`` naming the file and the node when
    an axis size is missing or a counted node's operand shape cannot be inferred.
    """
    import onnx

    where = str(model) if not isinstance(model, onnx.ModelProto) else (model.graph.name or "<onnx model>")
    proto = onnx.ModelProto()
    proto.CopyFrom(model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False))
    for f in proto.functions:
        if any(n.op_type in _COUNTED for n in f.node):
            raise ValueError(f"{where}: MatMul/Gemm inside local function {f.name!r}; inline the model's functions first")
    for node in proto.graph.node:
        if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute):
            raise ValueError(f"{where}: node {node.name!r} ({node.op_type}) has a subgraph; FLOP counting covers flat graphs only")
    initializers = {t.name for t in proto.graph.initializer}
    for inp in proto.graph.input:
        if inp.name in initializers:
            continue
        for d in inp.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                if d.dim_param not in dims:
                    raise ValueError(
                        f"{where}: input {inp.name!r} has symbolic axis {d.dim_param!r}; give its size (got {sorted(dims)})"
                    )
                d.dim_value = int(dims[d.dim_param])
    # the exporter's value_info holds symbolic expressions that would shadow the concrete shapes: infer afresh
    del proto.graph.value_info[:]
    for out in proto.graph.output:
        out.type.tensor_type.ClearField("shape")
    by_op, unresolved = _count_graph(onnx.shape_inference.infer_shapes(proto, data_prop=True))
    method = "onnx.shape_inference (data_prop)"
    if unresolved:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        by_op, unresolved = _count_graph(SymbolicShapeInference.infer_shapes(proto, auto_merge=False))
        method = "onnxruntime.tools.symbolic_shape_infer"
    if unresolved:
        raise ValueError(f"{where}: could not infer operand shapes at {dict(dims)} for " + "; ".join(unresolved[:3]))
    return {"flops": int(sum(by_op.values())), "by_op": by_op, "shape_inference": method}


def _sdpa_cpu_flops(query: Sequence[int], key: Sequence[int], value: Sequence[int], *args: Any, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def torch_flops(call: Callable[[], Any]) -> int:
    """FLOPs of one ``call()`` by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and attention).

    torch's registry has no formula for the CPU flash-attention kernel, so it is added (same formula as the
    GPU kernels: ``sdpa_flop_count``).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    custom = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:
        custom[cpu_flash] = _sdpa_cpu_flops
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=custom) as counter:
        call()
    return int(counter.get_total_flops())


# ---- machine -----------------------------------------------------------------------------------------------


def _cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    return info


def fp32_flops_per_cycle(vendor: str, family: int | None, model: int | None, flags: set[str]) -> tuple[int, str]:
    """Peak FP32 FLOPs per cycle per core (FMA = 2 FLOPs) and the reasoning, from vendor, family and flags."""
    fma = "fma" in flags
    if "AMD" in vendor and family is not None:
        if family == 0x17 and (model or 0) < 0x30 and "avx2" in flags:
            return 16, "AMD Zen 1 (family 0x17, model < 0x30): 2 x 128-bit FMA pipes"
        if family == 0x1A and "avx512f" in flags:
            return 64, "AMD Zen 5 (family 0x1a) with AVX-512: 2 x 512-bit FMA pipes (some mobile parts: 256-bit)"
        if family in (0x17, 0x19, 0x1A) and "avx2" in flags and fma:
            suffix = ", AVX-512 executed as 2 x 256-bit" if "avx512f" in flags else ""
            return 32, f"AMD Zen 2-4 (family {family:#x}): 2 x 256-bit FMA pipes{suffix}"
    if "avx512f" in flags and fma:
        return 64, "AVX-512 with FMA: assumes 2 x 512-bit FMA units (Xeon Gold/Platinum; parts with one unit: 32)"
    if "avx2" in flags and fma:
        return 32, "AVX2 with FMA: 2 x 256-bit FMA units"
    if "avx" in flags:
        return 16, "AVX without FMA: one 256-bit multiply + one 256-bit add per cycle"
    return 8, "SSE: one 128-bit multiply + one 128-bit add per cycle"


def _cgroup_cpus() -> float | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _meminfo_gb(field: str) -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, frequency and the estimated FP32 peak (with how it was estimated)."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    vendor = info.get("vendor_id", platform.processor() or platform.machine())
    family = int(info["cpu family"]) if info.get("cpu family", "").isdigit() else None
    model = int(info["model"]) if info.get("model", "").isdigit() else None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_cpus()
    cores = min(usable, quota) if quota else usable
    freq_ghz, freq_source = None, None
    max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_freq.exists():
        freq_ghz, freq_source = int(max_freq.read_text()) / 1e6, str(max_freq) + " (maximum, boost included)"
    elif info.get("cpu MHz"):
        freq_ghz = float(info["cpu MHz"]) / 1e3
        freq_source = "/proc/cpuinfo 'cpu MHz' (no cpufreq: under a hypervisor this is the nominal clock; boost unseen)"
    per_cycle, why = fp32_flops_per_cycle(vendor, family, model, flags)
    simd = [f for f in ("avx512f", "avx2", "fma", "avx", "sse4_2") if f in flags]
    per_core = freq_ghz * per_cycle if freq_ghz else None
    return {
        "cpu": info.get("model name", platform.processor() or platform.machine()),
        "vendor": vendor,
        "cpu_family": family,
        "cpu_model": model,
        "simd_flags": simd,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": cores,
        "ram_gb": _meminfo_gb("MemTotal"),
        "ram_available_gb": _meminfo_gb("MemAvailable"),
        "freq_ghz": freq_ghz,
        "freq_source": freq_source,
        "fp32_flops_per_cycle": per_cycle,
        "flops_per_cycle_reason": why,
        "peak_gflops_per_core": per_core,
        "peak_gflops": per_core * cores if per_core else None,
        "peak_method": "usable cores x frequency x FP32 FLOPs per cycle per core",
        "gpus": gpu_info(),
        "os": f"{platform.system()} {platform.release()}",
        "hostname_hash": uuid.uuid5(uuid.NAMESPACE_DNS, platform.node()).hex[:8],
    }


def gpu_info() -> list[str]:
    """Names and memory of the NVIDIA GPUs nvidia-smi sees (empty without one): GPU rows are labelled with it."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def library_versions() -> dict[str, str | None]:
    """Versions of Python and of every library the benchmark touches (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("hepzoo", "torch", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "numba", "scipy", "particleflow"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


# ---- one point, in its own process -------------------------------------------------------------------------


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


def _hepzoo_torch_model(point: Point) -> Any:
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


def _build_call(point: Point, inputs: Mapping[str, np.ndarray], threads: int) -> Callable[[], Any]:
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
        model = _hepzoo_torch_model(point)
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
    """Time one point in this process (call it in a fresh process: see :func:`run_benchmarks`)."""
    _set_threads(settings.threads)
    inputs = _point_inputs(point, settings.seed)
    call = _build_call(point, inputs, settings.threads)
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


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """JSON to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path


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


# ---- the matrix --------------------------------------------------------------------------------------------


def _sizes(family: str, quick: bool) -> list[tuple[str, int, int | None]]:
    """(kind, batch, elements) in increasing cost."""
    if family == "flashsim":
        return [("batch", b, None) for b in FLASHSIM_BATCHES]
    elements = QUICK_MLPF_ELEMENTS if quick else MLPF_ELEMENTS
    return [("elements", 1, n) for n in elements] + [("batched", MLPF_BATCHED[0], MLPF_BATCHED[1])]


def _predict(
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

    batch, n = (100, 0) if card.family == "flashsim" else (2, 256)
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
    if family == "mlpf" and PARTICLEFLOW in backends and reference_ok:
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
    e2e: Callable[[BenchSettings], dict[str, Any]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the matrix and return the results (also written to ``out`` after every point, atomically).

    ``sizes`` overrides the sizes per family (``{"mlpf": [("elements", 1, 256)], ...}``, mainly for tests);
    ``e2e`` (e.g. a partial of :func:`end_to_end`) is called last and its dict stored under ``end_to_end``.
    """
    import tempfile

    from hepzoo.benchmarks import reference as bench_reference
    from hepzoo.export.card import load_card
    from hepzoo.models import get_spec

    settings = settings or BenchSettings.create()
    releases = resolve_models(models)
    names = resolve_backends(backends)
    ref_ok, ref_why = bench_reference.available()
    machine = machine_info()
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine,
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
            "peak": machine["peak_method"],
            "inputs": "the registry's make_inputs(batch, elements, seed): plausible physical ranges; MLPF one-event "
            "points have every element real, batched MLPF events have between N/2 and N real elements",
        },
        "reference": {"package": bench_reference.PACKAGE, "available": ref_ok, "detail": ref_why, "models": {}},
        "parity": [],
        "records": [],
        "end_to_end": None,
    }
    if PARTICLEFLOW in names and not ref_ok:
        log(f"reference unavailable: {ref_why}")
    peak_core = machine["peak_gflops_per_core"]
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
            if family == "mlpf" and ref_ok and PARTICLEFLOW in names:
                results["reference"]["models"][release.name] = bench_reference.reference_config(
                    cfg["name"], cfg.get("kwargs", {})
                )
            onnx_backends = [b for b in names if b not in (TORCH_EAGER, PARTICLEFLOW)]
            if onnx_backends:
                import torch

                torch.set_num_threads(settings.threads)
                model = _hepzoo_torch_model(Point(release.name, release.version, family, HEPZOO, TORCH_EAGER, "batch", 1))
                for b in onnx_backends:
                    try:
                        par = _parity(card, onnx_path, model, spec, b, settings.threads)
                    except Exception as err:  # noqa: BLE001 - recorded; the timing points will show the failure too
                        par = {"backend": b, "error": f"{type(err).__name__}: {err}", "within_tolerance": False}
                    results["parity"].append({"model": release.name, **par})
            flop_cache: dict[tuple[int, int | None], dict[str, Any]] = {}
            point_sizes = list(sizes[family]) if sizes and family in sizes else _sizes(family, settings.quick)
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
                        predicted_s = _predict(done, point.size, "mean_s", lo, hi, first)
                        # memory: a single point is often all fixed overhead (arena, JIT), so it needs two
                        predicted_mb = _predict(done, point.size, "peak_delta_mb", 0.0, hi, None)
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
                        _derive(rec, peak_core)
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


def _derive(rec: dict[str, Any], peak_core: float | None) -> None:
    """Throughputs, per-event FLOPs, achieved GFLOP/s and fraction of the peak of the threads used."""
    mean = rec["mean_s"]
    rec["events_per_s"] = rec["batch"] / mean
    rec["objects_per_s"] = rec["objects_per_call"] / mean
    flops = rec.get("flops_per_call")
    rec["flops_per_event"] = flops / rec["batch"] if flops else None
    rec["gflops_per_s"] = flops / mean / 1e9 if flops else None
    peak = peak_core * rec["threads"] if peak_core else None
    rec["fraction_of_peak"] = rec["gflops_per_s"] / peak if peak and rec["gflops_per_s"] else None


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


# ---- end to end --------------------------------------------------------------------------------------------


def end_to_end(
    data: str | os.PathLike,
    model: str = "mlpf-gnnlsh",
    backend: str = "auto",
    threads: int = 1,
    repeats: int = 3,
    seed: int = 1,
    step_size: int = 1000,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """``Session.run_file`` (what ``hepzoo run`` calls) on ``data`` vs the sum of its parts, best of ``repeats``.

    Parts, each timed alone on the same chunks: uproot read (``iterate_events`` of the collections the model
    needs), model compute (``Session.run`` per chunk) and write (uproot ``mktree``/``extend`` of the event
    identifiers and the objects into a temporary ROOT file). The file is read before timing, so every pass
    reads it from the page cache. Returns ``{"status": "unavailable", ...}`` while the runtime has no ``run_file``.
    """
    import tempfile

    import awkward as ak
    import uproot

    from hepzoo.datasets import io, schema
    from hepzoo.runtime import Session

    if not hasattr(Session, "run_file"):
        return {"status": "unavailable", "reason": "Session.run_file (runtime/runfile.py, `hepzoo run`) is not in this checkout"}
    from hepzoo.runtime import runfile

    data = Path(data)
    if not data.is_file():
        raise FileNotFoundError(f"end-to-end input {str(data)!r} does not exist (make one: hepzoo generate ttbar -n 200 -o {data})")
    import torch

    torch.set_num_threads(threads)
    session = Session.load(model, backend=backend, intra_op_threads=threads)
    generative = session.card.family == "flashsim"
    run_kw: dict[str, Any] = {"seed": seed} if generative else {}
    collections = runfile.input_collections(session)
    collection = runfile.output_collection(session)
    best: dict[str, float] = {}

    def keep(step: str, seconds: float) -> None:
        best[step] = min(best.get(step, math.inf), seconds)

    with tempfile.TemporaryDirectory(prefix="hepzoo-bench-e2e-") as tmp:
        chunks = list(io.iterate_events(data, step_size=step_size, collections=collections))  # warms the page cache
        session.run(chunks[0][:1], first_entry=0, **run_kw)  # warm-up: arenas, JIT compilation
        n_events = sum(len(c) for c in chunks)
        for i in range(repeats):
            t = clock()
            chunks = list(io.iterate_events(data, step_size=step_size, collections=collections))
            keep("read (uproot)", clock() - t)
            t = clock()
            outputs, first = [], 0
            for chunk in chunks:
                outputs.append(session.run(chunk, first_entry=first, **run_kw))
                first += len(chunk)
            keep("compute (Session.run)", clock() - t)
            t = clock()
            with uproot.recreate(Path(tmp) / f"parts-{i}.root") as out:
                tree = None
                first = 0
                for chunk, objects in zip(chunks, outputs, strict=True):
                    arrays: dict[str, Any] = {
                        k: ak.to_numpy(chunk[k]).astype(dt, copy=False) for k, dt in schema.EVENT_SCALARS.items() if k in chunk.fields
                    }
                    arrays["entry"] = np.arange(first, first + len(chunk), dtype=np.int64)
                    arrays[collection] = objects
                    if tree is None:
                        types = {k: (v.dtype if isinstance(v, np.ndarray) else v.type.content) for k, v in arrays.items()}
                        tree = out.mktree("events", types)
                    tree.extend(arrays)
                    first += len(chunk)
            keep("write (uproot)", clock() - t)
            t = clock()
            session.run_file(data, Path(tmp) / f"run-{i}.root", overwrite=True, step_size=step_size, **run_kw)
            keep("run_file", clock() - t)
        n_elements = int(sum(int(ak.sum(ak.num(c[p], axis=1))) for c in chunks for p in collections if p in c.fields))
    parts = [{"step": k, "seconds": v} for k, v in best.items() if k != "run_file"]
    total = sum(p["seconds"] for p in parts)
    return {
        "status": "ok",
        "input": str(data),
        "events": n_events,
        "elements": n_elements,
        "model": session.name,
        "backend": session.backend_name,
        "threads": threads,
        "repeats": repeats,
        "step_size": step_size,
        "command": f"hepzoo run {session.name} (Session.run_file)",
        "parts": parts,
        "sum_s": total,
        "run_s": best["run_file"],
        "overhead": best["run_file"] / total - 1.0,
    }


# ---- results file ------------------------------------------------------------------------------------------

_RECORD_KEYS = {
    "model": str,
    "version": str,
    "family": str,
    "implementation": str,
    "backend": str,
    "label": str,
    "kind": str,
    "batch": int,
    "status": str,
    "threads": int,
}
_OK_KEYS = {
    "reps": int,
    "mean_s": float,
    "p50_s": float,
    "p99_s": float,
    "events_per_s": float,
    "objects_per_s": float,
    "peak_delta_mb": float,
    "peak_rss_mb": float,
}


def validate_results(results: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first field that does not follow the results-file schema."""
    if results.get("schema") != SCHEMA:
        raise ValueError(f"results schema is {results.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("machine", "versions", "settings", "methods", "reference", "parity", "records"):
        if key not in results:
            raise ValueError(f"results have no {key!r}")
    for i, rec in enumerate(results["records"]):
        required = {**_RECORD_KEYS, **(_OK_KEYS if rec.get("status") == "ok" else {})}
        for key, typ in required.items():
            value = rec.get(key)
            if not isinstance(value, typ) and not (typ is float and isinstance(value, int)):
                raise ValueError(f"records[{i}] ({rec.get('model')}, {rec.get('label')}): {key!r} is {value!r}, expected {typ.__name__}")
        if rec["status"] not in ("ok", "skipped", "failed"):
            raise ValueError(f"records[{i}]: status {rec['status']!r}")
        if rec["status"] != "ok" and not rec.get("reason"):
            raise ValueError(f"records[{i}]: a {rec['status']} record needs a reason")
        if rec["family"] == "mlpf" and not isinstance(rec.get("n_elements"), int):
            raise ValueError(f"records[{i}]: an MLPF record needs n_elements")
        if rec["status"] == "ok" and not rec["p50_s"] <= rec["p99_s"]:
            raise ValueError(f"records[{i}]: p50 {rec['p50_s']} > p99 {rec['p99_s']}")


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    results = json.loads(Path(path).read_text())
    try:
        validate_results(results)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return results

