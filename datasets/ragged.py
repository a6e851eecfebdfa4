"""Ragged layout kernels (docs/ARCHITECTURE.md, contract 2): size buckets, pad, unpad, group-by-bucket.

Jagged data moves as flat content ``[N, F]`` plus ``offsets`` ``int64[B+1]`` (awkward's ListOffsetArray
layout; ``offsets[0]`` need not be 0, which allows slices of a larger flat array). Padding happens only at a
backend's edge, to one of a few fixed sizes: ``DEFAULT_BUCKETS`` (powers of two; training batches and the
cards of releases exported before the bucket policy) or :func:`bucket_policy` (geometric steps of 1.25 in
multiples of the model's element granularity, the list new exports write into the card), which bounds the
padding of any event up to the largest bucket to 25 % (:func:`padded_size`, :func:`padding_waste`).

Every Numba kernel (``*_kernel``, ``@njit(cache=True)``, callable from other njit code) has a NumPy reference
(``_*_reference``) that tests compare it with; the public functions (``pad``, ``unpad``, ``group_by_bucket``)
validate their inputs, then call the kernel.

Oversize events: ``choose_bucket`` returns ``-1`` for ``n`` above the largest bucket (it never clips);
``pad`` and ``group_by_bucket`` raise :class:`OversizeEventError` naming the first such event. Nothing here
truncates an event; splitting oversize events is the runtime's job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit

DEFAULT_BUCKETS: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)

# the bucket policy of new exports: ratio of consecutive buckets, smallest and largest bucket (elements)
BUCKET_RATIO = 1.25
BUCKET_SMALLEST = 64
BUCKET_LARGEST = 32768


class OversizeEventError(ValueError):
    """An event has more elements than the largest size bucket (or the requested pad size)."""


def _check_buckets(buckets: Sequence[int]) -> np.ndarray:
    b = np.asarray(buckets, dtype=np.int64)
    if b.ndim != 1 or b.size == 0 or np.any(b <= 0) or np.any(np.diff(b) <= 0):
        raise ValueError(f"buckets must be positive and strictly increasing, got {tuple(buckets)}")
    return b


def choose_bucket(n: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
    """Smallest bucket >= n; -1 if n exceeds the largest bucket (callers must handle it, never clip)."""
    if n < 0:
        raise ValueError(f"element count must be >= 0, got {n}")
    for b in buckets:
        if n <= b:
            return int(b)
    return -1


def choose_buckets(counts: np.ndarray, buckets: Sequence[int] = DEFAULT_BUCKETS) -> np.ndarray:
    """Vectorised :func:`choose_bucket`: int64 array of bucket sizes, -1 where oversize."""
    b = _check_buckets(buckets)
    idx = np.searchsorted(b, np.asarray(counts, dtype=np.int64), side="left")
    return np.where(idx < b.size, b[np.minimum(idx, b.size - 1)], -1)


def bucket_policy(
    granularity: int = 1,
    ratio: float = BUCKET_RATIO,
    smallest: int = BUCKET_SMALLEST,
    largest: int = BUCKET_LARGEST,
) -> tuple[int, ...]:
    """Size buckets that bound padding waste: multiples of ``granularity`` from ``smallest`` to ``largest``
    (both rounded up to it), each the largest multiple of ``granularity`` not above ``ratio`` times
    (previous bucket + 1), and at least one granularity step above the previous one.

    Guarantee (tested for every n up to ``largest``): an event of ``n`` elements is padded to at most
    ``max(smallest, ratio * n, n rounded up to granularity)`` elements, so above
    ``granularity / (ratio - 1)`` elements (256 for the GNN-LSH bin size 64) the padded size is at most
    ``ratio`` times the real one, and below ``smallest`` at most ``smallest`` elements are run.
    """
    g = int(granularity)
    if g < 1 or not ratio > 1 or smallest < 1 or largest < smallest:
        raise ValueError(f"need granularity >= 1, ratio > 1, 1 <= smallest <= largest; got {g}, {ratio}, {smallest}, {largest}")
    b, top = _round_up(smallest, g), _round_up(largest, g)
    out = [b]
    while b < top:
        b = min(top, max(b + g, int(math.floor(ratio * (b + 1) / g)) * g))
        out.append(b)
    return tuple(out)


def _round_up(n: int, g: int) -> int:
    return -(-int(n) // g) * g


def padded_size(n: int, buckets: Sequence[int], granularity: int = 1) -> int:
    """Elements an event of ``n`` is run with: the smallest bucket >= n, or above the largest bucket ``n``
    rounded up to ``granularity`` (such an event runs alone, never truncated)."""
    b = choose_bucket(n, buckets)
    return b if b >= 0 else _round_up(n, granularity)


def padding_waste(counts: np.ndarray, buckets: Sequence[int], granularity: int = 1) -> float:
    """Sum of padded sizes over the sum of real element counts (1.0: no padding); ``nan`` for no elements.
    Events without elements are left out (nothing of them is run)."""
    c = np.asarray(counts, dtype=np.int64)
    c = c[c > 0]
    real = int(c.sum())
    if real == 0:
        return float("nan")
    sizes = choose_buckets(c, buckets)
    over = sizes < 0
    sizes[over] = -(-c[over] // granularity) * granularity
    return float(sizes.sum()) / real


# ---- kernels -----------------------------------------------------------------------------------------


@njit(cache=True)
def pad_kernel(flat, offsets, size, fill):
    """flat [N, F], offsets int64[B+1] -> (padded [B, size, F] of flat.dtype filled with ``fill``, mask [B, size]).

    Assumes every count <= size (checked by :func:`pad`).
    """
    nb = offsets.shape[0] - 1
    nf = flat.shape[1]
    out = np.full((nb, size, nf), fill, dtype=flat.dtype)
    mask = np.zeros((nb, size), dtype=np.bool_)
    for i in range(nb):
        s = offsets[i]
        n = offsets[i + 1] - s
        for j in range(n):
            mask[i, j] = True
            for k in range(nf):
                out[i, j, k] = flat[s + j, k]
    return out, mask


@njit(cache=True)
def unpad_kernel(padded, offsets):
    """padded [B, S, F], offsets int64[B+1] -> flat [offsets[-1]-offsets[0], F] (the first counts rows of each event)."""
    nb = offsets.shape[0] - 1
    nf = padded.shape[2]
    base = offsets[0]
    out = np.empty((offsets[nb] - base, nf), dtype=padded.dtype)
    for i in range(nb):
        s = offsets[i] - base
        n = offsets[i + 1] - offsets[i]
        for j in range(n):
            for k in range(nf):
                out[s + j, k] = padded[i, j, k]
    return out


@njit(cache=True)
def bucket_index_kernel(counts, buckets):
    """Index into ``buckets`` of each event's bucket (-1 if oversize)."""
    out = np.empty(counts.shape[0], dtype=np.int64)
    for i in range(counts.shape[0]):
        out[i] = -1
        for j in range(buckets.shape[0]):
            if counts[i] <= buckets[j]:
                out[i] = j
                break
    return out


