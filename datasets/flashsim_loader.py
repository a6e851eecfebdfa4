"""The torch side of the flash-sim object tables: a streaming dataset of training batches.

:class:`FlashSimDataset` reads event files in work units, turns each chunk into an object table with the object
kind's table function (:data:`hepzoo.datasets.flashsim_data.KINDS`) and yields batches of torch tensors. The tables
themselves (and the reconstruction the runtime uses) are torch-free, in :mod:`hepzoo.datasets.flashsim_data`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from hepzoo.datasets import io
from hepzoo.datasets.flashsim_data import KINDS
from hepzoo.datasets.loader import consumer_shard

__all__ = ["FlashSimDataset", "table_batches"]


class FlashSimDataset(torch.utils.data.IterableDataset):
    """Streams flash-sim batches ``dict(context [B,C] float32, matched [B] bool, target [B,D] float32)``.

    ``paths``: files or glob patterns; ``kind``: ``"jet"`` or ``"track"`` (:data:`KINDS`); ``step_size``:
    events per work unit (an entry range of one file, read with :func:`hepzoo.datasets.io.read_range`);
    ``batch_size``: at most this many objects per batch (batches never span work units; the last of a unit
    may be short). ``shuffle``: permute the work units and the objects within each unit, reproducibly from
    ``seed`` and the epoch (:meth:`set_epoch`). Work units are dealt round-robin over DDP ranks x
    DataLoader workers (use ``DataLoader(ds, batch_size=None)``).
    """

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        kind: str = "jet",
        *,
        step_size: int = 1000,
        batch_size: int = 1024,
        shuffle: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"FlashSimDataset: kind must be one of {sorted(KINDS)}, got {kind!r}")
        if step_size <= 0 or batch_size <= 0:
            raise ValueError("step_size and batch_size must be positive")
        self.kind = kind
        self.table_fn, self.collections = KINDS[kind].table, KINDS[kind].collections
        self.files = io.expand_paths(paths)
        self.step_size = int(step_size)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self.units: list[tuple[Path, int, int]] = []
        for f in self.files:  # validates every file's metadata up front
            n = io.num_entries(f)
            self.units.extend((f, s, min(s + self.step_size, n)) for s in range(0, n, self.step_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        me, n_consumers = consumer_shard()
        units = list(self.units)
        rng = None
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(units))
            units = [units[i] for i in order]
            rng = np.random.default_rng([self.seed, self.epoch, me])
        for path, start, stop in units[me::n_consumers]:
            chunk = io.read_range(path, start, stop, collections=list(self.collections))
            yield from table_batches(self.table_fn(chunk), self.batch_size, rng)

    def approx_num_batches(self, objects_per_event: float = 1.0) -> int:
        """Rough count for progress bars (objects per event is not known before reading)."""
        return sum(math.ceil((b - a) * objects_per_event / self.batch_size) for _, a, b in self.units)


def table_batches(
    table: dict[str, np.ndarray], batch_size: int, rng: np.random.Generator | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Cut a table into batches of at most ``batch_size`` rows (rows permuted by ``rng`` when given)."""
    n = len(table["matched"])
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        yield {
            "context": torch.from_numpy(np.ascontiguousarray(table["context"][idx], np.float32)),
            "matched": torch.from_numpy(np.ascontiguousarray(table["matched"][idx], bool)),
            "target": torch.from_numpy(np.ascontiguousarray(table["target"][idx], np.float32)),
        }
