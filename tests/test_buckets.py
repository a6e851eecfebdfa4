"""The size-bucket policy (issue 20): bounded padding waste, granularity, the runtime's pad size, the cards of
new exports, re-carding, and TensorRT profiles following the list."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hepzoo.datasets.ragged import (
    DEFAULT_BUCKETS,
    bucket_policy,
    padded_size,
    padding_waste,
)
from hepzoo.export.buckets import export_buckets, main as rebucket_main, rebucket
from hepzoo.export.card import load_card
from hepzoo.export.zoo import find_release
from hepzoo.runtime.backends.base import Backend
from hepzoo.runtime.backends.tensorrt_backend import build_profiles, select_profile
from hepzoo.runtime.session import Session

LARGEST = 32768


def _padded_all(buckets, g):
    """padded size of every n in 1..LARGEST (vectorised smallest bucket >= n)."""
    n = np.arange(1, LARGEST + 1)
    b = np.asarray(buckets)
    return n, b[np.searchsorted(b, n, side="left")]


@pytest.mark.parametrize("g", [1, 7, 48, 64, 100])
def test_policy_bounds_the_waste_of_every_size(g):
    buckets = bucket_policy(g)
    b = np.asarray(buckets)
    assert np.all(b % g == 0) and np.all(np.diff(b) > 0)
    assert b[0] == -(-64 // g) * g and b[-1] == -(-LARGEST // g) * g
    n, padded = _padded_all(buckets, g)
    assert np.all(padded >= n)
    # padded <= max(smallest bucket, 1.25 n, n rounded up to the granularity): nothing better is possible
    bound = np.maximum(np.maximum(b[0], 1.25 * n), -(-n // g) * g)
    assert np.all(padded <= bound), n[padded > bound][:5]
    # above granularity / 0.25 elements the padded size is within 25 % of the real one
    above = n >= max(b[0], 4 * g)
    assert (padded[above] / n[above]).max() <= 1.25
    # and the steps are as large as the bound allows (no needless buckets): near 1.25 well above the granularity
    ratios = b[1:] / b[:-1]
    assert ratios[(b[:-1] >= 16 * g)][:-1].min() > 1.2


def test_policy_lists_and_the_old_list():
    assert bucket_policy(64)[:8] == (64, 128, 192, 256, 320, 384, 448, 512)
    assert bucket_policy(64)[-3:] == (23424, 29248, 32768) and len(bucket_policy(64)) == 28
    assert bucket_policy(1)[:4] == (64, 81, 102, 128) and len(bucket_policy(1)) == 29
    # the power-of-two list wastes up to ~2x: an 8 500-element event runs with 16 384
    assert padded_size(8500, DEFAULT_BUCKETS, 64) == 16384
    assert padded_size(8500, bucket_policy(64), 64) == 9664
    assert padded_size(40000, bucket_policy(64), 64) == 40000  # oversize: alone, rounded to the granularity
    assert padded_size(40001, bucket_policy(64), 64) == 40064
    with pytest.raises(ValueError, match="ratio > 1"):
        bucket_policy(64, ratio=1.0)


def test_padding_waste():
    assert padding_waste([64, 128], DEFAULT_BUCKETS) == 1.0
    assert padding_waste([65, 0], DEFAULT_BUCKETS) == pytest.approx(128 / 65)  # empty events are not run
    assert padding_waste([8500, 8500], DEFAULT_BUCKETS, 64) == pytest.approx(16384 / 8500)
    assert padding_waste([8500], bucket_policy(64), 64) == pytest.approx(9664 / 8500)
    assert padding_waste([40001], bucket_policy(64), 64) == pytest.approx(40064 / 40001)
    assert np.isnan(padding_waste([0], DEFAULT_BUCKETS))


def test_export_buckets_stop_at_max_elements():
    assert export_buckets(64, 131072) == list(bucket_policy(64))
    assert export_buckets(64, None) == list(bucket_policy(64))
    transformer = export_buckets(1, 16384)
    assert transformer[-1] == 16384 and transformer == [b for b in bucket_policy(1) if b < 16384] + [16384]
    assert export_buckets(8, 40) == [40]


class _Recorder(Backend):
    """Zeros of the card's output shapes; records the padded element size of every call."""

    name = "recorder"

    def __init__(self, card):
        self.card, self.sizes = card, []
        self._inputs = [t.name for t in card.inputs]
        self._outputs = [t.name for t in card.outputs]

    def run(self, inputs):
        x = next(iter(inputs.values()))
        self.sizes.append(x.shape[1])
        return {t.name: np.zeros((x.shape[0], x.shape[1], *t.shape[2:]), np.dtype(t.dtype)) for t in self.card.outputs}


def test_runtime_pads_to_the_smallest_bucket_at_least_n(make_features):
    release = find_release("mlpf-gnnlsh", "3")  # exported before the policy: its card has the power-of-two list
    card = load_card(release.path)
    buckets = export_buckets(card.element_granularity, card.max_elements)
    counts = [1, 64, 65, 257, 8500, 9664, 9665, 32768, 32769]
    x, offsets = make_features(counts)
    backend = _Recorder(card)
    session = Session(card, release.path, backend, buckets=buckets)
    out = session.run_elements(x, offsets, batch_size=1)
    assert sorted(backend.sizes) == [64, 64, 128, 320, 9664, 9664, 12032, 32768, 32832]
    assert all(len(v) == offsets[-1] for v in out.values())
    # the card's (old) list is what a session uses by default
    assert Session(card, release.path, _Recorder(card)).buckets == tuple(card.size_buckets) == DEFAULT_BUCKETS


