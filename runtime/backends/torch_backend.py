"""``torch-cuda``: the release's registry model (``config.yaml`` + ``weights.pt``) run by PyTorch on a device.

Why a second implementation next to ``model.onnx``: on a GPU, PyTorch with CUDA graphs removes the per-kernel
launch cost that dominates small batches, and needs no extra package. The ONNX file stays the reference: tests
compare this backend with ONNX Runtime within the card's tolerance.

* On CUDA, one CUDA graph is captured per input signature (size bucket x batch size): the first call of a
  signature warms the model up on a side stream with the real inputs, captures, and later calls replay. The
  batch axis is padded to the next power of two (padded rows are zeros with ``mask`` False and are dropped),
  so a few graphs serve every batch size; at most ``max_graphs`` are kept (least recently used go first).
* ``pipeline_chunk`` (rows of the batch axis, optional) splits a large call into chunks that go through two
  buffer slots and three streams (host-to-device, compute, device-to-host), so the copy of one chunk overlaps
  the compute of the next. Host staging buffers are pinned. Off by default until timed on a GPU.
* On any other device (``device="cpu"``, not registered in ``auto``: the CPU has faster backends) the same
  code runs eagerly without streams, which is what the CPU tests exercise.

A backend instance may be shared by threads: calls are serialised by a lock (the buffers are reused).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import Backend, BackendUnavailable

__all__ = ["TorchBackend", "load_release_model"]

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, tuple[int, ...], str], ...]


def load_release_model(folder: str | Path) -> tuple[torch.nn.Module, Any]:
    """``(model in eval mode on CPU, its ModelSpec)`` from a release folder (``config.yaml`` + ``weights.pt``,
    loaded with ``weights_only=True``); :class:`BackendUnavailable` names what is missing.

    Both files are read once, checked against the sha256 the release's ``card.json`` records
    (:func:`hepzoo.export.card.read_verified`), and loaded from the checked bytes: a card that records no hash
    for them is refused (``BackendUnavailable``: ``auto`` uses a backend that loads ``model.onnx``), a file
    whose hash differs is an :class:`~hepzoo.export.card.IntegrityError` (never a silent fallback).
    """
    import io

    import yaml

    from hepzoo.export.card import CARD, load_card, read_verified, recorded_sha256
    from hepzoo.export.zoo import CONFIG, WEIGHTS
    from hepzoo.models import create_model, get_spec

    folder = Path(folder)
    missing = [f for f in (CONFIG, WEIGHTS) if not (folder / f).is_file()]
    if missing:
        raise BackendUnavailable(f"{folder} has no {' or '.join(missing)}: the torch backend rebuilds the model from the release")
    if not (folder / CARD).is_file():
        raise BackendUnavailable(f"{folder} has no {CARD}: nothing to check {CONFIG} and {WEIGHTS} against (hepzoo export)")
    card = load_card(folder, verify_onnx=False)
    unhashed = [f for f in (CONFIG, WEIGHTS) if recorded_sha256(card, f) is None]
    if unhashed:
        raise BackendUnavailable(
            f"{folder / CARD} records no sha256 for {' and '.join(unhashed)}: the torch backend loads only files "
            "the card covers (re-card the release with hepzoo export)"
        )
    config = yaml.safe_load(read_verified(card, folder, CONFIG).decode())
    weights = torch.load(io.BytesIO(read_verified(card, folder, WEIGHTS)), map_location="cpu", weights_only=True)
    spec = get_spec(config["model"]["name"])
    model = create_model(config["model"]["name"], **config["model"].get("kwargs", {}))
    model.load_state_dict(weights)
    return model.eval(), spec


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class _Slot:
    """Buffers for one input signature: device inputs, pinned host staging in and out, and (CUDA) the graph."""

    def __init__(self, backend: TorchBackend, signature: Signature):
        self.backend = backend
        dev, pin = backend.device, backend.is_cuda
        self.inputs = {n: torch.empty(s, dtype=getattr(torch, d), device=dev) for n, s, d in signature}
        self.host_in = {n: torch.zeros(s, dtype=getattr(torch, d), pin_memory=pin) for n, s, d in signature}
        self.host_out: dict[str, torch.Tensor] | None = None
        self.outputs: tuple[torch.Tensor, ...] = ()
        self.graph: torch.cuda.CUDAGraph | None = None
        self.events = {k: torch.cuda.Event() for k in ("h2d", "compute", "d2h")} if pin else {}
        self.pending: tuple[int, int] | None = None  # (chunk index, real rows) whose result awaits collection

    def stage(self, arrays: Mapping[str, np.ndarray], start: int, stop: int) -> None:
        """Copy rows ``start:stop`` into the pinned host buffers (the padded tail is zeros: mask False)."""
        n = stop - start
        for name, host in self.host_in.items():
            view = host.numpy()
            view[:n] = arrays[name][start:stop]
            view[n:] = 0

    def compute(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.outputs = self.backend._forward(self.inputs)

    def capture(self) -> None:
        """Warm up on a side stream with the staged inputs, then capture (PyTorch's documented recipe)."""
        for name, host in self.host_in.items():
            self.inputs[name].copy_(host)
        side = torch.cuda.Stream(self.backend.device)
        side.wait_stream(torch.cuda.current_stream(self.backend.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self.backend._forward(self.inputs)
        torch.cuda.current_stream(self.backend.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # other threads may use the GPU meanwhile
            self.outputs = self.backend._forward(self.inputs)
        self.graph = graph

    def read(self, n: int) -> dict[str, np.ndarray]:
        assert self.host_out is not None
        return {name: t.numpy()[:n].copy() for name, t in self.host_out.items()}


class TorchBackend(Backend):
    """The release model on ``device``; ``cuda_graphs`` defaults to ``True`` on CUDA (see the module docstring)."""

    def __init__(
        self,
        release_dir: str | Path,
        device: str | torch.device = "cuda",
        cuda_graphs: bool | None = None,
        pipeline_chunk: int | None = None,
        max_graphs: int = 64,
        compile: bool = False,
    ):
        self.device = torch.device(device)
        self.is_cuda = self.device.type == "cuda"
        if self.is_cuda and not torch.cuda.is_available():
            raise BackendUnavailable("torch sees no CUDA device (torch.cuda.is_available() is False)")
        if pipeline_chunk is not None and pipeline_chunk < 1:
            raise ValueError(f"pipeline_chunk must be >= 1 rows, got {pipeline_chunk}")
        if max_graphs < 4:  # one call may hold four slots (two pipeline slots x full and tail chunk sizes)
            raise ValueError(f"max_graphs must be >= 4, got {max_graphs}")
        self.release_dir = Path(release_dir)
        model, spec = load_release_model(self.release_dir)
        self.spec = spec
        self.model = model.to(self.device)
        self._call = torch.compile(self.model) if compile else self.model
        self.name = f"torch-{self.device.type}"
        self.cuda_graphs = self.is_cuda if cuda_graphs is None else bool(cuda_graphs)
        if self.cuda_graphs and not self.is_cuda:
            raise ValueError(f"CUDA graphs need a CUDA device, got device={self.device}")
        self.pipeline_chunk = pipeline_chunk
        self.max_graphs = int(max_graphs)
        self._check_card()
        self._slots: OrderedDict[tuple[Signature, int], _Slot] = OrderedDict()
        self._lock = threading.Lock()
        self._streams = {k: torch.cuda.Stream(self.device) for k in ("h2d", "compute", "d2h")} if self.is_cuda else {}

    def _check_card(self) -> None:
        """The registry's tensor names must be the card's (the names ``Backend.run`` is keyed by)."""
        from hepzoo.export.card import CARD, load_card

        if not (self.release_dir / CARD).is_file():
            return
        card = load_card(self.release_dir, verify_onnx=False)
        for kind, ours, theirs in (
            ("inputs", self.spec.input_names, [t.name for t in card.inputs]),
            ("outputs", self.spec.output_names, [t.name for t in card.outputs]),
        ):
            if list(ours) != list(theirs):
                raise ValueError(f"{self.release_dir / CARD}: card {kind} {theirs} differ from registry model {self.spec.name}'s {list(ours)}")

    @property
    def input_names(self) -> list[str]:
        return list(self.spec.input_names)

    @property
    def output_names(self) -> list[str]:
        return list(self.spec.output_names)

    @property
    def graph_count(self) -> int:
        return sum(1 for s in self._slots.values() if s.graph is not None)

    def _forward(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode():
            out = self._call(**inputs)
        return (out,) if isinstance(out, torch.Tensor) else tuple(out)

    # ---- run -----------------------------------------------------------------------------------------------

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ValueError(f"{self.release_dir}: missing graph inputs {missing} (model takes {self.input_names})")
        arrays = {n: np.ascontiguousarray(inputs[n], dtype=np.dtype(t.dtype)) for n, t in zip(self.input_names, self.spec.inputs, strict=True)}
        batches = {n: a.shape[0] if a.ndim else None for n, a in arrays.items()}
        if len(set(batches.values())) != 1 or None in batches.values():
            raise ValueError(f"{self.release_dir}: inputs disagree on the batch axis (axis 0): {batches}")
        batch = next(iter(batches.values()))
        if batch == 0:  # no rows: empty outputs of the spec's shapes (some models cannot run an empty batch)
            return self._empty_outputs(arrays)
        with self._lock, torch.cuda.device(self.device) if self.is_cuda else contextlib.nullcontext():
            return self._run_chunks(arrays, batch)

    def _empty_outputs(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        dims = {ax: int(n) for t in self.spec.inputs for ax, n in zip(t.shape, arrays[t.name].shape, strict=False) if isinstance(ax, str)}
        return {t.name: np.zeros(tuple(dims[a] if isinstance(a, str) else a for a in t.shape), t.dtype) for t in self.spec.outputs}

    def _slot(self, arrays: Mapping[str, np.ndarray], rows: int, index: int) -> _Slot:
        padded = _next_pow2(rows) if self.cuda_graphs else rows
        signature = tuple((n, (padded,) + a.shape[1:], a.dtype.name) for n, a in arrays.items())
        key = (signature, index)
        slot = self._slots.get(key)
        if slot is not None:
            self._slots.move_to_end(key)
            return slot
        while len(self._slots) >= self.max_graphs:
            self._slots.popitem(last=False)  # its graph and memory pool are freed with it
        slot = self._slots[key] = _Slot(self, signature)
        return slot

    def _run_chunks(self, arrays: Mapping[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
        chunk = self.pipeline_chunk or batch
        bounds = [(a, min(a + chunk, batch)) for a in range(0, batch, chunk)]
        results: list[dict[str, np.ndarray] | None] = [None] * len(bounds)
        slots: list[_Slot] = []
        for i, (start, stop) in enumerate(bounds):
            slot = self._slot(arrays, stop - start, i % 2 if len(bounds) > 1 else 0)
            if slot not in slots:
                slots.append(slot)
            self._collect(slot, results)  # the slot's previous chunk (two chunks back) is done first
            slot.stage(arrays, start, stop)
            if self.cuda_graphs and slot.graph is None:
                self._capture(slot)
            self._launch(slot)
            slot.pending = (i, stop - start)
        for slot in slots:
            self._collect(slot, results)
        return {n: np.concatenate([r[n] for r in results]) if len(results) > 1 else results[0][n] for n in self.output_names}

    def _capture(self, slot: _Slot) -> None:
        try:
            slot.capture()
        except RuntimeError as error:  # e.g. an operator that synchronises: serve this signature eagerly
            log.warning("%s: CUDA graph capture failed for %s (%s); running it eagerly", self.release_dir, list(slot.inputs), error)
            slot.graph = None
            torch.cuda.synchronize(self.device)

    def _launch(self, slot: _Slot) -> None:
        """Host-to-device copy, compute and device-to-host copy, each on its own stream (CUDA), ordered by events."""
        s = self._streams
        if s:  # after whatever the caller's stream did to these buffers (allocation, capture)
            s["h2d"].wait_stream(torch.cuda.current_stream(self.device))
        with _on(s.get("h2d")):
            for name, host in slot.host_in.items():
                slot.inputs[name].copy_(host, non_blocking=True)
            _record(slot, "h2d", s)
        with _on(s.get("compute")):
            if s:
                s["compute"].wait_event(slot.events["h2d"])
            slot.compute()
            _record(slot, "compute", s)
        if slot.host_out is None:
            slot.host_out = {
                n: torch.empty(t.shape, dtype=t.dtype, pin_memory=self.is_cuda) for n, t in zip(self.output_names, slot.outputs, strict=True)
            }
        with _on(s.get("d2h")):
            if s:
                s["d2h"].wait_event(slot.events["compute"])
            for name, t in zip(self.output_names, slot.outputs, strict=True):
                slot.host_out[name].copy_(t, non_blocking=True)
            _record(slot, "d2h", s)

    @staticmethod
    def _collect(slot: _Slot, results: list) -> None:
        if slot.pending is None:
            return
        if slot.events:
            slot.events["d2h"].synchronize()
        index, rows = slot.pending
        results[index] = slot.read(rows)
        slot.pending = None


def _on(stream: torch.cuda.Stream | None):
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


def _record(slot: _Slot, what: str, streams: Mapping[str, torch.cuda.Stream]) -> None:
    if streams:
        slot.events[what].record(streams[what])
