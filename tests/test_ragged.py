"""Ragged-layout kernels: Numba kernels against their NumPy references."""

from __future__ import annotations

import numpy as np
import pytest

from hepzoo.datasets import ragged
from hepzoo.datasets.ragged import (
    DEFAULT_BUCKETS,
    OversizeEventError,
    _group_by_bucket_reference,
    _pad_reference,
    _unpad_reference,
)


def offsets_of(counts) -> np.ndarray:
    off = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    return off


def random_flat(rng, n, nf, dtype):
    if np.dtype(dtype).kind == "f":
        return rng.normal(size=(n, nf)).astype(dtype)
    return rng.integers(-1000, 1000, size=(n, nf)).astype(dtype)


def test_choose_bucket():
    assert ragged.choose_bucket(0) == 64
    assert ragged.choose_bucket(64) == 64
    assert ragged.choose_bucket(65) == 128
    assert ragged.choose_bucket(16384) == 16384
    assert ragged.choose_bucket(16385) == -1
    assert ragged.choose_bucket(5, (4, 8)) == 8
    with pytest.raises(ValueError):
        ragged.choose_bucket(-1)
    counts = np.array([0, 1, 64, 65, 200, 16384, 16385, 3000])
    np.testing.assert_array_equal(
        ragged.choose_buckets(counts), [ragged.choose_bucket(int(c)) for c in counts]
    )


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pad_unpad_match_reference(dtype, seed):
    rng = np.random.default_rng(seed)
    size = 16
    counts = rng.integers(0, size + 1, size=int(rng.integers(1, 20)))
    counts[0] = 0  # an empty event
    counts[-1] = size  # an event of exactly the bucket size
    flat = random_flat(rng, int(counts.sum()), 5, dtype)
    off = offsets_of(counts)
    got, mask = ragged.pad(flat, off, size, fill=-7)
    ref, ref_mask = _pad_reference(flat, off, size, fill=-7)
    assert got.dtype == np.dtype(dtype) and got.shape == (len(counts), size, 5)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(mask, ref_mask)
    assert mask.dtype == np.bool_ and mask.sum() == counts.sum()
    assert np.all(got[~mask] == -7)
    # hand check one event
    i = int(np.argmax(counts > 0))
    np.testing.assert_array_equal(got[i, : counts[i]], flat[off[i] : off[i + 1]])
    back = ragged.unpad(got, off)
    np.testing.assert_array_equal(back, flat)
    np.testing.assert_array_equal(back, _unpad_reference(got, off))
    assert back.dtype == np.dtype(dtype)


def test_pad_1d_and_offsets_not_from_zero():
    flat = np.arange(10, dtype=np.int64)
    off = np.array([2, 5, 5, 9])  # a slice of a larger flat array
    got, mask = ragged.pad(flat, off, 4)
    np.testing.assert_array_equal(got, [[2, 3, 4, 0], [0, 0, 0, 0], [5, 6, 7, 8]])
    np.testing.assert_array_equal(mask.sum(axis=1), [3, 0, 4])
    ref, _ = _pad_reference(flat, off, 4)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(ragged.unpad(got, off), flat[2:9])


def test_zero_events_and_all_empty():
    flat = np.zeros((0, 3), np.float32)
    got, mask = ragged.pad(flat, np.array([0]), 64)
    assert got.shape == (0, 64, 3) and mask.shape == (0, 64)
    assert ragged.unpad(got, np.array([0])).shape == (0, 3)
    got, mask = ragged.pad(flat, np.zeros(4, np.int64), 64)
    assert got.shape == (3, 64, 3) and not mask.any()
    np.testing.assert_array_equal(got, _pad_reference(flat, np.zeros(4, np.int64), 64)[0])
    assert ragged.group_by_bucket(np.zeros(0, np.int64)) == {}


def test_pad_oversize_raises_naming_event():
    flat = np.zeros((10, 2), np.float32)
    with pytest.raises(OversizeEventError, match="event 1 has 7 elements"):
        ragged.pad(flat, np.array([0, 3, 10]), 4)
    with pytest.raises(OversizeEventError, match="event_id 99 has 7"):
        ragged.pad(flat, np.array([0, 3, 10]), 4, event_ids=np.array([98, 99]))
    with pytest.raises(ValueError, match="non-decreasing"):
        ragged.pad(flat, np.array([0, 5, 3]), 8)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_group_by_bucket_matches_reference(seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 3000, size=200)
    counts[:5] = [0, 64, 65, 128, 2048]
    got = ragged.group_by_bucket(counts)
    ref = _group_by_bucket_reference(counts, DEFAULT_BUCKETS)
    assert list(got) == list(ref)
    for b in ref:
        np.testing.assert_array_equal(got[b], ref[b])
        assert got[b].dtype == np.int64
        assert np.all(counts[got[b]] <= b)
    assert sorted(np.concatenate(list(got.values())).tolist()) == list(range(200))
    assert 0 in got[64] and 1 in got[64] and 2 in got[128] and 3 in got[128] and 4 in got[2048]


def test_group_by_bucket_custom_and_oversize():
    got = ragged.group_by_bucket(np.array([3, 9, 4, 0, 8]), buckets=(4, 8, 16))
    assert {k: v.tolist() for k, v in got.items()} == {4: [0, 2, 3], 8: [4], 16: [1]}
    with pytest.raises(OversizeEventError, match="event 2 has 17 elements.*16"):
        ragged.group_by_bucket(np.array([3, 9, 17, 40]), buckets=(4, 8, 16))
    with pytest.raises(OversizeEventError, match="event_id 12"):
        ragged.group_by_bucket(np.array([3, 17]), buckets=(4, 8, 16), event_ids=np.array([11, 12]))
    with pytest.raises(ValueError, match="increasing"):
        ragged.group_by_bucket(np.array([1]), buckets=(8, 4))


def test_kernels_callable_directly():
    """The njit kernels (for other njit code) agree with the references too."""
    rng = np.random.default_rng(5)
    counts = np.array([0, 3, 8, 1])
    flat = rng.normal(size=(12, 2)).astype(np.float32)
    off = offsets_of(counts)
    out, mask = ragged.pad_kernel(flat, off, 8, np.float32(0))
    np.testing.assert_array_equal(out, _pad_reference(flat, off, 8)[0])
    np.testing.assert_array_equal(ragged.unpad_kernel(out, off), flat)
    idx = ragged.bucket_index_kernel(counts, np.array([1, 4, 8]))
    np.testing.assert_array_equal(idx, [0, 1, 2, 0])
