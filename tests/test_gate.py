"""Validation metrics against hand-computed values on tiny inputs; the gate rule; the thresholds of the zoo cards."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
from scipy import stats

from hepzoo.datasets.schema import TargetClass
from hepzoo.validation.fidelity import classifier_test, ks_statistic, roc_auc, wasserstein_1
from hepzoo.validation.gate import Threshold, Thresholds, check, derive_thresholds, format_checks, quantities
from hepzoo.validation.jets import summarize_response
from hepzoo.validation.met import gen_missing_et, met_response, missing_et
from hepzoo.validation.particles import binned_rates, class_flags, efficiency_and_fake_rate, particle_response
from hepzoo.validation.uncertainty import (
    auc_uncertainty,
    binomial_uncertainty,
    bootstrap_w1,
    median_iqr_uncertainty,
    weighted_w1,
)

CH = int(TargetClass.CHARGED_HADRON)
PH = int(TargetClass.PHOTON)


def _particles(events: list[list[tuple]]) -> ak.Array:
    """Jagged records cls, pt, eta, phi, e from per-event lists of (cls, pt, eta, phi, e)."""
    return ak.Array([[dict(zip(("cls", "pt", "eta", "phi", "e"), p)) for p in ev] for ev in events])


# ---- particles: efficiency, fake rate, response -------------------------------------------------------------

TRUTH = _particles([
    [(CH, 10.0, 0.0, 0.0, 10.0), (CH, 4.0, 1.0, 1.0, 6.0), (PH, 3.0, -1.0, 2.0, 5.0)],
    [(CH, 2.0, 0.5, -3.1, 2.2), (CH, 0.5, 0.0, 0.0, 0.5)],  # the 0.5 GeV particle is below MIN_PT
])  # fmt: skip
RECO = _particles([
    # matches the 10 GeV CH (dR 0.02) with pT 11; a CH near the photon only (wrong class): fake; photon at dR 0.05
    [(CH, 11.0, 0.02, 0.0, 11.0), (CH, 5.0, -1.0, 2.0, 5.0), (PH, 3.3, -1.0, 2.05, 5.5)],
    # matches the 2 GeV CH across the phi wrap (dphi = 0.0832 - 2 pi ... = 0.04): found, pT 1.5
    [(CH, 1.5, 0.5, 3.1432, 1.6)],
])  # fmt: skip


def test_efficiency_fake_rate_and_response_hand_values():
    rates = efficiency_and_fake_rate(TRUTH, RECO)
    # charged hadrons above 1 GeV: 10, 4, 2 GeV truth; found 10 and 2 (phi wrap) -> 2/3; candidates 11, 5, 1.5: 5 is fake
    assert rates["CHARGED_HADRON"]["efficiency"] == pytest.approx(2 / 3)
    assert rates["CHARGED_HADRON"]["fake_rate"] == pytest.approx(1 / 3)
    assert rates["PHOTON"]["efficiency"] == 1.0 and rates["PHOTON"]["fake_rate"] == 0.0
    assert math.isnan(rates["MUON"]["efficiency"])

    flags = class_flags(TRUTH, RECO, TargetClass.CHARGED_HADRON)
    np.testing.assert_array_equal(flags["found"], [True, False, True])
    np.testing.assert_array_equal(flags["real"], [True, False, True])
    binned = binned_rates(flags, "pt", np.array([1.0, 5.0, 20.0]))
    # truth in [1, 5): 4 (lost), 2 (found) -> 1/2; [5, 20): 10 (found) -> 1. Candidates [1, 5): 1.5 real; [5, 20): 11 real, 5 fake
    assert binned["efficiency"] == pytest.approx([0.5, 1.0])
    assert binned["fake_rate"] == pytest.approx([0.0, 0.5])
    assert binned["efficiency_unc"][0] == pytest.approx(binomial_uncertainty(1, 2))

    resp = particle_response(TRUTH, RECO, TargetClass.CHARGED_HADRON)
    np.testing.assert_allclose(np.sort(resp["pt_ratio"]), [0.75, 1.1], rtol=1e-6)
    np.testing.assert_allclose(np.sort(resp["e_ratio"]), [1.6 / 2.2, 1.1], rtol=1e-6)


def test_median_iqr_hand_values_and_bootstrap():
    s = summarize_response(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert s.median == 3.0 and s.iqr_over_median == pytest.approx((4.0 - 2.0) / 3.0)
    assert median_iqr_uncertainty(np.full(10, 2.0)) == (0.0, 0.0)  # every resample is the same
    assert all(math.isnan(x) for x in median_iqr_uncertainty(np.array([1.0])))
    x = np.random.default_rng(3).normal(1.0, 0.2, size=4000)
    median_unc, _ = median_iqr_uncertainty(x, seed=1)
    # asymptotic standard error of a Gaussian median: sqrt(pi / 2) sigma / sqrt(n)
    assert median_unc == pytest.approx(math.sqrt(math.pi / 2) * 0.2 / math.sqrt(4000), rel=0.2)
    assert median_iqr_uncertainty(x, seed=1) == median_iqr_uncertainty(x, seed=1)  # seeded


def test_binomial_and_auc_uncertainty_hand_values():
    assert binomial_uncertainty(3, 4) == pytest.approx(math.sqrt(0.7 * 0.3 / 5))  # p~ = 3.5 / 5
    assert binomial_uncertainty(0, 10) > 0 and binomial_uncertainty(10, 10) > 0  # never 0 at the edges
    assert math.isnan(binomial_uncertainty(0, 0))
    # at AUC 0.5 Hanley-McNeil is the exact null variance (n1 + n2 + 1) / (12 n1 n2)
    assert auc_uncertainty(0.5, 30, 50) == pytest.approx(math.sqrt(81 / (12 * 30 * 50)))
    q1, q2 = 0.8 / 1.2, 2 * 0.64 / 1.8
    assert auc_uncertainty(0.8, 10, 20) == pytest.approx(math.sqrt((0.16 + 9 * (q1 - 0.64) + 19 * (q2 - 0.64)) / 200))


def test_met_hand_values():
    pt = ak.Array([[10.0, 10.0], [], [3.0]])
    phi = ak.Array([[0.0, np.pi / 2], [], [1.0]])
    np.testing.assert_allclose(missing_et(pt, phi), [10 * math.sqrt(2), 0.0, 3.0])
    events = ak.Array([
        {"gen": [{"pid": 12, "pt": 30.0, "phi": 0.0}, {"pid": -14, "pt": 40.0, "phi": np.pi / 2}, {"pid": 211, "pt": 99.0, "phi": 1.0}]},
        {"gen": [{"pid": 211, "pt": 5.0, "phi": 0.0}]},
    ])  # fmt: skip
    np.testing.assert_allclose(gen_missing_et(events), [50.0, 0.0])  # 3-4-5 triangle; no neutrino: 0
    gen, ratio = met_response(np.array([45.0, 7.0]), gen_missing_et(events))
    np.testing.assert_allclose(gen, [50.0]) and np.testing.assert_allclose(ratio, [0.9])  # event 2 below 20 GeV


def test_w1_ks_auc_hand_values_and_weighted_bootstrap():
    assert wasserstein_1([0, 1, 3], [5, 6, 8]) == pytest.approx(5.0)
    assert ks_statistic([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    g = np.random.default_rng(0)
    u, v = g.normal(size=30), g.normal(0.5, 2.0, size=45)
    wu, wv = g.integers(0, 4, (3, 30)).astype(float), g.integers(1, 4, (3, 45)).astype(float)
    expected = [stats.wasserstein_distance(u, v, wu[i], wv[i]) for i in range(3)]
    np.testing.assert_allclose(weighted_w1(u, v, wu, wv), expected, rtol=1e-12)
    # integer weights = a resample: weights (2, 0, 1) on [0, 1, 3] are the sample [0, 0, 3]
    assert weighted_w1(np.array([0.0, 1, 3]), np.array([5.0]), np.array([[2.0, 0, 1]]), np.array([[1.0]]))[0] == pytest.approx(4.0)
    reps = bootstrap_w1([u, v, u], [(0, 1), (0, 1), (2, 1)], n_boot=50, seed=4)
    assert reps.shape == (50, 3) and np.array_equal(reps[:, 0], reps[:, 1])  # one resample per sample and replica
    assert not np.allclose(reps[:, 0], reps[:, 2])  # a second sample (even of the same values) is resampled on its own
    assert np.std(reps[:, 0], ddof=1) == pytest.approx(np.std(reps[:, 2], ddof=1), rel=0.4)
    assert np.array_equal(reps, bootstrap_w1([u, v, u], [(0, 1), (0, 1), (2, 1)], n_boot=50, seed=4))


def test_classifier_split_by_event_removes_context_leakage():
    """A flash sample is conditioned on the full sample's context rows: with a row-wise split the classifier meets,
    in the test part, full rows whose context it learnt as 'flash' in training (AUC well below 0.5); splitting
    both samples by event keeps each pair on one side and gives 0.5 within the uncertainty."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: one thread is fastest
    g = np.random.default_rng(5)
    event = np.repeat(np.arange(300), 8)
    context = g.normal(size=(len(event), 3))  # one generator object per row, shared by flash and full
    full = context[:, :1] + 0.3 * g.normal(size=(len(event), 1))
    flash = context[:, :1] + 0.3 * g.normal(size=(len(event), 1))  # the same conditional distribution
    try:
        rows = classifier_test(flash, full, context, context, seed=0, epochs=20, batch_size=512)
        by_event = classifier_test(flash, full, context, context, seed=0, epochs=20, batch_size=512, groups_a=event, groups_b=event)
    finally:
        torch.set_num_threads(threads)
    assert abs(by_event["auc"] - 0.5) < 3 * by_event["auc_unc"]
    assert rows["auc"] < 0.5 - 3 * rows["auc_unc"]
    assert by_event["n_test_a"] == by_event["n_test_b"] == 8 * 150  # half of the events, all their rows
    with pytest.raises(ValueError, match="groups for both"):
        classifier_test(flash, full, groups_a=event)


