"""Element-aligned MLPF targets on hand-made events (no generator needed)."""

import numpy as np
import pytest

from hepzoo.datasets.schema import TargetClass
from hepzoo.datasets.targets import build_targets


def _gen(rows):
    """rows: (pid, charge, pt, eta, phi)"""
    pid, charge, pt, eta, phi = (np.array(c) for c in zip(*rows))
    e = pt * np.cosh(eta)
    n = len(rows)
    return {
        "gen_pid": pid.astype(np.int32),
        "gen_charge": charge.astype(np.int32),
        "gen_pt": pt.astype(np.float32),
        "gen_eta": eta.astype(np.float32),
        "gen_phi": phi.astype(np.float32),
        "gen_e": e.astype(np.float32),
        "gen_is_pu": np.zeros(n, bool),
    }


def _det(trk_gen, trk_pos, clu_pos, contrib):
    """trk_gen: gen index per track; *_pos: (eta, phi) per element; contrib: (gen, clu, e) triplets."""
    trk_pos = np.array(trk_pos, dtype=np.float32).reshape(-1, 2)
    clu_pos = np.array(clu_pos, dtype=np.float32).reshape(-1, 2)
    contrib = np.array(contrib, dtype=np.float64).reshape(-1, 3)
    return {
        "trk_pt": np.ones(len(trk_gen), np.float32),
        "trk_gen_idx": np.array(trk_gen, dtype=np.int32),
        "trk_eta_calo": trk_pos[:, 0],
        "trk_phi_calo": trk_pos[:, 1],
        "clu_e": np.ones(len(clu_pos), np.float32),
        "clu_eta": clu_pos[:, 0],
        "clu_phi": clu_pos[:, 1],
        "contrib_gen": contrib[:, 0].astype(np.int32),
        "contrib_clu": contrib[:, 1].astype(np.int32),
        "contrib_e": contrib[:, 2].astype(np.float32),
    }


def test_track_first_then_best_cluster_then_merge():
    gen = _gen(
        [
            (211, 1, 10.0, 0.0, 0.0),  # 0: track 0 (also leaves energy in cluster 0)
            (22, 0, 5.0, 1.0, 1.0),  # 1: best cluster is 1 (more energy there than in 0)
            (130, 0, 3.0, -1.0, 2.0),  # 2: only in cluster 2
            (22, 0, 0.2, 1.05, 1.02),  # 3: below every threshold -> merged into the nearest assigned slot (clu 1)
            (12, 0, 50.0, 0.0, 0.0),  # 4: neutrino, invisible
            (211, 1, 2.0, 5.5, 0.0),  # 5: beyond |eta| 5, invisible
        ]
    )
    det = _det(
        trk_gen=[0],
        trk_pos=[(0.0, 0.05)],
        clu_pos=[(0.0, 0.0), (1.0, 1.0), (-1.0, 2.0)],
        contrib=[(0, 0, 8.0), (1, 0, 1.0), (1, 1, 4.0), (2, 2, 2.5)],
    )
    out = build_targets(gen, det)
    np.testing.assert_array_equal(out["gen_elem_idx"], [0, 2, 3, 2, -1, -1])
    np.testing.assert_array_equal(
        out["tgt_cls"], [TargetClass.CHARGED_HADRON, TargetClass.NONE, TargetClass.PHOTON, TargetClass.NEUTRAL_HADRON]
    )
    np.testing.assert_array_equal(out["tgt_charge"], [1, 0, 0, 0])
    # slot 2 holds photons 1 and 3: energies add
    assert out["tgt_e"][2] == pytest.approx(gen["gen_e"][1] + gen["gen_e"][3], rel=1e-6)
    assert out["tgt_pt"][0] == pytest.approx(10.0, rel=1e-6)
    assert out["tgt_e"][1] == 0.0
    visible_e = gen["gen_e"][:4].sum()
    assert out["tgt_e"].sum() == pytest.approx(visible_e, rel=1e-6)
    phi = np.arctan2(out["tgt_sin_phi"][3], out["tgt_cos_phi"][3])
    assert phi == pytest.approx(2.0, abs=1e-6)
    assert out["tgt_cls"].dtype == np.int32 and out["tgt_pt"].dtype == np.float32


def test_charged_particles_without_track_are_relabelled():
    gen = _gen([(211, 1, 10.0, 2.8, 0.0), (11, -1, 20.0, 2.9, 1.0), (13, 1, 30.0, 2.7, -1.0)])
    det = _det([], [], [(2.8, 0.0), (2.9, 1.0), (2.7, -1.0)], [(0, 0, 7.0), (1, 1, 19.0), (2, 2, 2.0)])
    out = build_targets(gen, det)
    np.testing.assert_array_equal(
        out["tgt_cls"], [TargetClass.NEUTRAL_HADRON, TargetClass.PHOTON, TargetClass.NEUTRAL_HADRON]
    )
    np.testing.assert_array_equal(out["tgt_charge"], [0, 0, 0])


def test_leading_particle_sets_the_class_of_a_shared_cluster():
    gen = _gen([(22, 0, 3.0, 0.0, 0.0), (130, 0, 9.0, 0.01, 0.0)])
    det = _det([], [], [(0.0, 0.0)], [(0, 0, 3.0), (1, 0, 6.0)])
    out = build_targets(gen, det)
    assert out["tgt_cls"][0] == TargetClass.NEUTRAL_HADRON
    np.testing.assert_array_equal(out["gen_elem_idx"], [0, 0])


def test_event_without_any_element():
    gen = _gen([(22, 0, 0.1, 0.0, 0.0)])
    out = build_targets(gen, _det([], [], [], []))
    assert len(out["tgt_cls"]) == 0
    np.testing.assert_array_equal(out["gen_elem_idx"], [-1])


def test_only_sub_threshold_particles_still_conserve_energy():
    """No particle passed a threshold, but elements exist (e.g. noise clusters): leftovers fill them."""
    gen = _gen([(22, 0, 0.3, 0.0, 0.0), (130, 0, 0.5, 1.0, 1.0)])
    det = _det([], [], [(0.1, 0.1), (1.0, 1.1)], [])
    out = build_targets(gen, det)
    np.testing.assert_array_equal(out["gen_elem_idx"], [0, 1])
    np.testing.assert_array_equal(out["tgt_cls"], [TargetClass.PHOTON, TargetClass.NEUTRAL_HADRON])
    assert out["tgt_e"].sum() == pytest.approx(gen["gen_e"].sum(), rel=1e-6)


def test_merge_uses_periodic_phi():
    gen = _gen([(22, 0, 5.0, 0.0, -3.1), (130, 0, 5.0, 0.0, 2.5), (22, 0, 0.1, 0.0, 3.1)])
    det = _det([], [], [(0.0, -3.1), (0.0, 2.5)], [(0, 0, 5.0), (1, 1, 5.0)])
    out = build_targets(gen, det)
    np.testing.assert_array_equal(out["gen_elem_idx"], [0, 1, 0])  # 3.1 is 0.08 from -3.1, 0.6 from 2.5