def test_rebucket_a_copy_of_a_release(tmp_path, capsys):
    folder = tmp_path / "mlpf-gnnlsh"
    shutil.copytree(find_release("mlpf-gnnlsh", "3").path, folder)  # a card with the power-of-two list
    before = json.loads((folder / "card.json").read_text())
    old, new = rebucket(folder)  # dry run: nothing written
    assert old == list(DEFAULT_BUCKETS) and new == list(bucket_policy(64))
    assert json.loads((folder / "card.json").read_text()) == before
    assert rebucket_main(["--write", str(folder)]) == 0
    assert "rewritten" in capsys.readouterr().out
    after = json.loads((folder / "card.json").read_text())
    assert after.pop("size_buckets") == list(bucket_policy(64))
    before.pop("size_buckets")
    assert after == before  # nothing else changed
    assert load_card(folder).size_buckets == list(bucket_policy(64))  # still valid, files still verified
    assert rebucket(folder) == (new, new)
    flash = tmp_path / "flashsim-jet"
    shutil.copytree(find_release("flashsim-jet").path, flash)
    assert rebucket(flash, write=True) == ([], [])


def test_rebucket_sets_a_new_element_limit(tmp_path, capsys):
    folder = tmp_path / "mlpf-transformer"
    shutil.copytree(find_release("mlpf-transformer", "4").path, folder)
    before = json.loads((folder / "card.json").read_text())
    assert before["max_elements"] == 16384 and before["size_buckets"][-1] == 16384
    assert rebucket_main(["--write", "--max-elements", "32768", str(folder)]) == 0
    assert "rewritten" in capsys.readouterr().out
    after = json.loads((folder / "card.json").read_text())
    buckets = after.pop("size_buckets")
    assert after.pop("max_elements") == 32768 and buckets == export_buckets(1, 32768) and buckets[-1] == 32768
    old = before["size_buckets"]
    assert buckets[: len(old) - 1] == old[:-1] and old[-2] < 16384 < buckets[len(old) - 1]  # same policy, further up
    before.pop("max_elements"), before.pop("size_buckets")
    assert after == before  # nothing else changed
    assert load_card(folder).max_elements == 32768  # still valid, files still verified
    for bad in (0, -5):
        with pytest.raises(ValueError, match="max_elements"):
            rebucket(folder, write=True, max_elements=bad)
    flash = tmp_path / "flashsim-jet"
    shutil.copytree(find_release("flashsim-jet").path, flash)
    with pytest.raises(ValueError, match="no element axis"):
        rebucket(flash, write=True, max_elements=100)


def test_tensorrt_profiles_follow_the_policy_list():
    card = load_card(find_release("mlpf-gnnlsh").path)
    card = card.model_copy(update={"size_buckets": export_buckets(64, card.max_elements)})
    profiles = build_profiles(card)
    assert [p.elements[1] for p in profiles] == card.size_buckets
    assert [p.elements[0] for p in profiles] == [64] + [b + 64 for b in card.size_buckets[:-1]]
    for p, bucket in zip(profiles, card.size_buckets, strict=True):
        shapes = {name: (lo, opt, hi) for name, lo, opt, hi in p.shapes}
        assert shapes["features"][1][1] == shapes["features"][2][1] == bucket
    # every size the session pads to (below the largest bucket) has its own profile, with opt = that size
    for n in (1, 65, 300, 8500, 32768):
        size = padded_size(n, card.size_buckets, 64)
        assert profiles[select_profile(profiles, size)].elements[1] == size


def test_padding_waste_measurement(tmp_path, synthetic_events, write_events, capsys):
    from hepzoo.benchmarks import padding_waste as measure

    events = synthetic_events(20, seed=3, max_elements=40)
    write_events(tmp_path / "small.root", events)
    counts = measure.element_counts(tmp_path / "small.root")
    assert counts.tolist() == [len(e["trk_pt"]) + len(e["clu_e"]) for e in events]
    sizes = measure.unions(np.arange(100, 700), 5000, 20000, n=300, seed=1)
    assert sizes.size == 300 and sizes.min() >= 5000 and sizes.max() <= 20000
    assert np.array_equal(sizes, measure.unions(np.arange(100, 700), 5000, 20000, n=300, seed=1))
    (row,) = measure.waste_table({"u": np.array([8500, 4000])}, granularities=(64,))
    assert row["old_waste"] == pytest.approx((16384 + 4096) / 12500)
    assert row["new_waste"] == pytest.approx((9664 + 4032) / 12500)
    assert row["old_worst"] == pytest.approx(16384 / 8500) and (row["old_buckets"], row["new_buckets"]) == (9, 28)
    assert measure.main([str(tmp_path / "small.root"), "--unions", "5", "--union-min", "50", "--union-max", "200"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 + 4 and table[2].startswith("| small.root | 64 | 20 |")
