"""Jet matching and response summaries against hand-computed values."""

import awkward as ak
import numpy as np
import pytest

from hepzoo.validation.jets import binned_response, jet_response, match_jets, summarize_response


def _jets(rows):
    return ak.Array([[{"pt": pt, "eta": eta, "phi": phi} for pt, eta, phi in event] for event in rows])


def test_matching_handles_phi_wrap_and_radius():
    gen = _jets([[(50.0, 0.0, 3.1), (30.0, 1.0, 0.0)], [], [(25.0, 0.0, 0.0)]])
    reco = _jets([[(45.0, 0.02, -3.13), (33.0, 1.5, 0.0)], [(10.0, 0.0, 0.0)], []])
    assert match_jets(gen, reco).tolist() == [[0, -1], [], [-1]]
    gen_pt, ratio, eff = jet_response(gen, reco)
    np.testing.assert_allclose(gen_pt, [50.0])
    np.testing.assert_allclose(ratio, [0.9])
    assert eff == pytest.approx(1 / 3)


def test_response_summary_values():
    s = summarize_response(np.array([0.8, 0.9, 1.0, 1.1, 1.2]))
    assert s.median == pytest.approx(1.0)
    assert s.iqr_over_median == pytest.approx(0.2)  # q75 - q25 = 1.1 - 0.9
    assert np.isnan(summarize_response(np.array([])).median)
    rows = binned_response(np.array([25.0, 35.0, 45.0]), np.array([1.0, 0.5, 0.7]), np.array([20.0, 40.0, 60.0]))
    assert [r["n"] for r in rows] == [2, 1]
    assert rows[0]["median"] == pytest.approx(0.75)