# ---- gate -----------------------------------------------------------------------------------------------------


def _flash_metrics(ratio: float, ratio_unc: float, excess: float, excess_unc: float, n: int = 1000, diff: float = 0.0) -> dict:
    return {
        "family": "flashsim",
        "flashsim": {
            "n": {"flash": {"rows": n, "matched": n}, "full": {"rows": n, "matched": n}, "full_b": {"rows": n, "matched": n}},
            "auc": {"excess": excess, "excess_unc": excess_unc},
            "variables": {"pt": {"w1": {"ratio": ratio, "ratio_unc": ratio_unc}}},
            "efficiency_inclusive": {"difference": diff, "difference_unc": 0.01},
        },
    }  # fmt: skip


def test_gate_rule_hand_values():
    k = 3.5
    th = Thresholds(n_sigma=k, min_n=20, measured_on={}, metrics={
        "eff": Threshold(reference=0.8, uncertainty=0.01, n=1000, better="higher"),
    })  # fmt: skip
    from hepzoo.validation import gate

    limit = 0.8 - k * math.hypot(0.01, 0.01)  # 0.7505
    q = gate.Quantity(0.751, 0.01, 500, "higher")
    assert gate._check_one("eff", th.metrics["eff"], q, k, 20).status == "pass"
    assert gate._check_one("eff", th.metrics["eff"], gate.Quantity(0.75, 0.01, 500, "higher"), k, 20).limit == pytest.approx(limit)
    assert gate._check_one("eff", th.metrics["eff"], gate.Quantity(0.75, 0.01, 500, "higher"), k, 20).status == "fail"
    # the same shortfall passes on a smaller sample: its larger uncertainty widens the margin
    assert gate._check_one("eff", th.metrics["eff"], gate.Quantity(0.75, 0.03, 50, "higher"), k, 20).status == "pass"
    assert gate._check_one("eff", th.metrics["eff"], gate.Quantity(0.2, 0.03, 10, "higher"), k, 20).status == "skipped"
    assert gate._check_one("eff", th.metrics["eff"], gate.Quantity(float("nan"), 0.03, 50, "higher"), k, 20).status == "fail"

    closer = Threshold(reference=0.97, uncertainty=0.004, n=1000, better="closer", target=1.0)
    # |m - 1| <= 0.03 + 3.5 * hypot(0.004, 0.003) = 0.0475
    assert gate._check_one("r", closer, gate.Quantity(1.045, 0.003, 100, "closer", 1.0), k, 20).status == "pass"
    assert gate._check_one("r", closer, gate.Quantity(0.95, 0.003, 100, "closer", 1.0), k, 20).status == "fail"


