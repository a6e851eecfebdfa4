"""``Session``: a released model (``zoo/<name>/<version>/``: ``card.json`` + ``model.onnx``) on a backend.

DESIGN.md contract 4. MLPF models take ragged events (contract 2: flat element rows + offsets); the session
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
from collections.abc import Sequence
from pathlib import Path

import awkward as ak
import numpy as np

from hepzoo.datasets.ragged import pad, unpad
from hepzoo.datasets.schema import TargetClass
from hepzoo.export.card import CARD, ModelCard, load_card

from .backends import Backend, create_backend

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


class Session:
    """Load with :meth:`Session.load`; see the module docstring."""

    def __init__(self, card: ModelCard, folder: Path, backend: Backend, buckets: Sequence[int] | None = None):
        self.card = card
        self.folder = folder
        self.backend = backend
        self.buckets = self._check_buckets(card.size_buckets if buckets is None else buckets)

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
        folder = resolve_release_dir(name_or_path, version).resolve()
        unverified = load_card(folder, verify_onnx=False)
        onnx_path = (folder / unverified.onnx.file).resolve()
        if not onnx_path.is_relative_to(folder):
            raise ValueError(
                f"{folder / CARD}: onnx.file {unverified.onnx.file!r} points outside the release folder {folder}"
            )
        card = load_card(folder)  # checks the sha256 of model.onnx (error names the file)
        return cls(card, folder, create_backend(backend, onnx_path, intra_op_threads=intra_op_threads), buckets)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.card.version

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

    def _require_family(self, family: str, method: str) -> None:
        if self.card.family != family:
            raise TypeError(f"{method} is for {family} models; {self.card.name} is a {self.card.family} model")

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
    ) -> dict[str, np.ndarray]:
        """Flat element rows ``float32[N, F]`` + ``offsets`` ``int64[B+1]`` -> ``{output: [N, ...]}``.

        Output row ``i`` belongs to input row ``offsets[0] + i`` (so ``N = offsets[-1] - offsets[0]``).
        Events are grouped by size bucket, padded, run ``batch_size`` events at a time, and unpadded;
        an event above the largest bucket runs alone, padded to the next multiple of the granularity.
        """
        self._require_family("mlpf", "run_elements")
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
        feat_name, mask_name = self._element_io()

        groups: list[tuple[int, np.ndarray]] = []  # (pad size, event indices)
        sizes = np.array([self._pad_size(int(c), bucket_sizes) for c in counts], dtype=np.int64) if counts.size else counts
        for size in (int(s) for s in np.unique(sizes)):
            events = np.flatnonzero(sizes == size)
            step = batch_size if size <= (bucket_sizes[-1] if bucket_sizes else 0) else 1
            groups += [(size, events[i : i + step]) for i in range(0, events.size, step)]

        out: dict[str, np.ndarray] = {}
        for size, events in groups:
            rows, sub_off = _rows_of(off, events)
            x, mask = pad(features[rows], sub_off, size)
            inputs = {feat_name: x}
            if mask_name is not None:
                inputs[mask_name] = mask
            result = self.backend.run(inputs)
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

    def run(self, events: ak.Array, probabilities: bool = False, keep_empty: bool = False, **kwargs) -> ak.Array:
        """Events (awkward, contract 1) -> per-event candidate records ``cls, charge, pt, eta, phi, e``.

        Same events, same order. Element slots predicted as ``TargetClass.NONE`` are dropped unless
        ``keep_empty`` (then records stay element-aligned: tracks then clusters). ``probabilities`` adds
        ``cls_prob`` (softmax of ``cls_logits``, ``[n_classes]`` per record). ``kwargs`` go to :meth:`run_elements`.
        """
        self._require_family("mlpf", "run")
        from hepzoo.datasets.loader import element_features

        features, offsets = element_features(events)
        out = self.run_elements(features, offsets, **kwargs)
        counts = np.diff(offsets)
        reg = out["regression"]
        fields = {
            "cls": out["cls_logits"].argmax(-1).astype(np.int32),
            "charge": (out["charge_logits"].argmax(-1) - 1).astype(np.int32),
            "pt": reg[:, 0],
            "eta": reg[:, 1],
            "phi": np.arctan2(reg[:, 2], reg[:, 3]).astype(np.float32),
            "e": reg[:, 4],
        }
        if probabilities:
            logits = out["cls_logits"]
            p = np.exp(logits - (logits.max(-1, keepdims=True) if len(logits) else 0))
            fields["cls_prob"] = (p / p.sum(-1, keepdims=True)).astype(np.float32)
        candidates = ak.zip({k: ak.unflatten(v, counts) for k, v in fields.items()}, depth_limit=2)
        return candidates if keep_empty else candidates[candidates.cls != int(TargetClass.NONE)]

    # ---- flash-sim -----------------------------------------------------------------------------------------

    def sample(self, context: np.ndarray, seed: int, chunk_size: int = DEFAULT_SAMPLE_CHUNK) -> dict:
        """Context ``float32[N, C]`` -> ``{efficiency [N], sample [N, T], matched bool[N], seed}``.

        Noise: ``rng = np.random.default_rng(seed)``; one ``standard_normal`` draw per noise input for all rows,
        then ``matched = rng.uniform(size=N) < efficiency``. Independent of ``chunk_size``.
        """
        self._require_family("flashsim", "sample")
        context_card = next(t for t in self.card.inputs if t.name not in {n.name for n in self.card.noise_inputs})
        context = np.asarray(context, dtype=np.float32)
        n_ctx = context_card.shape[-1]
        if context.ndim != 2 or (isinstance(n_ctx, int) and context.shape[1] != n_ctx):
            raise ValueError(f"context must be [N, {n_ctx}] ({context_card.feature_names}), got shape {context.shape}")
        n = len(context)
        rng = np.random.default_rng(seed)
        noise = {}
        for spec in self.card.noise_inputs:
            tail = tuple(int(s) for s in spec.shape[1:])
            noise[spec.name] = rng.standard_normal((n,) + tail, dtype=np.float32)
        u = rng.uniform(size=n)
        parts: dict[str, list[np.ndarray]] = {t.name: [] for t in self.card.outputs}
        for start in range(0, n, chunk_size):
            inputs = {context_card.name: context[start : start + chunk_size]}
            inputs.update({k: v[start : start + chunk_size] for k, v in noise.items()})
            for name, value in self.backend.run(inputs).items():
                parts[name].append(value)
        result: dict = {}
        for t in self.card.outputs:
            tail = tuple(int(s) for s in t.shape[1:])
            result[t.name] = np.concatenate(parts[t.name]) if parts[t.name] else np.zeros((0,) + tail, np.dtype(t.dtype))
        result["matched"] = u < result["efficiency"]
        result["seed"] = seed
        return result