@njit(cache=True)
def group_kernel(bucket_idx, n_buckets):
    """Stable grouping: (order int64[B] of event indices sorted by bucket, starts int64[n_buckets+1])."""
    starts = np.zeros(n_buckets + 1, dtype=np.int64)
    for i in range(bucket_idx.shape[0]):
        starts[bucket_idx[i] + 1] += 1
    for j in range(n_buckets):
        starts[j + 1] += starts[j]
    fill = starts[:-1].copy()
    order = np.empty(bucket_idx.shape[0], dtype=np.int64)
    for i in range(bucket_idx.shape[0]):
        b = bucket_idx[i]
        order[fill[b]] = i
        fill[b] += 1
    return order, starts


# ---- NumPy references ------------------------------------------------------------------------------------


def _pad_reference(flat: np.ndarray, offsets: np.ndarray, size: int, fill=0) -> tuple[np.ndarray, np.ndarray]:
    flat2 = flat.reshape(flat.shape[0], math.prod(flat.shape[1:]))
    counts = np.diff(offsets)
    nb = counts.size
    out = np.full((nb, size, flat2.shape[1]), fill, dtype=flat.dtype)
    mask = np.arange(size)[None, :] < counts[:, None]
    ev = np.repeat(np.arange(nb), counts)
    pos = np.arange(int(counts.sum())) - np.repeat(offsets[:-1] - offsets[0], counts)
    out[ev, pos] = flat2[offsets[0] : offsets[-1]]
    return out.reshape((nb, size) + flat.shape[1:]), mask


