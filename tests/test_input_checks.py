"""Physical-value checks on runtime inputs: absurd, negative or unphysical values are refused before running,
with one line naming the event, the element and the feature (and, through run_file, the file and entries)."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from hepzoo.datasets import io, schema  # noqa: E402
from hepzoo.runtime import Session  # noqa: E402

from test_runtime import _events, _features  # noqa: E402

EF = schema.ElementFeature


@pytest.fixture(scope="module")
def mlpf():
    return Session.load("mlpf-gnnlsh")


@pytest.mark.parametrize(
    "feature, value, message",
    [
        (EF.PT, -5.0, r"event 1: element 2 \((track|ecal cluster|hcal cluster)\) has pt = -5: negative"),
        (EF.E, -0.5, r"event 1: element 2 .*has e = -0.5: negative"),
        (EF.PT, 1e38, r"event 1: element 2 .*has pt = 1e\+38: \|value\| above 1e\+06"),
        (EF.E, 2e6, r"event 1: element 2 .*has e = 2e\+06: \|value\| above"),
        (EF.ETA, -1e30, r"event 1: element 2 .*has eta = -1e\+30: \|value\| above"),
    ],
)
def test_unphysical_element_values_refused(mlpf, feature, value, message):
    x, off = _features([4, 5, 3], seed=1)
    x[off[1] + 2, feature] = value
    with pytest.raises(ValueError, match=message):
        mlpf.run_elements(x, off)
    with pytest.raises(ValueError, match=r"\(1 such values in this input\)"):
        mlpf.run_elements(x, off)
    one = x[off[1] : off[2]]
    with pytest.raises(ValueError, match=message.replace("event 1", "event 0")):
        mlpf.submit(one).result()
    x[off[1] + 2, feature] = abs(value) if abs(value) <= 1e6 else 1e3  # the same input made physical runs
    assert mlpf.run_elements(x, off)["regression"].shape == (len(x), 5)


def _with_track_charge(events: ak.Array, event: int, track: int, value) -> ak.Array:
    counts = ak.num(events.trk, axis=1)
    charge = ak.to_numpy(ak.flatten(events.trk.charge)).astype(np.float32)
    charge[int(ak.sum(counts[:event])) + track] = value
    return ak.with_field(events, ak.with_field(events.trk, ak.unflatten(charge, counts), "charge"), "trk")


@pytest.mark.parametrize("value", [0.5, 0, 2, -3])
def test_track_charge_must_be_plus_or_minus_one(mlpf, value):
    events = _events([2, 3, 1], [1, 2, 2], seed=3)
    bad = _with_track_charge(events, 1, 2, value)
    with pytest.raises(ValueError, match=rf"event 11: element 2 \(track\) has charge = {value:g}: a track charge must be -1 or \+1"):
        mlpf.run(bad, first_entry=10)
    with pytest.raises(ValueError, match=r"element 2 \(track\) has charge"):
        mlpf.submit(bad[1]).result()
    good = _with_track_charge(events, 1, 2, -1)
    assert len(mlpf.run(good)) == 3


def test_run_file_names_file_entries_event_element_feature(mlpf, tmp_path):
    events = _events([2, 3, 1, 2], [1, 2, 2, 0], seed=3)
    counts = ak.num(events.trk, axis=1)
    pt = ak.to_numpy(ak.flatten(events.trk.pt)).copy()
    pt[int(ak.sum(counts[:3]))] = -2.0
    broken = ak.with_field(events, ak.with_field(events.trk, ak.unflatten(pt, counts), "pt"), "trk")
    path = tmp_path / "negative.root"
    with io.EventWriter(path) as writer:
        writer.write(broken)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=r"negative\.root: entries 2-3: event 3: element 0 \(track\) has pt = -2: negative"):
        mlpf.run_file(path, out / "o.root", step_size=2)
    assert list(out.iterdir()) == []
