"""MLPF inputs and targets from in-memory chunks, and a streaming torch loader that pads to size buckets.

* the element rows and targets (``element_features``, ``element_targets``, ``element_counts``) are made by the
  torch-free :mod:`hepzoo.datasets.elements` (the runtime uses them too); they are importable from here as well.
* :class:`MLPFDataset` — a torch ``IterableDataset`` that streams chunks with :func:`iterate_events` and
  yields **ready batches**: within a chunk, events are grouped by size bucket and cut into batches of at most
  ``batch_size`` events, each padded (Numba kernel) to its bucket size. Use it with ``batch_size=None`` in
  the DataLoader (:func:`make_dataloader` does). Choice: iterable (streaming, flat memory) rather than a
  map-style cache, because training files are large; the work unit is an entry range of one file
  (``step_size`` events), dealt round-robin across DDP ranks and DataLoader workers, so no two workers read
  the same entries. Batches never mix chunks; the last batch of a bucket in a chunk may be short.
* :func:`collate` — pads a list of per-event samples (e.g. from a map-style dataset) to one bucket.

Batch dict: ``features [B,S,F] float32``, ``mask [B,S] bool``, ``target_cls [B,S] int64`` (0 = NONE in
padding), ``target_reg [B,S,T] float32``, ``n_elements [B] int64``, ``event_id [B] int64``, and with
``jets=True`` ``jet_index [B,S] int64`` (the slot's generator jet, 1-based within the event; 0 for none).
Events above the largest bucket raise :class:`~hepzoo.datasets.ragged.OversizeEventError` naming the file
and event; they are never truncated.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import torch

from hepzoo.datasets import io, schema
from hepzoo.datasets.elements import (  # noqa: F401  (element_features/element_targets: re-exported)
    N_FEATURES,
    N_TARGETS,
    element_counts,
    element_features,
    element_targets,
    offsets_from_counts,
)
from hepzoo.datasets.dtypes import SchemaError
from hepzoo.datasets.jet_assign import element_jet_index
from hepzoo.datasets.mapping import BranchMapping
from hepzoo.datasets.ragged import DEFAULT_BUCKETS, OversizeEventError, choose_bucket, group_by_bucket, pad


def _batch(
    x: np.ndarray,
    cls: np.ndarray,
    reg: np.ndarray,
    off: np.ndarray,
    idx: np.ndarray,
    size: int,
    event_ids: np.ndarray,
    jet_index: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """Pad events ``idx`` (rows ``off[i]:off[i+1]``) to ``size``."""
    counts = off[idx + 1] - off[idx]
    sub_off = offsets_from_counts(counts)
    rows = np.arange(sub_off[-1], dtype=np.int64) + np.repeat(off[idx] - sub_off[:-1], counts)
    feats, mask = pad(x[rows], sub_off, size, event_ids=event_ids[idx])
    tcls, _ = pad(cls[rows], sub_off, size)
    treg, _ = pad(reg[rows], sub_off, size)
    batch = {
        "features": torch.from_numpy(feats),
        "mask": torch.from_numpy(mask),
        "target_cls": torch.from_numpy(tcls),
        "target_reg": torch.from_numpy(treg),
        "n_elements": torch.from_numpy(counts.astype(np.int64)),
        "event_id": torch.from_numpy(event_ids[idx].astype(np.int64)),
    }
    if jet_index is not None:  # 0 (no jet) in padding
        batch["jet_index"] = torch.from_numpy(pad(jet_index[rows], sub_off, size)[0])
    return batch


def chunk_to_batches(
    events: ak.Array,
    batch_size: int,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    *,
    rng: np.random.Generator | None = None,
    source: str = "",
    jets: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """Bucketed, padded batches of one chunk (bucket order ascending; event order kept unless ``rng``).
    ``jets``: also ``jet_index [B,S]`` (:func:`hepzoo.datasets.jet_assign.element_jet_index`; needs ``genjet``)."""
    x, off = element_features(events)
    cls, reg, _ = element_targets(events)
    jet_index = None
    if jets:
        try:
            jet_index = element_jet_index(events, x, cls, reg, off)
        except SchemaError as err:
            raise SchemaError(f"{source}: {err}" if source else str(err)) from None
    counts = np.diff(off)
    event_ids = (
        ak.to_numpy(events["event_id"]).astype(np.int64)
        if "event_id" in events.fields
        else np.arange(len(events), dtype=np.int64)
    )
    try:
        groups = group_by_bucket(counts, buckets, event_ids=event_ids)
    except OversizeEventError as err:
        raise OversizeEventError(f"{source}: {err}" if source else str(err)) from None
    plan: list[tuple[int, np.ndarray]] = []
    for size, idx in groups.items():
        if rng is not None:
            idx = rng.permutation(idx)
        plan.extend((size, idx[i : i + batch_size]) for i in range(0, len(idx), batch_size))
    if rng is not None:
        plan = [plan[i] for i in rng.permutation(len(plan))]
    for size, idx in plan:
        yield _batch(x, cls, reg, off, idx, size, event_ids, jet_index)


def consumer_shard() -> tuple[int, int]:
    """(index, count) of this consumer across DDP ranks x DataLoader workers."""
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    info = torch.utils.data.get_worker_info()
    wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * nw + wid, world * nw


class MLPFDataset(torch.utils.data.IterableDataset):
    """Streams padded, bucketed MLPF batches from schema files (see the module docstring).

    ``paths``: files or glob patterns; ``step_size``: events per work unit (an entry range of one file);
    ``batch_size``: at most this many events per batch; ``shuffle``: permute work units, events within a
    bucket and batches, reproducibly from ``seed`` and the epoch (:meth:`set_epoch`); ``jets``: read the
    generator jets too and add each slot's ``jet_index`` (for the jet-level loss).
    """

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        *,
        step_size: int = 1000,
        batch_size: int = 32,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        mapping: BranchMapping | None = None,
        shuffle: bool = False,
        seed: int = 0,
        jets: bool = False,
    ):
        super().__init__()
        self.jets = bool(jets)
        if step_size <= 0 or batch_size <= 0:
            raise ValueError("step_size and batch_size must be positive")
        self.files = io.expand_paths(paths)
        self.step_size = int(step_size)
        self.batch_size = int(batch_size)
        self.buckets = tuple(int(b) for b in buckets)
        self.mapping = mapping
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.units: list[tuple[Path, int, int]] = []
        for f in self.files:  # validates every file's metadata up front
            n = io.num_entries(f, mapping=mapping)
            self.units.extend((f, s, min(s + self.step_size, n)) for s in range(0, n, self.step_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        me, n = consumer_shard()
        units = list(self.units)
        rng = None
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            units = [units[i] for i in rng.permutation(len(units))]
            rng = np.random.default_rng([self.seed, self.epoch, me])
        collections = ["trk", "clu", "tgt", *(["genjet"] if self.jets else [])]
        for path, start, stop in units[me::n]:
            chunk = io.read_range(path, start, stop, collections=collections, mapping=self.mapping)
            yield from chunk_to_batches(
                chunk, self.batch_size, self.buckets, rng=rng, source=f"{path} entries {start}-{stop}", jets=self.jets
            )

    def approx_num_batches(self) -> int:
        """A lower bound helper for progress bars: units x ceil(step/batch) (bucketing makes more)."""
        return sum(math.ceil((b - a) / self.batch_size) for _, a, b in self.units)


def collate(samples: Sequence[dict[str, Any]], buckets: Sequence[int] = DEFAULT_BUCKETS) -> dict[str, torch.Tensor]:
    """Pad per-event samples ``{features [n,F], target_cls [n], target_reg [n,T], event_id?}`` to the bucket
    of the largest event (one bucket per batch). Raises OversizeEventError naming the event."""
    counts = np.array([len(s["features"]) for s in samples], dtype=np.int64)
    event_ids = np.array([int(s.get("event_id", i)) for i, s in enumerate(samples)], dtype=np.int64)
    size = choose_bucket(int(counts.max()) if counts.size else 0, buckets)
    if size < 0:
        i = int(np.argmax(counts))
        raise OversizeEventError(
            f"event_id {event_ids[i]} has {counts[i]} elements, more than the largest bucket {max(buckets)}"
        )
    x = np.concatenate([np.asarray(s["features"], np.float32).reshape(-1, N_FEATURES) for s in samples])
    cls = np.concatenate([np.asarray(s["target_cls"], np.int64).reshape(-1) for s in samples])
    reg = np.concatenate([np.asarray(s["target_reg"], np.float32).reshape(-1, N_TARGETS) for s in samples])
    off = offsets_from_counts(counts)
    return _batch(x, cls, reg, off, np.arange(len(samples)), size, event_ids)


def make_dataloader(
    paths: str | Path | Sequence[str | Path],
    *,
    batch_size: int = 32,
    step_size: int = 1000,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    num_workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    mapping: BranchMapping | None = None,
    jets: bool = False,
    **loader_kw: Any,
) -> torch.utils.data.DataLoader:
    """A DataLoader over :class:`MLPFDataset` (the dataset batches; the loader only moves and prefetches)."""
    ds = MLPFDataset(
        paths, step_size=step_size, batch_size=batch_size, buckets=buckets, mapping=mapping, shuffle=shuffle, seed=seed,
        jets=jets,
    )  # fmt: skip
    return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=num_workers, **loader_kw)