def test_gate_floor_and_derive_round_trip():
    release = _flash_metrics(ratio=1.6, ratio_unc=0.1, excess=-0.01, excess_unc=0.01, n=5000)
    th = derive_thresholds(release, {"files": {}})
    assert set(th.metrics) == {"auc.excess", "variables.pt.w1_ratio", "efficiency.difference"}
    assert all(c.status == "pass" for c in check(release, th))  # a release passes its own thresholds
    # small sample: W1 ratio 2.5 +- 0.6 is within 1.6 + 3.5 hypot(0.1, 0.6) = 3.73; AUC excess below max(-0.01, 0) + margin
    small = _flash_metrics(ratio=2.5, ratio_unc=0.6, excess=0.05, excess_unc=0.03, n=300)
    assert [c.status for c in check(small, th)] == ["pass", "pass", "pass"]
    bad = _flash_metrics(ratio=9.0, ratio_unc=1.0, excess=0.3, excess_unc=0.03, n=300, diff=0.2)
    checks = check(bad, th)
    assert [c.status for c in checks] == ["fail", "fail", "fail"]
    # a ratio below the floor at release (flash closer to full than the floor) is held to the floor, 1
    low = derive_thresholds(_flash_metrics(ratio=0.7, ratio_unc=0.05, excess=0.0, excess_unc=0.01), {})
    c = check(_flash_metrics(ratio=1.1, ratio_unc=0.05, excess=0.0, excess_unc=0.01), low)
    assert c[1].limit == pytest.approx(1.0 + 3.5 * math.hypot(0.05, 0.05)) and c[1].status == "pass"
    text = format_checks(checks, only_failed=True)
    assert "variables.pt.w1_ratio" in text and "measured 9 ± 1" in text and "threshold <= " in text


@pytest.mark.parametrize("release", ["mlpf-gnnlsh", "mlpf-transformer", "flashsim-jet", "flashsim-track"])
def test_zoo_cards_carry_valid_thresholds(release):
    from hepzoo.export.card import load_card
    from hepzoo.export.zoo import find_release

    card = load_card(find_release(release).path)  # also verifies model.onnx's sha256
    th = Thresholds.from_card(card)
    assert th.n_sigma > 0 and th.measured_on["n_events"] >= 500
    names = set(th.metrics)
    if card.family == "mlpf":
        assert {"particles.CHARGED_HADRON.efficiency", "jets.response.median", "met.response.iqr_over_median"} <= names
    else:
        assert "auc.excess" in names and any(n.endswith("w1_ratio") for n in names)
    assert all(t.uncertainty >= 0 and math.isfinite(t.reference) for t in th.metrics.values())


def test_quantities_reject_unknown_family():
    with pytest.raises(ValueError, match="family"):
        quantities({"family": "gan"})
