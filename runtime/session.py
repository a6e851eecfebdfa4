"""``Session``: a released model (``zoo/<name>/<version>/``: ``card.json`` + ``model.onnx``) on a backend.

docs/ARCHITECTURE.md, contract 4. MLPF models take ragged events (contract 2: flat element rows + offsets); the session
groups events by the card's size buckets, pads each group with the Numba ``pad`` kernel, runs the backend
and unpads, so outputs come back flat, aligned with the input rows, in the original event order.

Oversize events (more elements than the largest bucket) are never truncated: each one runs alone, padded to
the next multiple of the card's element granularity.

Flash-sim models take a context table ``[N, C]``; :meth:`Session.sample` fills the graph's noise input with
``np.random.default_rng(seed).standard_normal`` and decides "matched" (reconstructed) with a uniform draw
from the same generator, so a result is reproducible from its seed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from hepzoo.datasets.ragged import pad, unpad
from hepzoo.export.card import CARD, ModelCard
from hepzoo.models.families import Family, ObjectKind, families, get_family
from hepzoo.models.mlpf_decode import CHARGED_CLASSES, decode_charge  # noqa: F401  (re-exported)

from .backends import Backend, create_backend
from .batcher import DynamicBatcher
from .release import verify_release
from .checks import check_collections, check_elements, check_outputs, check_track_charges
from .limits import allocation_error, check_event_sizes, is_allocation_failure

__all__ = ["Session", "resolve_release_dir"]

DEFAULT_BATCH_SIZE = 32  # events per backend call within one bucket
DEFAULT_SAMPLE_CHUNK = 65536  # rows per backend call in ``sample``


def resolve_release_dir(name_or_path: str | os.PathLike, version: str | None = None) -> Path:
    """A release folder from a zoo name (+ optional version), a release folder, or its ``card.json``."""
    path = Path(name_or_path)
    if path.is_file() and path.name == CARD:
        path = path.parent
    if path.is_dir():
        if version is not None:
            raise ValueError(f"version={version!r} given with a release folder {path}; pass one or the other")
        if not (path / CARD).is_file():
            raise FileNotFoundError(f"{path} has no {CARD}: export the release first (hepzoo export)")
        return path
    from hepzoo.export.zoo import find_release

    release = find_release(str(name_or_path), version)
    if not (release.path / CARD).is_file():
        raise FileNotFoundError(f"release {release.path} has no {CARD}: export it first (hepzoo export)")
    return release.path


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def _rows_of(offsets: np.ndarray, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat row indices of ``events`` (concatenated in that order) and their offsets from 0."""
    starts = offsets[events]
    counts = offsets[events + 1] - starts
    sub_offsets = np.zeros(events.size + 1, dtype=np.int64)
    np.cumsum(counts, out=sub_offsets[1:])
    rows = np.arange(sub_offsets[-1], dtype=np.int64) + np.repeat(starts - sub_offsets[:-1], counts)
    return rows, sub_offsets


@dataclass
class _Request:
    """One :meth:`Session.submit` call as the batcher sees it."""

    family: str
    payload: Any
    seed: int | None
    as_candidates: bool = False