def _unpad_reference(padded: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    counts = np.diff(offsets)
    if counts.size == 0:
        return np.zeros((0,) + padded.shape[2:], dtype=padded.dtype)
    mask = np.arange(padded.shape[1])[None, :] < counts[:, None]
    return padded[mask]


def _group_by_bucket_reference(counts: np.ndarray, buckets: Sequence[int]) -> dict[int, np.ndarray]:
    out: dict[int, list[int]] = {}
    for i, n in enumerate(counts):
        b = choose_bucket(int(n), buckets)
        if b < 0:
            raise OversizeEventError(f"event {i} has {n} elements > largest bucket {max(buckets)}")
        out.setdefault(b, []).append(i)
    return {b: np.asarray(v, dtype=np.int64) for b, v in sorted(out.items())}


# ---- public API --------------------------------------------------------------------------------------------


def _check_offsets(offsets: np.ndarray, n_rows: int) -> np.ndarray:
    off = np.ascontiguousarray(offsets, dtype=np.int64)
    if off.ndim != 1 or off.size == 0:
        raise ValueError("offsets must be a non-empty 1-D array (B+1 entries)")
    if np.any(np.diff(off) < 0) or off[0] < 0 or off[-1] > n_rows:
        raise ValueError(f"offsets must be non-decreasing within [0, {n_rows}]")
    return off


def pad(
    flat: np.ndarray, offsets: np.ndarray, size: int, fill: float | int = 0, event_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pad flat ``[N]`` or ``[N, F]`` rows per event to ``[B, size(, F)]``; returns (padded, mask [B, size]).

    Raises :class:`OversizeEventError` (naming the event, by ``event_ids`` if given) if a count exceeds size.
    """
    flat = np.asarray(flat)
    off = _check_offsets(offsets, flat.shape[0])
    counts = np.diff(off)
    if counts.size and counts.max() > size:
        i = int(np.argmax(counts > size))
        name = f"event_id {int(event_ids[i])}" if event_ids is not None else f"event {i}"
        raise OversizeEventError(f"{name} has {int(counts[i])} elements, more than the pad size {size}")
    flat2 = np.ascontiguousarray(flat.reshape(flat.shape[0], math.prod(flat.shape[1:])))
    out, mask = pad_kernel(flat2, off, int(size), flat2.dtype.type(fill))
    return out.reshape((off.size - 1, size) + flat.shape[1:]), mask


def unpad(padded: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pad`: ``[B, S(, F)]`` -> flat ``[N(, F)]`` of the first count rows of each event."""
    padded = np.asarray(padded)
    off = _check_offsets(offsets, np.iinfo(np.int64).max)
    if off.size - 1 != padded.shape[0]:
        raise ValueError(f"offsets describe {off.size - 1} events, padded has {padded.shape[0]}")
    counts = np.diff(off)
    if counts.size and counts.max() > padded.shape[1]:
        raise ValueError(f"an event has {counts.max()} elements, more than the padded size {padded.shape[1]}")
    p3 = np.ascontiguousarray(padded.reshape(padded.shape[0], padded.shape[1], math.prod(padded.shape[2:])))
    out = unpad_kernel(p3, off)
    return out.reshape((out.shape[0],) + padded.shape[2:])


def group_by_bucket(
    counts: np.ndarray, buckets: Sequence[int] = DEFAULT_BUCKETS, event_ids: np.ndarray | None = None
) -> dict[int, np.ndarray]:
    """``{bucket size: int64 event indices (ascending)}`` for non-empty buckets, in increasing bucket order.

    Raises :class:`OversizeEventError` naming the first event above the largest bucket.
    """
    b = _check_buckets(buckets)
    c = np.ascontiguousarray(counts, dtype=np.int64)
    if c.size and c.min() < 0:
        raise ValueError("element counts must be >= 0")
    idx = bucket_index_kernel(c, b)
    if c.size and idx.min() < 0:
        i = int(np.argmax(idx < 0))
        name = f"event_id {int(event_ids[i])}" if event_ids is not None else f"event {i}"
        raise OversizeEventError(f"{name} has {int(c[i])} elements, more than the largest bucket {int(b[-1])}")
    order, starts = group_kernel(idx, b.size)
    return {int(b[j]): order[starts[j] : starts[j + 1]] for j in range(b.size) if starts[j + 1] > starts[j]}
