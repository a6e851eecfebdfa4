"""Tests of the rule-based PF baseline (hepzoo.datasets.pf_baseline)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from hepzoo.datasets import schema
from hepzoo.datasets.pf_baseline import DEFAULT_PF_CONFIG, PFConfig, empty_pf, hadron_energy, run_pf
from hepzoo.datasets.schema import CLU, PF, TRK, ClusterLayer, TargetClass

CFG = DEFAULT_PF_CONFIG
ECAL, HCAL, HF = int(ClusterLayer.ECAL), int(ClusterLayer.HCAL), int(ClusterLayer.HF)


# ---- hand-made events ------------------------------------------------------------------------------------


def _track(pt, eta, phi, charge=1, rel_err=0.01, stations=0, dphi_calo=0.0):
    return dict(
        pt=pt, pt_err=rel_err * pt, eta=eta, phi=phi, p=pt * math.cosh(eta), charge=charge,
        eta_calo=eta, phi_calo=phi + dphi_calo, d0=0.0, z0=0.0, n_hits=12, muon_stations=stations, gen_idx=-1,
    )  # fmt: skip


def _cluster(layer, e, eta, phi, width=None):
    if width is None:
        width = {ECAL: 0.01, HCAL: 0.05, HF: 0.05}[layer]
    return dict(
        layer=layer, e=e, et=e / math.cosh(eta), eta=eta, phi=phi,
        e_ecal=e if layer == ECAL else 0.0, e_hcal=e if layer == HCAL else 0.0,
        sigma_eta=width, sigma_phi=width, n_cells=9, gen_idx=-1,
    )  # fmt: skip


def _event(tracks=(), clusters=()):
    det = {}
    for coll, objs in ((TRK, tracks), (CLU, clusters)):
        for f in coll.fields:
            det[coll.branch(f.name)] = np.array([o[f.name] for o in objs], dtype=f.dtype).reshape(-1)
    return det


def _solve_raw(p, f_ecal, cfg=CFG):
    """EM-scale (E_ecal, E_hcal) with ECAL fraction f_ecal whose hadron-calibrated energy is p."""
    raw = p
    for _ in range(100):
        raw = raw * p / float(hadron_energy(f_ecal * raw, (1 - f_ecal) * raw, cfg))
    return f_ecal * raw, (1 - f_ecal) * raw


def _check_dtypes(out):
    assert set(out) == set(PF.branches)
    n = out["pf_pt"].size
    for name, dt in PF.branches.items():
        assert out[name].dtype == dt, name
        assert out[name].shape == (n,), name


def _cls(out):
    return sorted(int(c) for c in out["pf_cls"])


def test_isolated_charged_hadron_no_neutral():
    p_t = 20.0 * math.cosh(0.3)
    ee, eh = _solve_raw(p_t, 0.3)
    det = _event([_track(20.0, 0.3, 1.0)], [_cluster(ECAL, ee, 0.31, 1.01), _cluster(HCAL, eh, 0.33, 0.98)])
    out = run_pf(det)
    _check_dtypes(out)
    assert _cls(out) == [TargetClass.CHARGED_HADRON]
    assert out["pf_pid"][0] == 211 and out["pf_charge"][0] == 1
    assert out["pf_pt"][0] == pytest.approx(20.0, rel=1e-4)
    assert out["pf_eta"][0] == pytest.approx(0.3, abs=1e-6)
    assert out["pf_phi"][0] == pytest.approx(1.0, abs=1e-6)
    assert out["pf_trk_idx"][0] == 0 and out["pf_clu_idx"][0] == 0  # closest linked cluster: the ECAL one
    # negative charge -> pid -211
    det["trk_charge"][:] = -1
    assert run_pf(det)["pf_pid"][0] == -211


def test_calo_fluctuation_within_resolution_gives_no_neutral():
    p_t = 10.0
    ee, eh = _solve_raw(p_t + 0.5 * CFG.had_res_stoch * math.sqrt(p_t), 0.0)  # +0.5 sigma
    out = run_pf(_event([_track(p_t, 0.0, 0.0)], [_cluster(HCAL, eh, 0.02, 0.01)]))
    assert _cls(out) == [TargetClass.CHARGED_HADRON]


def test_charged_hadron_plus_neutral_hadron_excess():
    p_t = 10.0
    extra = 30.0
    ee, eh = _solve_raw(p_t + extra, 0.0)
    out = run_pf(_event([_track(p_t, 0.0, -2.0)], [_cluster(HCAL, eh, 0.02, -2.02)]))
    _check_dtypes(out)
    assert _cls(out) == [TargetClass.CHARGED_HADRON, TargetClass.NEUTRAL_HADRON]
    ch = out["pf_cls"] == TargetClass.CHARGED_HADRON
    nh = out["pf_cls"] == TargetClass.NEUTRAL_HADRON
    assert out["pf_pt"][ch][0] == pytest.approx(p_t, rel=1e-5)
    assert out["pf_e"][nh][0] == pytest.approx(extra, rel=1e-4)
    assert out["pf_pid"][nh][0] == 130 and out["pf_charge"][nh][0] == 0 and out["pf_trk_idx"][nh][0] == -1
    assert out["pf_pt"][nh][0] == pytest.approx(extra / math.cosh(0.02), rel=1e-4)
    assert out["pf_clu_idx"][nh][0] == 0


def test_excess_goes_to_photon_first_then_neutral_hadron():
    # track 10 GeV, ECAL 5 GeV (EM scale), HCAL such that the calibrated total is 40 GeV
    p_t = 10.0
    e_ecal = 5.0
    lo, hi = 1.0, 200.0
    for _ in range(100):  # bisection for e_hcal
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if hadron_energy(e_ecal, mid) < 40.0 else (lo, mid)
    e_hcal = 0.5 * (lo + hi)
    a_e = float(np.interp(np.log(e_ecal + e_hcal), np.log(CFG.had_calib_e), CFG.had_calib_ecal))
    out = run_pf(_event([_track(p_t, 0.0, 0.0)], [_cluster(ECAL, e_ecal, 0.01, 0.0), _cluster(HCAL, e_hcal, 0, 0)]))
    assert _cls(out) == [TargetClass.CHARGED_HADRON, TargetClass.NEUTRAL_HADRON, TargetClass.PHOTON]
    pho = out["pf_e"][out["pf_cls"] == TargetClass.PHOTON][0]
    nh = out["pf_e"][out["pf_cls"] == TargetClass.NEUTRAL_HADRON][0]
    assert pho == pytest.approx(e_ecal * CFG.ecal_em_scale, rel=1e-5)
    assert nh == pytest.approx(40.0 - p_t - a_e * e_ecal, rel=1e-4)


def test_isolated_photon():
    out = run_pf(_event([], [_cluster(ECAL, 25.0, -1.2, 3.0)]))
    _check_dtypes(out)
    assert _cls(out) == [TargetClass.PHOTON]
    assert out["pf_pid"][0] == 22 and out["pf_charge"][0] == 0
    assert out["pf_e"][0] == pytest.approx(25.0 * CFG.ecal_em_scale, rel=1e-6)
    assert out["pf_pt"][0] == pytest.approx(25.0 * CFG.ecal_em_scale / math.cosh(1.2), rel=1e-5)
    assert out["pf_eta"][0] == pytest.approx(-1.2) and out["pf_clu_idx"][0] == 0 and out["pf_trk_idx"][0] == -1


def test_isolated_neutral_hadron_uses_hadron_calibration():
    ee, eh = 3.0, 17.0
    out = run_pf(_event([], [_cluster(HCAL, eh, 1.0, 0.5), _cluster(ECAL, ee, 1.03, 0.52)]))
    assert _cls(out) == [TargetClass.NEUTRAL_HADRON]
    assert out["pf_e"][0] == pytest.approx(float(hadron_energy(ee, eh)), rel=1e-5)
    assert out["pf_clu_idx"][0] == 0  # the HCAL cluster
    assert 1.0 < out["pf_eta"][0] < 1.03


def test_thresholds_drop_tiny_neutrals():
    out = run_pf(_event([], [_cluster(ECAL, 0.5 * CFG.photon_min_e, 0.0, 0.0)]))
    assert out["pf_pt"].size == 0


def test_muon():
    det = _event([_track(30.0, -0.5, 0.2, charge=-1, stations=3)], [_cluster(ECAL, 0.4, -0.5, 0.2)])
    out = run_pf(det)
    _check_dtypes(out)
    assert _cls(out) == [TargetClass.MUON]  # the MIP deposit is removed; no photon left (0.1 GeV < threshold)
    assert out["pf_pid"][0] == 13  # mu-
    assert out["pf_pt"][0] == pytest.approx(30.0, rel=1e-6)
    # too few stations -> charged hadron
    det["trk_muon_stations"][:] = CFG.muon_min_stations - 1
    assert _cls(run_pf(det)) == [TargetClass.CHARGED_HADRON]


def test_electron():
    p_t = 15.0 * math.cosh(0.8)
    e_ecal = 0.98 * p_t
    det = _event([_track(15.0, 0.8, -1.0, charge=1, rel_err=0.02)], [_cluster(ECAL, e_ecal, 0.8, -0.99)])
    out = run_pf(det)
    _check_dtypes(out)
    assert _cls(out) == [TargetClass.ELECTRON]
    assert out["pf_pid"][0] == -11  # e+
    # energy between the ECAL energy and the track momentum, closer to the more precise one (ECAL here)
    e = out["pf_e"][0]
    assert e_ecal * CFG.ecal_em_scale < e < p_t if CFG.ecal_em_scale * e_ecal < p_t else p_t < e
    assert abs(e - e_ecal * CFG.ecal_em_scale) < abs(e - p_t)
    assert out["pf_pt"][0] == pytest.approx(e / math.cosh(0.8), rel=1e-5)
    # a wide shower or large H/E is not an electron
    wide = _event([_track(15.0, 0.8, -1.0)], [_cluster(ECAL, e_ecal, 0.8, -0.99, width=0.06)])
    assert TargetClass.ELECTRON not in _cls(run_pf(wide))
    hoe = _event(
        [_track(15.0, 0.8, -1.0)], [_cluster(ECAL, e_ecal, 0.8, -0.99), _cluster(HCAL, 0.5 * e_ecal, 0.8, -1.0)]
    )
    assert TargetClass.ELECTRON not in _cls(run_pf(hoe))


def test_empty_event():
    out = run_pf(_event())
    _check_dtypes(out)
    assert out["pf_pt"].size == 0
    _check_dtypes(empty_pf())


def test_hf_clusters():
    em = _cluster(HF, 40.0, 4.0, 0.0)
    em["e_ecal"] = 38.0
    had = _cluster(HF, 60.0, -3.5, 1.0)
    had["e_ecal"], had["e_hcal"] = 20.0, 40.0
    out = run_pf(_event([], [em, had]))
    assert _cls(out) == [TargetClass.NEUTRAL_HADRON, TargetClass.PHOTON]
    assert out["pf_e"][out["pf_cls"] == TargetClass.PHOTON][0] == pytest.approx(40.0 * CFG.hf_em_scale, rel=1e-5)
    assert out["pf_e"][out["pf_cls"] == TargetClass.NEUTRAL_HADRON][0] == pytest.approx(
        60 * np.interp(np.log(60.0), np.log(CFG.had_calib_e), CFG.hf_had_calib), rel=1e-5
    )


def test_energy_bookkeeping():
    cfg = dataclasses.replace(CFG, combine_tracks_calo=False)
    trks = [_track(8.0, 0.0, 0.0), _track(12.0, 1.0, 2.0), _track(5.0, -1.5, -2.5, charge=-1)]
    ee0, eh0 = _solve_raw(trks[0]["p"], 0.4, cfg)  # block 0: compatible, no neutral
    ee1, eh1 = _solve_raw(trks[1]["p"] + 25.0, 0.0, cfg)  # block 1: 25 GeV neutral hadron excess
    clus = [
        _cluster(ECAL, ee0, 0.01, 0.01), _cluster(HCAL, eh0, 0.02, -0.01),
        _cluster(HCAL, eh1, 1.02, 2.02),
        _cluster(ECAL, 7.0, -0.5, 1.0),  # isolated photon
        _cluster(HCAL, 9.0, 2.0, -1.0), _cluster(ECAL, 2.0, 2.02, -0.98),  # isolated neutral hadron
    ]  # fmt: skip
    # the track of block 2 has no calorimeter cluster
    out = run_pf(_event(trks, clus), cfg)
    _check_dtypes(out)
    expected_tracks = sum(math.sqrt(t["p"] ** 2 + 0.13957**2) for t in trks)
    expected_neutral = 25.0 + 7.0 * cfg.ecal_em_scale + float(hadron_energy(2.0, 9.0, cfg))
    assert out["pf_e"].sum() == pytest.approx(expected_tracks + expected_neutral, rel=1e-4)
    assert np.sort(out["pf_trk_idx"][out["pf_trk_idx"] >= 0]).tolist() == [0, 1, 2]
    assert int((out["pf_charge"] != 0).sum()) == 3


def test_track_calo_combination_at_high_momentum():
    # 500 GeV track with a 10% resolution, calorimeter says 440 GeV: the result lies in between
    p_t = 500.0
    ee, eh = _solve_raw(440.0, 0.3)
    out = run_pf(_event([_track(p_t, 0.0, 0.0, rel_err=0.10)], [_cluster(ECAL, ee, 0, 0), _cluster(HCAL, eh, 0, 0)]))
    assert _cls(out) == [TargetClass.CHARGED_HADRON]
    assert 440.0 < out["pf_pt"][0] < 499.0
    off = dataclasses.replace(CFG, combine_tracks_calo=False)
    out = run_pf(_event([_track(p_t, 0.0, 0.0, rel_err=0.10)], [_cluster(ECAL, ee, 0, 0), _cluster(HCAL, eh, 0, 0)]), off)
    assert out["pf_pt"][0] == pytest.approx(p_t)


def _random_event(rng, nt=250, nc=350):
    trks = [
        _track(float(rng.exponential(3.0) + 0.5), float(rng.uniform(-2.5, 2.5)), float(rng.uniform(-np.pi, np.pi)),
               charge=int(rng.choice([-1, 1])), stations=int(rng.random() < 0.02) * 3, dphi_calo=rng.normal(0, 0.05))
        for _ in range(nt)
    ]  # fmt: skip
    clus = [
        _cluster(int(rng.choice([ECAL, HCAL, HF], p=[0.55, 0.35, 0.1])), float(rng.exponential(4.0) + 0.2),
                 float(rng.uniform(-3, 3)), float(rng.uniform(-np.pi, np.pi)), width=float(rng.uniform(0.005, 0.08)))
        for _ in range(nc)
    ]  # fmt: skip
    for c in clus:
        if c["layer"] == HF:
            c["eta"] = float(np.sign(c["eta"]) * rng.uniform(3.0, 5.0))
    return _event(trks, clus)


def test_dense_event_consistency_and_no_truth():
    rng = np.random.default_rng(7)
    det = _random_event(rng)
    out = run_pf(det)
    _check_dtypes(out)
    nt = det["trk_pt"].size
    # every track gives exactly one charged candidate
    assert np.sort(out["pf_trk_idx"][out["pf_trk_idx"] >= 0]).tolist() == list(range(nt))
    assert np.all((out["pf_charge"] != 0) == (out["pf_trk_idx"] >= 0))
    assert np.all(out["pf_phi"] >= -np.pi) and np.all(out["pf_phi"] < np.pi)
    assert np.all(out["pf_e"] > 0) and np.all(out["pf_pt"] > 0)
    assert np.all(out["pf_clu_idx"] < det["clu_e"].size)
    neutral = out["pf_charge"] == 0
    np.testing.assert_allclose(
        out["pf_pt"][neutral], out["pf_e"][neutral] / np.cosh(out["pf_eta"][neutral].astype(np.float64)), rtol=1e-5
    )
    # pid is consistent with the class and charge
    for cls, pdg in schema.CLASS_PDGID.items():
        sel = out["pf_cls"] == cls
        assert np.all(np.abs(out["pf_pid"][sel]) == pdg)
    ch = out["pf_cls"] == TargetClass.CHARGED_HADRON
    assert np.all(out["pf_pid"][ch] == 211 * out["pf_charge"][ch])
    # truth is not used: scrambling or dropping gen_idx changes nothing
    det2 = dict(det)
    det2["trk_gen_idx"] = rng.integers(-1, 100, nt).astype(np.int32)
    det2["clu_gen_idx"] = rng.integers(-1, 100, det["clu_e"].size).astype(np.int32)
    out2 = run_pf(det2)
    del det2["trk_gen_idx"], det2["clu_gen_idx"]
    out3 = run_pf(det2)
    for k in out:
        np.testing.assert_array_equal(out[k], out2[k])
        np.testing.assert_array_equal(out[k], out3[k])


def test_phi_wraps_into_range():
    out = run_pf(_event([_track(5.0, 0.0, math.pi - 1e-9)], [_cluster(ECAL, 3.0, 0.5, -math.pi)]))
    assert np.all(out["pf_phi"] >= -np.pi) and np.all(out["pf_phi"] < np.pi)


def test_missing_branch_names_it():
    det = _event([_track(5.0, 0.0, 0.0)])
    del det["trk_eta_calo"]
    with pytest.raises(KeyError, match="trk_eta_calo"):
        run_pf(det)


def test_config_validation():
    with pytest.raises(ValueError):
        run_pf(_event([_track(5.0, 0.0, 0.0)]), PFConfig(had_calib_e=(1.0, 2.0), had_calib_ecal=(1.0,)))


# ---- single particles through the detector simulation -----------------------------------------------------


def _single(pid, energy, n, seed, eta_max=1.3):
    det_mod = pytest.importorskip("hepzoo.datasets.detector")
    from hepzoo.datasets.pf_baseline import single_particle_gen

    rng = np.random.default_rng(seed)
    for i in range(n):
        eta = float(rng.uniform(-eta_max, eta_max))
        gen = single_particle_gen(pid, energy, eta, float(rng.uniform(-np.pi, np.pi)))
        yield gen, run_pf(det_mod.simulate_event(gen, seed * 100_000 + i))


# bounds measured with these seeds (n=300): fake neutral energy / true energy in events with a reconstructed
# charged hadron was 0.090 (5 GeV), 0.070 (20 GeV), 0.044 (50 GeV); pT median ratio 1.000, RMS 1.3-1.6%
@pytest.mark.parametrize("energy,fake_bound", [(5.0, 0.16), (20.0, 0.10), (50.0, 0.08)])
def test_single_charged_pion(energy, fake_bound):
    n = 300
    n_ch, ratio, fake = [], [], []
    for gen, out in _single(211, energy, n, seed=int(energy)):
        ch = out["pf_cls"] == TargetClass.CHARGED_HADRON
        n_ch.append(int(ch.sum()))
        if ch.sum() == 1:
            ratio.append(out["pf_pt"][ch][0] / gen["gen_pt"][0])
            fake.append(out["pf_e"][out["pf_charge"] == 0].sum() / energy)
    n_ch = np.array(n_ch)
    # tracking efficiency of the simulation is 0.95 for 1 < pT < 100 GeV
    assert abs(n_ch.mean() - 0.95) < 3 * math.sqrt(0.95 * 0.05 / n) + 0.01
    assert np.all(n_ch <= 1)
    assert np.median(ratio) == pytest.approx(1.0, abs=0.01)
    assert np.mean(fake) < fake_bound


@pytest.mark.parametrize("energy", [10.0, 50.0])
def test_single_photon_response(energy):
    n = 200
    resp = []
    n_pho = []
    for gen, out in _single(22, energy, n, seed=100 + int(energy)):
        pho = out["pf_cls"] == TargetClass.PHOTON
        n_pho.append(int(pho.sum()))
        resp.append(out["pf_e"][pho].sum() / energy)
    resp = np.array(resp)
    assert np.mean(np.array(n_pho) == 1) > 0.95
    good = resp > 0.5
    sigma = 0.028 / math.sqrt(energy) + 0.01
    assert np.median(resp[good]) == pytest.approx(1.0, abs=3 * sigma / math.sqrt(good.sum()) + 0.005)


@pytest.mark.parametrize("energy", [10.0, 50.0])
def test_single_k0l_response(energy):
    n = 300
    resp = []
    for gen, out in _single(130, energy, n, seed=200 + int(energy)):
        resp.append(out["pf_e"][out["pf_cls"] == TargetClass.NEUTRAL_HADRON].sum() / energy)
    resp = np.array(resp)
    stat = float(resp.std()) / math.sqrt(n)
    assert np.mean(resp) == pytest.approx(1.0, abs=3 * stat + 0.02)