class Session:
    """Load with :meth:`Session.load`; see the module docstring."""

    def __init__(self, card: ModelCard, folder: Path, backend: Backend, buckets: Sequence[int] | None = None):
        self.card = card
        self.folder = folder
        self.backend = backend
        self.buckets = self._check_buckets(card.size_buckets if buckets is None else buckets)
        self._batcher: DynamicBatcher | None = None
        self._batcher_lock = threading.Lock()

    # ---- construction --------------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike,
        version: str | None = None,
        backend: str = "auto",
        intra_op_threads: int = 1,
        buckets: Sequence[int] | None = None,
    ) -> Session:
        """Zoo name (highest version unless ``version``), release folder or ``card.json`` path.

        The card is validated and the ``model.onnx`` it names must lie inside the release folder and have the
        recorded sha256. ``backend``: a backend name or ``"auto"``; ``buckets`` overrides the card's size
        buckets (each a multiple of the element granularity).
        """
        release = verify_release(resolve_release_dir(name_or_path, version))
        backend_ = create_backend(backend, release, intra_op_threads=intra_op_threads)  # gets the verified release
        return cls(release.card, release.folder, backend_, buckets)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def family(self) -> Family:
        """The model's family (:mod:`hepzoo.models.families`): what it reads, how it decodes, whether it is generative."""
        return get_family(self.card.family)

    @property
    def objects(self) -> ObjectKind | Family:
        """What the model reads and writes (``input_collections``, ``input_scalars``, ``output_collection``,
        ``encode``, ``decode``): its object kind (flash-sim: from the training config's ``data.kind``), or its
        family when the family has no kinds."""
        return self.family.objects(self.card.provenance.config)

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def max_elements(self) -> int | None:
        """Most elements one event may have (the card's ``max_elements``, else the registered model's default
        :data:`hepzoo.export.card.MAX_ELEMENTS`; None: no limit). Larger events are refused before running."""
        if self.card.max_elements is not None:
            return self.card.max_elements
        from hepzoo.export.card import default_max_elements

        return default_max_elements(self.card.provenance.model)  # None for models without a limit (flash-sim)

    def __repr__(self) -> str:
        return f"Session({self.card.name!r}, version={self.card.version!r}, backend={self.backend_name!r})"

    def _check_buckets(self, buckets: Sequence[int]) -> tuple[int, ...]:
        g = self.card.element_granularity
        b = tuple(int(x) for x in buckets)
        if any(x <= 0 for x in b) or any(y <= x for x, y in zip(b, b[1:], strict=False)):
            raise ValueError(f"size buckets must be positive and strictly increasing, got {b}")
        bad = [x for x in b if x % g]
        if bad:
            raise ValueError(f"size buckets {bad} are not multiples of the element granularity {g} of {self.card.name}")
        return b

    def _require(self, what: str, method: str) -> None:
        """``method`` needs a family with the truthy attribute ``what`` (``elements``, ``generative``, ``kinds``)."""
        if not getattr(self.family, what):
            wanted = " or ".join(f.name for f in families() if getattr(f, what))
            raise TypeError(f"{method} is for {wanted} models; {self.card.name} is a {self.card.family} model")

    # ---- MLPF ----------------------------------------------------------------------------------------------

    def _element_io(self) -> tuple[str, str | None]:
        features = mask = None
        for t in self.card.inputs:
            if t.dtype == "bool":
                mask = t.name
            elif features is None:
                features = t.name
        assert features is not None
        return features, mask

    def _pad_size(self, n: int, buckets: Sequence[int]) -> int:
        for b in buckets:
            if n <= b:
                return b
        return _round_up(n, self.card.element_granularity)  # oversize: alone, never truncated

    def run_elements(
        self,
        features: np.ndarray,
        offsets: np.ndarray,
        batch_size: int = DEFAULT_BATCH_SIZE,
        buckets: Sequence[int] | None = None,
        first_event: int = 0,
    ) -> dict[str, np.ndarray]:
        """Flat element rows ``float32[N, F]`` + ``offsets`` ``int64[B+1]`` -> ``{output: [N, ...]}``.

        Output row ``i`` belongs to input row ``offsets[0] + i`` (so ``N = offsets[-1] - offsets[0]``).
        Events are grouped by size bucket, padded, run ``batch_size`` events at a time, and unpadded;
        an event above the largest bucket runs alone, padded to the next multiple of the granularity.
        An event with no elements gets no rows (and costs nothing). NaN/inf, absurd and negative pT/energy
        features are refused (:func:`hepzoo.runtime.checks.check_elements`) with an error naming the event
        (``first_event`` + its index), the element and the feature.
        """
        self._require("elements", "run_elements")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        bucket_sizes = self.buckets if buckets is None else self._check_buckets(buckets)
        features = np.asarray(features)
        n_features = self.card.inputs[0].shape[-1]
        if features.ndim != 2 or (isinstance(n_features, int) and features.shape[1] != n_features):
            raise ValueError(f"features must be [N, {n_features}], got shape {features.shape}")
        features = features.astype(np.float32, copy=False)
        off = np.ascontiguousarray(offsets, dtype=np.int64)
        if off.ndim != 1 or off.size == 0 or np.any(np.diff(off) < 0) or off[0] < 0 or off[-1] > len(features):
            raise ValueError(f"offsets must be a non-decreasing 1-D array within [0, {len(features)}]")
        counts = np.diff(off)
        n_rows = int(off[-1] - off[0])
        limit = self.max_elements
        check_event_sizes(counts, limit, first_event, self.name)
        check_elements(features[off[0] : off[-1]], off - off[0], self.card.inputs[0].feature_names, first_event)
        feat_name, mask_name = self._element_io()

        groups: list[tuple[int, np.ndarray]] = []  # (pad size, event indices)
        sizes = np.array([self._pad_size(int(c), bucket_sizes) for c in counts], dtype=np.int64) if counts.size else counts
        for size in (int(s) for s in np.unique(sizes[counts > 0])):
            events = np.flatnonzero((sizes == size) & (counts > 0))  # empty events have no rows to compute
            step = batch_size if size <= (bucket_sizes[-1] if bucket_sizes else 0) else 1
            if limit is not None:
                step = max(1, min(step, limit // size))
            groups += [(size, events[i : i + step]) for i in range(0, events.size, step)]

        out: dict[str, np.ndarray] = {}
        for size, events in groups:
            rows, sub_off = _rows_of(off, events)
            try:
                x, mask = pad(features[rows], sub_off, size)
                inputs = {feat_name: x}
                if mask_name is not None:
                    inputs[mask_name] = mask
                result = self.backend.run(inputs)
            except Exception as error:  # noqa: BLE001 - only allocation failures are translated
                if not is_allocation_failure(error):
                    raise
                raise allocation_error(error, events, counts, size, first_event, self.name, self.backend_name) from None
            for name, value in result.items():
                flat = unpad(value, sub_off)
                if name not in out:
                    out[name] = np.zeros((n_rows,) + flat.shape[1:], dtype=flat.dtype)
                out[name][rows - off[0]] = flat
        if not out:  # no events or no elements at all: empty outputs of the card's shapes
            for t in self.card.outputs:
                tail = tuple(int(s) for s in t.shape[2:])
                out[t.name] = np.zeros((n_rows,) + tail, dtype=np.dtype(t.dtype))
        return out

    def run(self, events: ak.Array, seed: int | None = None, first_entry: int = 0, **kwargs) -> ak.Array:
        """Events (awkward, contract 1) -> one list of reconstructed objects per event, same events, same order.

        MLPF: candidates ``cls, charge, pt, eta, phi, e`` (see :meth:`candidates` for ``probabilities`` and
        ``keep_empty``; other ``kwargs`` go to :meth:`run_elements`). Flash-sim: the flash-reconstructed
        objects of the model's kind (:meth:`flash_objects`); ``seed`` is required and ``first_entry`` (the
        first event's entry number in its file) selects each event's noise stream. The family says which
        (:attr:`family`: generative or not; its ``encode``/``decode``).
        """
        if self.family.generative:
            if seed is None:
                raise ValueError(f"{self.name} is generative: pass seed= (it is recorded with the outputs)")
            objects = self.flash_objects(events, seed, first_entry=first_entry, **kwargs)
            check_outputs(objects, first_entry, self.name)
            return objects
        if seed is not None:
            raise ValueError(f"seed= is for generative (flash-sim) models; {self.name} is deterministic")
        probabilities = kwargs.pop("probabilities", False)
        keep_empty = kwargs.pop("keep_empty", False)
        features, offsets = self.family.encode(events)
        check_track_charges(features, offsets, self.card.inputs[0].feature_names, first_entry)
        check_elements(features, offsets, self.card.inputs[0].feature_names, first_entry, full=True)
        out = self.run_elements(features, offsets, first_event=first_entry, **kwargs)
        candidates = self.family.decode(out, offsets, probabilities=probabilities, keep_empty=keep_empty)
        check_outputs(candidates, first_entry, self.name)
        return candidates

    @staticmethod
    def candidates(
        out: dict[str, np.ndarray], offsets: np.ndarray, probabilities: bool = False, keep_empty: bool = False
    ) -> ak.Array:
        """MLPF outputs (flat, from :meth:`run_elements`) -> per-event candidate records: the MLPF decoder
        :func:`hepzoo.models.mlpf_decode.decode_candidates` (``charge``: neutrals 0, charged ±1; ``keep_empty``
        keeps the ``TargetClass.NONE`` slots; ``probabilities`` adds ``cls_prob``)."""
        from hepzoo.models.mlpf_decode import decode_candidates

        return decode_candidates(out, offsets, probabilities=probabilities, keep_empty=keep_empty)

    # ---- flash-sim -----------------------------------------------------------------------------------------

    @property
    def flash_kind(self) -> str:
        """The object kind a flash-sim model simulates (``jet`` or ``track``), from its training config."""
        self._require("kinds", "flash_kind")
        return self.objects.name

    def _context_card(self):
        noise_names = {n.name for n in self.card.noise_inputs}
        return next(t for t in self.card.inputs if t.name not in noise_names)

    def _check_context(self, context: np.ndarray, first_row: int = 0) -> np.ndarray:
        context_card = self._context_card()
        context = np.asarray(context, dtype=np.float32)
        n_ctx = context_card.shape[-1]
        if context.ndim != 2 or (isinstance(n_ctx, int) and context.shape[1] != n_ctx):
            raise ValueError(
                f"tensor {context_card.name!r}: context must be [N, {n_ctx}] ({context_card.feature_names}), "
                f"got shape {context.shape}"
            )
        if not np.isfinite(context).all():
            row, column = (int(i) for i in np.argwhere(~np.isfinite(context))[0])
            raise ValueError(
                f"tensor {context_card.name!r}: row {first_row + row} has a non-finite value {context[row, column]} "
                f"in {context_card.feature_names[column] if context_card.feature_names else column!r}"
            )
        return context

    def _draw(self, rng: np.random.Generator, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """One request's random numbers: each noise input (standard normal), then the uniform for ``matched``."""
        noise = {}
        for spec in self.card.noise_inputs:
            tail = tuple(int(s) for s in spec.shape[1:])
            noise[spec.name] = rng.standard_normal((n,) + tail, dtype=np.float32)
        return noise, rng.uniform(size=n)

    def _sample_with(self, context: np.ndarray, noise: dict[str, np.ndarray], u: np.ndarray, chunk_size: int) -> dict:
        n = len(context)
        context_name = self._context_card().name
        parts: dict[str, list[np.ndarray]] = {t.name: [] for t in self.card.outputs}
        for start in range(0, n, chunk_size):
            inputs = {context_name: context[start : start + chunk_size]}
            inputs.update({k: v[start : start + chunk_size] for k, v in noise.items()})
            for name, value in self.backend.run(inputs).items():
                parts[name].append(value)
        result: dict = {}
        for t in self.card.outputs:
            tail = tuple(int(s) for s in t.shape[1:])
            result[t.name] = np.concatenate(parts[t.name]) if parts[t.name] else np.zeros((0,) + tail, np.dtype(t.dtype))
        result["matched"] = u < result["efficiency"]
        return result

    def sample(self, context: np.ndarray, seed: int, chunk_size: int = DEFAULT_SAMPLE_CHUNK) -> dict:
        """Context ``float32[N, C]`` -> ``{efficiency [N], sample [N, T], matched bool[N], seed}``.

        Noise: ``rng = np.random.default_rng(seed)``; one ``standard_normal`` draw per noise input for all rows,
        then ``matched = rng.uniform(size=N) < efficiency``. Independent of ``chunk_size``.
        """
        self._require("generative", "sample")
        context = self._check_context(context)
        noise, u = self._draw(np.random.default_rng(seed), len(context))
        result = self._sample_with(context, noise, u, chunk_size)
        result["seed"] = seed
        return result

    def sample_events(
        self, context: np.ndarray, event_index: np.ndarray, n_events: int, seed: int, first_entry: int = 0
    ) -> dict:
        """Like :meth:`sample`, but each event has its own noise stream ``default_rng([seed, entry])``
        (``entry = first_entry + event index``), so results do not depend on how a file is chunked or split
        across workers. ``event_index`` (sorted, one per context row) says which event a row belongs to."""
        self._require("generative", "sample_events")
        context = self._check_context(context)
        event_index = np.asarray(event_index, dtype=np.int64)
        if event_index.shape != (len(context),) or np.any(np.diff(event_index) < 0):
            raise ValueError("event_index must be sorted and hold one event index per context row")
        counts = np.bincount(event_index, minlength=n_events) if event_index.size else np.zeros(n_events, np.int64)
        noise_parts: dict[str, list[np.ndarray]] = {spec.name: [] for spec in self.card.noise_inputs}
        u_parts = []
        for event in np.flatnonzero(counts):
            noise, u = self._draw(np.random.default_rng([seed, first_entry + int(event)]), int(counts[event]))
            for name, value in noise.items():
                noise_parts[name].append(value)
            u_parts.append(u)
        noise = {
            spec.name: np.concatenate(noise_parts[spec.name])
            if u_parts
            else np.zeros((0,) + tuple(int(s) for s in spec.shape[1:]), np.float32)
            for spec in self.card.noise_inputs
        }
        result = self._sample_with(context, noise, np.concatenate(u_parts) if u_parts else np.zeros(0), DEFAULT_SAMPLE_CHUNK)
        result["seed"] = seed
        return result

    def flash_objects(self, events: ak.Array, seed: int, first_entry: int = 0) -> ak.Array:
        """Generator objects of ``events`` -> per-event lists of flash-reconstructed objects (matched only),
        in physical units, with their ``efficiency``; see :func:`hepzoo.datasets.flashsim_data.reconstruct`.
        Every generator object is checked against the schema's value policy
        (:func:`hepzoo.runtime.checks.check_collections`) before the table's selection cuts, so a bad object is an error, never a silently dropped one."""
        self._require("kinds", "flash_objects")
        kind = self.objects
        check_collections(events, kind.input_collections, first_entry, kind.input_scalars)  # before any cut
        table = kind.encode(events)
        result = self.sample_events(table["context"], table["event_index"], len(events), seed, first_entry)
        objects = kind.decode(table["context"], result["sample"])
        objects["efficiency"] = result["efficiency"].astype(np.float32)
        keep = result["matched"]
        counts = np.bincount(table["event_index"][keep], minlength=len(events)) if keep.any() else np.zeros(len(events), np.int64)
        return ak.zip({k: ak.unflatten(v[keep], counts) for k, v in objects.items()}, depth_limit=2)

    # ---- files ---------------------------------------------------------------------------------------------------

    def run_file(self, input_path: str | os.PathLike, output: str | os.PathLike, **kwargs):
        """One event file in, one ROOT file of reconstructed objects out (streamed, atomic, resumable);
        see :func:`hepzoo.runtime.runfile.run_file` for the output layout and ``kwargs``."""
        from .runfile import run_file

        return run_file(self, input_path, output, **kwargs)

    # ---- concurrent callers ----------------------------------------------------------------------------------

    def start_batcher(self, max_batch: int = DEFAULT_BATCH_SIZE, max_delay: float = 0.002) -> DynamicBatcher:
        """(Re)configure the dynamic batcher behind :meth:`submit` (``max_delay`` in seconds)."""
        with self._batcher_lock:
            old, self._batcher = self._batcher, self._new_batcher(max_batch, max_delay)
            batcher = self._batcher
        if old is not None:
            old.close()
        return batcher

    def _new_batcher(self, max_batch: int, max_delay: float) -> DynamicBatcher:
        return DynamicBatcher(
            self._run_requests, self._request_key, max_batch=max_batch, max_delay=max_delay,
            name=f"hepzoo-batcher-{self.name}",
        )

    def submit(self, event, seed: int | None = None) -> Future:
        """Thread-safe: queue one request for the dynamic batcher; returns a Future.

        MLPF: ``event`` is one event's element rows ``float32[n, F]`` (result: ``{output: [n, ...]}``) or a
        one-event awkward array/record (result: its candidates, as :meth:`run` gives). Flash-sim: ``event`` is
        a context table ``float32[k, C]`` and ``seed`` is required; the result equals ``sample(event, seed)``.
        A request that is invalid, or fails in the backend, fails only its own future. The input is copied
        here, so the caller may overwrite its buffer as soon as ``submit`` returns.
        """
        with self._batcher_lock:
            if self._batcher is None:
                self._batcher = self._new_batcher(DEFAULT_BATCH_SIZE, 0.002)
            batcher = self._batcher
        return batcher.submit(_Request(self.card.family, event, seed))

    def close(self) -> None:
        """Stop the batcher (requests already submitted still complete)."""
        with self._batcher_lock:
            batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request_key(self, request: _Request):
        """Validate one request up front and return its batching key (the padded size for MLPF)."""
        if self.family.generative:
            if request.seed is None:
                raise ValueError(f"{self.name} is generative: submit(context, seed=...) needs a seed")
            request.payload = self._check_context(np.array(request.payload, dtype=np.float32))  # a copy: see submit
            return None
        if request.seed is not None:
            raise ValueError(f"seed= is for generative (flash-sim) models; {self.name} is deterministic")
        payload = request.payload
        if isinstance(payload, (ak.Array, ak.Record)):
            events = ak.Array([payload]) if isinstance(payload, ak.Record) else payload
            if len(events) != 1:
                raise ValueError(f"submit takes one event, got an array of {len(events)}")
            request.as_candidates = True
            payload, offsets = self.family.encode(events)
            check_track_charges(payload, offsets, self.card.inputs[0].feature_names, 0)
            check_elements(payload, offsets, self.card.inputs[0].feature_names, 0, full=True)
        x = np.array(payload, dtype=np.float32)  # always a copy: the caller may reuse its buffer after submit
        n_features = self.card.inputs[0].shape[-1]
        if x.ndim != 2 or (isinstance(n_features, int) and x.shape[1] != n_features):
            raise ValueError(f"tensor {self.card.inputs[0].name!r}: one event must be [n, {n_features}], got shape {x.shape}")
        check_event_sizes(np.array([len(x)]), self.max_elements, 0, self.name)
        check_elements(x, np.array([0, len(x)]), self.card.inputs[0].feature_names, 0)
        request.payload = x
        return self._pad_size(len(x), self.buckets) if len(x) else 0

    def _run_requests(self, requests: Sequence[_Request]) -> list:
        if self.family.generative:
            draws = [self._draw(np.random.default_rng(r.seed), len(r.payload)) for r in requests]
            context = np.concatenate([r.payload for r in requests])
            noise = {name: np.concatenate([d[0][name] for d in draws]) for name in draws[0][0]}
            result = self._sample_with(context, noise, np.concatenate([d[1] for d in draws]), DEFAULT_SAMPLE_CHUNK)
            bounds = np.cumsum([0] + [len(r.payload) for r in requests])
            return [
                {**{k: v[a:b] for k, v in result.items()}, "seed": r.seed}
                for r, a, b in zip(requests, bounds[:-1], bounds[1:], strict=True)
            ]
        counts = np.array([len(r.payload) for r in requests], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        size = self._pad_size(int(counts.max()), self.buckets) if counts.max() > 0 else 0
        out = self.run_elements(np.concatenate([r.payload for r in requests]), offsets, batch_size=len(requests),
                                buckets=(size,) if size else None)
        results = []
        for r, a, b in zip(requests, offsets[:-1], offsets[1:], strict=True):
            single = {k: v[a:b] for k, v in out.items()}
            results.append(self.family.decode(single, np.array([0, b - a])) if r.as_candidates else single)
        return results
