"""MLPF diagnosis (validation/diagnosis.py): the oracle rows are what they claim to be, checked with predictors
whose answers are known (the targets themselves; the targets' classes with the elements' own measurements)."""

from __future__ import annotations

import numpy as np
import pytest

from hepzoo.datasets.io import read_events
from hepzoo.datasets.schema import ElementFeature as EF, TargetClass
from hepzoo.validation.diagnosis import ABLATIONS, FLOOR_SEED, diagnose, format_diagnosis

pytestmark = pytest.mark.physics


def _oracle(events, kinematics: str):
    """A predictor returning the target classes and either the target or the element kinematics."""
    from hepzoo.datasets.loader import element_features

    def predict(features, offsets):
        cls = np.concatenate([np.asarray(c) for c in events.tgt.cls]).astype(np.int64)
        logits = np.full((len(cls), len(TargetClass)), -10.0, np.float32)
        logits[np.arange(len(cls)), cls] = 10.0
        if kinematics == "targets":
            t = events.tgt
            cols = [np.concatenate([np.asarray(x) for x in t[f]]) for f in ("pt", "eta", "sin_phi", "cos_phi", "e")]
        else:
            cols = [features[:, f] for f in (EF.PT, EF.ETA, EF.SIN_PHI, EF.COS_PHI, EF.E)]
        assert len(features) == len(cls) == int(offsets[-1])
        return {"cls_logits": logits, "charge_logits": np.zeros((len(cls), 3), np.float32),
                "regression": np.stack(cols, -1).astype(np.float32)}  # fmt: skip

    return predict


def test_oracle_rows(ci_sample):
    events = read_events(ci_sample)
    perfect = diagnose(events, _oracle(events, "targets"))
    rows = perfect["ablations"]
    for name in ("model", "pred cls + true kin", "true cls + pred kin"):
        assert rows[name]["jet"] == pytest.approx(rows["targets"]["jet"]), name
        assert rows[name]["met"] == pytest.approx(rows["targets"]["met"]), name
    assert rows["targets"]["jet"]["iqr_over_median"] < 0.05 < rows["PF"]["jet"]["iqr_over_median"]
    assert perfect["predicted_particle_without_target"] == 0
    for t, oracles in perfect["per_type_oracles"].items():  # nothing left to fix on any element type
        for kind, a in oracles.items():
            assert a["jet"] == pytest.approx(rows["targets"]["jet"]), (t, kind)
    # the resolution floor smears cluster energies by the calorimeter resolution: wider than the targets, seeded
    floor = rows["resolution floor"]["jet"]["iqr_over_median"]
    assert rows["targets"]["jet"]["iqr_over_median"] < floor
    assert perfect["resolution_floor_seed"] == FLOOR_SEED
    for t, r in perfect["per_element_type"].items():
        assert r["class_accuracy"] == 1.0 and r["predicted_none"] == 0.0, t
        assert r["e_model"]["median"] == pytest.approx(1.0, abs=1e-6), t

    raw = diagnose(events, _oracle(events, "elements"))
    assert raw["ablations"]["model"]["jet"] == pytest.approx(raw["ablations"]["true cls + element"]["jet"])
    assert raw["ablations"]["model"]["jet"] != pytest.approx(raw["ablations"]["targets"]["jet"])
    # with the target kinematics on the calorimeter slots the element-measurement predictor gets closer to the targets
    hcal = raw["per_type_oracles"]["HCAL_CLUSTER"]
    assert hcal["true cls"]["jet"] == pytest.approx(raw["ablations"]["model"]["jet"])  # its classes are the targets'
    assert hcal["true kin"]["jet"]["iqr_over_median"] < raw["ablations"]["model"]["jet"]["iqr_over_median"]
    again = diagnose(events, _oracle(events, "elements"))
    assert again["ablations"]["resolution floor"] == raw["ablations"]["resolution floor"]
    track = raw["per_element_type"]["TRACK"]
    assert track["e_model"] == pytest.approx(track["e_element"])
    text = format_diagnosis(raw, "raw")
    assert all(f"| {name} |" in text for name in ABLATIONS)
    assert "| true kin on HCAL_CLUSTER slots |" in text
