"""Fidelity metrics against hand-computed values; classifier test on same/different distributions; report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from hepzoo.validation.fidelity import (
    classifier_auc,
    efficiency_curve,
    fidelity_report,
    ks_statistic,
    roc_auc,
    wasserstein_1,
)


def test_wasserstein_1_hand_values():
    assert wasserstein_1([0, 1, 3], [5, 6, 8]) == pytest.approx(5.0)  # a pure shift moves every unit of mass by 5
    # F_a - F_b = 1 - 1/2 on [1, 3): area 1
    assert wasserstein_1([0, 1], [0, 3]) == pytest.approx(1.0)
    assert wasserstein_1([2, 2, 2], [2]) == 0.0
    with pytest.raises(ValueError, match="b is empty"):
        wasserstein_1([1], [])


def test_ks_statistic_hand_values():
    assert ks_statistic([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)
    assert ks_statistic([1, 2], [3, 4]) == 1.0
    assert ks_statistic([1, 2, 3], [3, 2, 1]) == 0.0
    assert ks_statistic([0.0], [0.0, 1.0]) == pytest.approx(0.5)  # tie at 0: F_a(0) = 1, F_b(0) = 1/2
    g = np.random.default_rng(0)
    a, b = g.normal(size=57), g.normal(0.3, 1.2, size=81)
    assert ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic)


def test_roc_auc_hand_values_and_ties():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)  # 3 of 4 pairs ordered right
    assert roc_auc([1, 2, 2, 3], [0, 1, 0, 1]) == pytest.approx(3.5 / 4)  # the tie 2 vs 2 counts 1/2
    assert roc_auc([0.5, 0.5, 0.5], [1, 0, 0]) == pytest.approx(0.5)
    assert roc_auc([3, 2, 1], [1, 1, 0]) == 1.0 and roc_auc([3, 2, 1], [0, 0, 1]) == 0.0
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_auc([1, 2], [1, 1])
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        roc_auc([1, 2, 3], [1, 0])


def test_efficiency_curve_hand_values():
    values = [0.5, 1.5, 1.5, 2.5, 2.5, 2.5, 9.0, 3.5]  # 9.0 is outside; bin [3, 4) is filled once, [4, 5) empty
    passed = [1, 1, 0, 1, 1, 0, 1, 0]
    eff, err = efficiency_curve(values, np.array(passed, bool), [0, 1, 2, 3, 4, 5])
    np.testing.assert_allclose(eff[:4], [1.0, 0.5, 2 / 3, 0.0])
    np.testing.assert_allclose(err[:4], [0.0, math.sqrt(0.25 / 2), math.sqrt((2 / 9) / 3), 0.0])
    assert math.isnan(eff[4]) and math.isnan(err[4])
    eff, _ = efficiency_curve([0.5, 0.5], [0.2, 0.6], [0, 1])  # probabilities are averaged
    assert eff[0] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="strictly increasing"):
        efficiency_curve([1], [1], [1, 1])


def test_classifier_auc_same_and_separated():
    g = np.random.default_rng(1)
    a, b = g.normal(size=(4000, 2)), g.normal(size=(4000, 2))
    state = torch.get_rng_state()
    auc = classifier_auc(a, b, seed=0, epochs=5)
    assert abs(auc - 0.5) < 0.05
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert auc == classifier_auc(a, b, seed=0, epochs=5)  # seeded
    far = classifier_auc(g.normal(size=(1000, 2)), g.normal(5.0, 1.0, size=(1000, 2)), seed=0, epochs=5)
    assert far > 0.99


def test_classifier_auc_context_tests_the_conditional():
    """Same marginal of x, opposite dependence on the context: only the conditional classifier sees it."""
    g = np.random.default_rng(2)
    ca, cb = g.normal(size=3000), g.normal(size=3000)
    xa, xb = ca + 0.3 * g.normal(size=3000), -cb + 0.3 * g.normal(size=3000)
    assert abs(classifier_auc(xa, xb, seed=0, epochs=5) - 0.5) < 0.05
    assert classifier_auc(xa, xb, ca[:, None], cb[:, None], seed=0, epochs=5) > 0.9
    with pytest.raises(ValueError, match="for both samples or for neither"):
        classifier_auc(xa, xb, ca, None)


def _sample(g, n, shift=0.0, eff_scale=1.0):
    log_pt = np.log(g.uniform(10, 200, n))
    eta = g.uniform(-2.5, 2.5, n)
    matched = g.random(n) < eff_scale / (1 + np.exp(-(np.exp(log_pt) - 30) / 10))
    target = np.stack([g.normal(1.0 + shift, 0.1, n), g.normal(0, 0.02, n)], 1)
    return {"target": np.where(matched[:, None], target, 0.0), "matched": matched, "context": np.stack([log_pt, eta], 1)}


def test_fidelity_report():
    g = np.random.default_rng(3)
    full, full_b = _sample(g, 3000), _sample(g, 3000)
    flash = _sample(g, 3000, shift=0.1, eff_scale=0.8)
    rep = fidelity_report(flash, full, full_b, ["response", "deta"], context_names=["log_pt", "eta"],
                          pt_edges=[10, 30, 60, 200], classifier={"epochs": 5})  # fmt: skip
    json.dumps(rep, allow_nan=False)  # plain, strict JSON
    resp = rep["variables"]["response"]
    assert resp["w1"]["flash_vs_full"] > 5 * resp["w1"]["noise_floor"]  # shifted by 0.1, floor ~ 0.005
    assert resp["w1"]["flash_vs_full"] == pytest.approx(0.1, abs=0.02)
    assert resp["ks"]["flash_vs_full"] > resp["ks"]["noise_floor"]
    deta = rep["variables"]["deta"]
    assert deta["w1"]["flash_vs_full"] < 0.005 and deta["ks"]["flash_vs_full"] < 0.1  # not mismodelled
    assert rep["auc"]["flash_vs_full"] > 0.65 and abs(rep["auc"]["noise_floor"] - 0.5) < 0.06
    assert rep["auc"]["with_context"] is True
    assert rep["n"]["full"] == {"rows": 3000, "matched": int(full["matched"].sum())}
    pt = rep["efficiency"]["pt"]
    assert pt["edges"] == [10, 30, 60, 200]
    eff, err = efficiency_curve(np.exp(full["context"][:, 0]), full["matched"], [10, 30, 60, 200])
    np.testing.assert_allclose(pt["full"]["efficiency"], eff)
    np.testing.assert_allclose(pt["full"]["uncertainty"], err)
    assert pt["flash"]["efficiency"][-1] < pt["full"]["efficiency"][-1] - 0.1  # the flash plateau is lower
    assert len(rep["efficiency"]["eta"]["edges"]) == 11 and set(rep["efficiency"]["eta"]) == {"edges", "flash", "full", "full_b"}
    with pytest.raises(ValueError, match="1 names for targets of 2 columns"):
        fidelity_report(flash, full, full_b, ["response"])
