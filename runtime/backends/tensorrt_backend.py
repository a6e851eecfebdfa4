"""``tensorrt``: ``model.onnx`` compiled by TensorRT (its documented Python API, TensorRT 10), engines cached on disk.

TensorRT itself cannot be installed from the package indexes our machines reach, so this backend is selected
only where ``import tensorrt`` works and torch sees a GPU (torch provides the device buffers and the stream).
Not exercised in CI; everything around the engine is (profiles, cache keys, precision choice, fallback).

* Optimisation profiles follow the card's size buckets (contract 2): one profile per ``group`` of consecutive
  buckets, elements from just above the previous group to the group's largest bucket (``opt`` = that bucket),
  batch from 1 to ``max_batch`` capped so a profile holds at most ``max_batch_elements`` elements (activation
  memory is sized for ``max``). Larger calls are split along the batch axis. Flash-sim (no buckets): one
  profile over the batch axis up to ``max_rows``.
* ``precision="auto"`` builds FP16 first and keeps it only if its outputs hold the card's tolerance against
  ONNX Runtime (CPU) on a probe input; otherwise it logs why and uses FP32 (TF32 off: it breaks 1e-4).
  The verdict is cached next to the engine.
* A graph with ONNX Runtime's ``com.microsoft.MultiHeadAttention`` (mlpf-transformer) is parsed after
  :func:`~hepzoo.runtime.attention_expand.expand_contrib_attention` (default-domain ops, ``N x N`` on the GPU).
* Engines are cached under ``$HEPZOO_TRT_CACHE`` (default ``~/.cache/hepzoo/tensorrt``), keyed by the onnx
  sha256, GPU name, TensorRT version, precision and profile set; written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hepzoo.datasets.atomic import write_bytes_atomic

from ..attention_expand import expand_contrib_attention, has_contrib_attention
from .base import Backend, BackendUnavailable

if TYPE_CHECKING:
    from hepzoo.export.card import ModelCard

__all__ = [
    "Profile",
    "TensorRTBackend",
    "build_profiles",
    "engine_cache_key",
    "engine_cache_path",
    "select_profile",
    "tensorrt_available",
    "tolerance_violation",
]

log = logging.getLogger(__name__)
ELEMENTS, BATCH = "elements", "batch"
Shape = tuple[int, ...]


def tensorrt_available() -> bool:
    """``import tensorrt`` works (PyPI's stub packages raise at import) and torch sees a CUDA device."""
    import importlib.util
    import sys

    if "tensorrt" not in sys.modules and importlib.util.find_spec("tensorrt") is None:  # common: no import tried
        return False
    try:
        import tensorrt  # noqa: F401
        import torch
    except Exception:  # noqa: BLE001 - any import failure means "not here"
        return False
    return bool(torch.cuda.is_available())


@dataclass(frozen=True)
class Profile:
    """One optimisation profile: ``shapes`` = ``((input, min, opt, max), ...)``; ``elements`` = the element
    counts it serves (None without an element axis); ``max_batch`` = the largest batch it takes."""

    shapes: tuple[tuple[str, Shape, Shape, Shape], ...]
    elements: tuple[int, int] | None
    max_batch: int

    def to_json(self) -> dict:
        return {"shapes": [[n, list(a), list(b), list(c)] for n, a, b, c in self.shapes],
                "elements": list(self.elements) if self.elements else None, "max_batch": self.max_batch}


def _shape(axes: Sequence[str | int], batch: int, elements: int) -> Shape:
    sizes = {BATCH: batch, ELEMENTS: elements}
    try:
        return tuple(a if isinstance(a, int) else sizes[a] for a in axes)
    except KeyError as error:
        raise ValueError(f"input axis {error} is neither {BATCH!r}, {ELEMENTS!r} nor a number") from None


def build_profiles(
    card, group: int = 1, max_batch: int = 32, max_batch_elements: int = 32768, max_rows: int = 65536
) -> list[Profile]:
    """The optimisation profiles for a card (see the module docstring)."""
    if group < 1 or max_batch < 1 or max_rows < 1:
        raise ValueError(f"group, max_batch and max_rows must be >= 1, got {group}, {max_batch}, {max_rows}")
    inputs = [(t.name, t.shape) for t in card.inputs]
    if not any(ELEMENTS in shape for _, shape in inputs):
        opt = min(4096, max_rows)
        shapes = tuple((n, _shape(s, 1, 0), _shape(s, opt, 0), _shape(s, max_rows, 0)) for n, s in inputs)
        return [Profile(shapes, None, max_rows)]
    buckets, g = list(card.size_buckets), card.element_granularity
    if not buckets:
        raise ValueError(f"{card.name}: an element axis but no size buckets in the card")
    profiles, low = [], g
    for i in range(0, len(buckets), group):
        top = buckets[min(i + group, len(buckets)) - 1]
        batch = max(1, min(max_batch, max_batch_elements // top))
        shapes = tuple((n, _shape(s, 1, low), _shape(s, batch, top), _shape(s, batch, top)) for n, s in inputs)
        profiles.append(Profile(shapes, (low, top), batch))
        low = -(-(top + 1) // g) * g
    return profiles


def select_profile(profiles: Sequence[Profile], n_elements: int | None) -> int:
    """Index of the profile serving ``n_elements`` (any profile when there is no element axis)."""
    for i, p in enumerate(profiles):
        if p.elements is None or p.elements[0] <= n_elements <= p.elements[1]:
            return i
    covered = f"{profiles[0].elements[0]}..{profiles[-1].elements[1]}" if profiles and profiles[0].elements else "none"
    raise ValueError(f"no TensorRT profile takes {n_elements} elements (profiles cover {covered}); "
                     "oversize events need a larger last size bucket")


def engine_cache_key(onnx_sha256: str, gpu_name: str, trt_version: str, precision: str, profiles: Sequence[Profile]) -> str:
    """A digest of everything an engine depends on: a change in any of them builds a new engine."""
    payload = json.dumps({"onnx_sha256": onnx_sha256, "gpu": gpu_name, "tensorrt": trt_version, "precision": precision,
                          "profiles": [p.to_json() for p in profiles]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def engine_cache_path(model: str, precision: str, key: str, cache_dir: str | Path | None = None) -> Path:
    root = Path(cache_dir or os.environ.get("HEPZOO_TRT_CACHE") or Path.home() / ".cache" / "hepzoo" / "tensorrt")
    return root / f"{model}-{precision}-{key}.engine"


def tolerance_violation(
    got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], atol: float, rtol: float, mask: np.ndarray | None = None
) -> tuple[str, float]:
    """``(worst output, max(|got - ref| - atol - rtol |ref|))`` over real positions (``mask`` True); <= 0 passes."""
    worst = ("", -np.inf)
    for name, r in ref.items():
        a, r = np.asarray(got[name], np.float64), np.asarray(r, np.float64)
        if mask is not None and a.ndim >= 2 and a.shape[:2] == mask.shape:
            a, r = a[mask], r[mask]
        diff = np.nan_to_num(np.abs(a - r), nan=np.inf)
        v = float((diff - atol - rtol * np.abs(r)).max()) if diff.size else -atol
        if v > worst[1]:
            worst = (name, v)
    return worst


def _build_engine(onnx_path: Path, profiles: Sequence[Profile], precision: str, workspace_bytes: int) -> bytes:
    import onnx
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are explicit-batch
    parser = trt.OnnxParser(network, logger)
    model = onnx.load(str(onnx_path))
    if has_contrib_attention(model):  # ORT's contrib attention (mlpf-transformer): TensorRT parses only the expansion
        parsed = parser.parse(expand_contrib_attention(model).SerializeToString(), str(onnx_path))
    else:
        parsed = parser.parse_from_file(str(onnx_path))
    if not parsed:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    config.clear_flag(trt.BuilderFlag.TF32)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    for p in profiles:
        profile = builder.create_optimization_profile()
        for name, lo, opt, hi in p.shapes:
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT could not build a {precision} engine (see its log above)")
    return bytes(serialized)


class TensorRTBackend(Backend):
    """See the module docstring. ``precision``: ``auto`` (FP16 if the card's tolerance holds, else FP32),
    ``fp16`` (an error if it does not hold) or ``fp32``."""

    name = "tensorrt"

    def __init__(self, onnx_path: str | Path, precision: str = "auto", group: int = 1, max_batch: int = 32,
                 cache_dir: str | Path | None = None, workspace_gb: float = 8.0, device: int = 0,
                 card: ModelCard | None = None):
        if precision not in ("auto", "fp16", "fp32"):
            raise ValueError(f"precision must be auto, fp16 or fp32, got {precision!r}")
        if not tensorrt_available():
            raise BackendUnavailable("`import tensorrt` failed or torch sees no CUDA device")
        import tensorrt as trt
        import torch

        from hepzoo.export.card import load_card
        from hepzoo.export.zoo import sha256_of

        self.onnx_path = Path(onnx_path)
        # the verified release's card (create_backend passes it); read next to the file only when built directly
        self.card = card if card is not None else load_card(self.onnx_path.parent, verify_onnx=False)
        self.profiles = build_profiles(self.card, group=group, max_batch=max_batch)
        self.device = torch.device("cuda", device)
        self._stream = torch.cuda.Stream(self.device)
        self._lock = threading.Lock()
        self._trt = trt
        ident = (sha256_of(self.onnx_path), torch.cuda.get_device_name(self.device), trt.__version__)
        self._workspace = int(workspace_gb * (1 << 30))
        self._cache_dir = cache_dir
        self.probe: dict | None = None  # the FP16 probe's verdict
        self.precision = "fp32"
        if precision in ("auto", "fp16"):
            self.probe = self._fp16_verdict(ident)
            if self.probe["passed"]:
                self.precision = "fp16"
            elif precision == "fp16":
                raise ValueError(f"{self.onnx_path}: FP16 breaks the card tolerance on output {self.probe['output']!r} "
                                 f"(max violation {self.probe['max_violation']:.3g}); use precision='fp32' or 'auto'")
            else:
                log.warning("%s: FP16 breaks the card tolerance on %r (max violation %.3g); using FP32",
                            self.onnx_path, self.probe["output"], self.probe["max_violation"])
        self._bind(self._engine(ident, self.precision))

    def _engine(self, ident: tuple[str, str, str], precision: str):
        key = engine_cache_key(*ident, precision, self.profiles)
        path = engine_cache_path(self.card.name, precision, key, self._cache_dir)
        if not path.is_file():
            log.info("%s: building a %s TensorRT engine -> %s", self.onnx_path, precision, path)
            write_bytes_atomic(path, _build_engine(self.onnx_path, self.profiles, precision, self._workspace))
        runtime = self._trt.Runtime(self._trt.Logger(self._trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise RuntimeError(f"{path}: TensorRT could not load this engine (delete it to rebuild)")
        self._runtimes = [*getattr(self, "_runtimes", []), runtime]  # a runtime must outlive its engines
        return engine

    def _bind(self, engine) -> None:
        trt = self._trt
        self.engine, self._context_obj, self._profile = engine, None, None
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]

    def _fp16_verdict(self, ident: tuple[str, str, str]) -> dict:
        """FP16 vs ONNX Runtime CPU on a probe input, within the card's tolerance (cached next to the engine)."""
        key = engine_cache_key(*ident, "fp16", self.profiles)
        path = engine_cache_path(self.card.name, "fp16", key, self._cache_dir).with_suffix(".probe.json")
        if path.is_file():
            return json.loads(path.read_text())
        from .ort_cpu_backend import OnnxRuntimeCPUBackend

        self._bind(self._engine(ident, "fp16"))
        probe = _probe_inputs(self.onnx_path.parent, self.card)
        got = self.run(probe)
        ref = OnnxRuntimeCPUBackend(self.onnx_path).run(probe)
        mask = next((v for v in probe.values() if v.dtype == np.bool_), None)
        output, violation = tolerance_violation(got, ref, self.card.tolerance.atol, self.card.tolerance.rtol, mask)
        verdict = {"passed": bool(violation <= 0), "output": output, "max_violation": violation}
        write_bytes_atomic(path, json.dumps(verdict).encode())
        return verdict

    def _context(self, index: int):
        """One execution context (each one holds activation memory for the largest profile), switched between
        profiles as calls need them."""
        if self._context_obj is None:
            self._context_obj, self._profile = self.engine.create_execution_context(), None
        if self._profile != index:
            self._context_obj.set_optimization_profile_async(index, self._stream.cuda_stream)
            self._profile = index
        return self._context_obj

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        missing = [n for n in self._inputs if n not in inputs]
        if missing:
            raise ValueError(f"{self.onnx_path}: missing graph inputs {missing} (engine takes {self._inputs})")
        arrays = {n: np.ascontiguousarray(inputs[n]) for n in self._inputs}
        card_in = {t.name: t for t in self.card.inputs}
        elements = next((arrays[n].shape[list(card_in[n].shape).index(ELEMENTS)] for n in arrays if ELEMENTS in card_in[n].shape), None)
        index = select_profile(self.profiles, elements)
        step, batch = self.profiles[index].max_batch, len(next(iter(arrays.values())))
        if batch == 0:  # TensorRT profiles start at batch 1
            return {t.name: np.zeros(_shape(t.shape, 0, elements or 0), t.dtype) for t in self.card.outputs}
        dtypes = {t.name: np.dtype(t.dtype) for t in self.card.outputs}
        parts: dict[str, list[np.ndarray]] = {n: [] for n in self._outputs}
        with self._lock, torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            context = self._context(index)
            for start in range(0, batch, step):  # profiles cap the batch: split larger calls
                dev = {n: torch.from_numpy(a[start : start + step]).to(self.device) for n, a in arrays.items()}
                for name, t in dev.items():
                    context.set_input_shape(name, tuple(t.shape))
                    context.set_tensor_address(name, t.data_ptr())
                outs = {}
                for name in self._outputs:
                    dtype = torch.from_numpy(np.empty(0, self._trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
                    outs[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device=self.device)
                    context.set_tensor_address(name, outs[name].data_ptr())
                if not context.execute_async_v3(self._stream.cuda_stream):
                    raise RuntimeError(f"{self.onnx_path}: TensorRT execution failed (rows {start}:{start + step}, {elements} elements)")
                for name, t in outs.items():
                    host = t.cpu().numpy()  # synchronises the stream
                    parts[name].append(host.astype(dtypes.get(name, host.dtype), copy=False))
        return {n: np.concatenate(p) if len(p) > 1 else p[0] for n, p in parts.items()}


def _probe_inputs(folder: Path, card) -> dict[str, np.ndarray]:
    """Realistic dummy inputs from the registry (when the release's config.yaml is there), else seeded
    standard-normal floats with every mask entry True."""
    n = card.size_buckets[0] if card.size_buckets else 0
    if (folder / "config.yaml").is_file():
        import yaml

        from hepzoo.models import get_spec

        name = yaml.safe_load((folder / "config.yaml").read_text())["model"]["name"]
        return {k: v.numpy() for k, v in get_spec(name).make_inputs(2 if n else 256, n, 7).items()}
    rng = np.random.default_rng(7)
    return {t.name: np.ones(_shape(t.shape, 2, n), bool) if t.dtype == "bool"
            else rng.standard_normal(_shape(t.shape, 2 if n else 256, n)).astype(t.dtype) for t in card.inputs}
