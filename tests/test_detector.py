"""Tests of the parametrised detector simulation and of the topological clustering kernel."""

from __future__ import annotations

import dataclasses
import math
from collections import deque

import numpy as np
import pytest

from hepzoo.datasets import schema
from hepzoo.datasets.clustering import cluster_moments, topo_cluster
from hepzoo.datasets.detector import simulate_chunk, simulate_event
from hepzoo.datasets.detector_config import DEFAULT_CONFIG, DetectorConfig

C = DEFAULT_CONFIG
MASS = {11: 0.000511, 13: 0.10566, 22: 0.0, 211: 0.13957, 130: 0.49761, 2212: 0.93827, 12: 0.0}
CHARGE = {11: -1, -11: 1, 13: -1, -13: 1, 211: 1, -211: -1, 2212: 1, 22: 0, 130: 0, 12: 0}


def _gen(pid, pt, eta, phi, vx=None, vy=None, vz=None) -> dict[str, np.ndarray]:
    pid = np.atleast_1d(np.asarray(pid, dtype=np.int32))
    n = pid.shape[0]
    pt = np.broadcast_to(np.asarray(pt, dtype=np.float64), (n,))
    eta = np.broadcast_to(np.asarray(eta, dtype=np.float64), (n,))
    phi = np.broadcast_to(np.asarray(phi, dtype=np.float64), (n,))
    m = np.array([MASS[abs(int(p))] for p in pid])
    zero = np.zeros(n)
    return {
        "gen_pid": pid,
        "gen_charge": np.array([CHARGE[int(p)] for p in pid], dtype=np.int32),
        "gen_pt": pt.astype(np.float32),
        "gen_eta": eta.astype(np.float32),
        "gen_phi": phi.astype(np.float32),
        "gen_e": np.sqrt((pt * np.cosh(eta)) ** 2 + m**2).astype(np.float32),
        "gen_m": m.astype(np.float32),
        "gen_vx": (zero if vx is None else np.broadcast_to(vx, (n,))).astype(np.float32),
        "gen_vy": (zero if vy is None else np.broadcast_to(vy, (n,))).astype(np.float32),
        "gen_vz": (zero if vz is None else np.broadcast_to(vz, (n,))).astype(np.float32),
        "gen_is_pu": np.zeros(n, dtype=bool),
    }


def _busy_event(n: int = 900, seed: int = 3) -> dict[str, np.ndarray]:
    """A ttbar-like mixture of particles over the full acceptance (and beyond), vertices spread in z."""
    rng = np.random.default_rng(seed)
    pid = rng.choice([211, -211, 22, 22, 130, 11, -13, 2212, 12], size=n)
    eta = rng.uniform(-5.5, 5.5, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    phi[:4] = [-np.pi, np.pi, 3.14159, -3.14159]
    eta[4:8] = [3.0, -3.0, 5.0, 2.5]
    g = _gen(pid, rng.exponential(3.0, n) + 0.05, eta, phi,
             vx=rng.normal(0, 0.01, n), vy=rng.normal(0, 0.01, n), vz=rng.normal(0, 40.0, n))
    return g


def _single(pid, e, n_events, rng, eta_range=(-1.0, 1.0)):
    """n_events single-particle events of fixed energy in the barrel."""
    out = []
    for _ in range(n_events):
        eta = rng.uniform(*eta_range)
        m = MASS[abs(pid)]
        pt = math.sqrt(e * e - m * m) / math.cosh(eta)
        out.append(_gen([pid], pt, eta, rng.uniform(-np.pi, np.pi)))
    return out


def _cluster_sums(gens, seed0, config=C):
    """Per event: signal-matched cluster energy sum and the noise variance of the summed cells."""
    e_sum, noise_var = [], []
    for k, g in enumerate(gens):
        o = simulate_event(g, seed0 + k, config)
        sel = o["clu_gen_idx"] == 0
        e_sum.append(float(o["clu_e"][sel].sum()))
        var = 0.0
        for layer, noise in ((1, config.ecal_noise_barrel), (2, config.hcal_noise)):
            var += noise**2 * o["clu_n_cells"][sel & (o["clu_layer"] == layer)].sum()
        noise_var.append(var)
    return np.array(e_sum), np.array(noise_var)


# ---- calorimeter resolution ----------------------------------------------------------------------------
@pytest.mark.parametrize("pid", [11, 22])
@pytest.mark.parametrize("energy", [10.0, 30.0, 100.0])
def test_em_resolution_matches_config(pid, energy):
    n = 300
    rng = np.random.default_rng(int(energy) + pid)
    e_meas, nvar = _cluster_sums(_single(pid, energy, n, rng), seed0=1000 * pid + int(energy))
    mean, std = e_meas.mean(), e_meas.std(ddof=1)
    expected = math.sqrt((C.em_resolution(energy) * energy) ** 2 + nvar.mean())
    # response 1 at the EM scale (a few per mille lost in cells below the gathering threshold)
    assert abs(mean / energy - 1.0) < 0.01 + 4 * expected / energy / math.sqrt(n)
    tol = 4.0 * expected / math.sqrt(2 * (n - 1))
    assert abs(std - expected) < tol, (std, expected, tol)


def test_em_resolution_barrel_and_endcap_elementwise():
    e, eta = np.array([10.0, 10.0, 40.0]), np.array([0.3, -2.0, 1.6])
    got = C.em_resolution(e, eta)
    a = np.array([C.ecal_a_barrel, C.ecal_a_endcap, C.ecal_a_endcap])
    c = np.array([C.ecal_c_barrel, C.ecal_c_endcap, C.ecal_c_endcap])
    np.testing.assert_allclose(got, np.sqrt(a**2 / e + c**2))
    assert got[1] > got[0]  # the endcap is coarser at equal energy


@pytest.mark.parametrize("energy", [20.0, 50.0])
def test_pion_resolution_and_response(energy):
    n = 300
    rng = np.random.default_rng(7 + int(energy))
    e_meas, nvar = _cluster_sums(_single(211, energy, n, rng), seed0=50_000 + int(energy))
    resp = C.hadron_response(energy)
    mean, std = e_meas.mean(), e_meas.std(ddof=1)
    # mean: the non-compensated response R(E) of the config
    assert 0.97 < mean / (resp * energy) < 1.03, mean / (resp * energy)
    expected = math.sqrt((C.had_resolution(energy) * resp * energy) ** 2 + nvar.mean())
    tol = 4.0 * expected / math.sqrt(2 * (n - 1))
    assert abs(std - expected) < tol, (std, expected, tol)
    # calibration inverts the response
    assert C.calibrate_hadron(resp * energy) == pytest.approx(energy, rel=1e-6)


# ---- helix propagation ------------------------------------------------------------------------------
@pytest.mark.parametrize("pt", [1.5, 5.0, 40.0])
@pytest.mark.parametrize("pid", [211, -211])
def test_helix_barrel_matches_analytic(pt, pid):
    eta, phi = 0.4, 3.0  # near the phi wrap for the positive charge bending downwards... and upwards
    g = _gen([pid] * 50, pt, eta, phi)
    o = simulate_event(g, 11)
    q = CHARGE[pid]
    k = 0.299792458 * C.b_field / (1000.0 * pt)  # 1/mm
    dphi = -q * math.asin(k * C.r_calo / 2.0)
    s = 2.0 / k * math.asin(k * C.r_calo / 2.0)
    eta_calo = math.asinh(s * math.sinh(eta) / C.r_calo)
    assert o["trk_pt"].size > 30
    got_dphi = (o["trk_phi_calo"] - o["trk_phi"] + np.pi) % (2 * np.pi) - np.pi
    np.testing.assert_allclose(got_dphi, dphi, atol=2e-5)
    np.testing.assert_allclose(o["trk_eta_calo"] - o["trk_eta"], eta_calo - eta, atol=2e-5)


def test_helix_endcap_and_neutral():
    pt, eta = 3.0, 2.2
    g = _gen([211, -211, 22], pt, eta, 0.0)
    o = simulate_event(g, 5, dataclasses.replace(C, trk_eff_hadron=((1.0,) * 3, (1.0,) * 3)))
    k = 0.299792458 * C.b_field / (1000.0 * pt)
    s = C.z_calo / math.sinh(eta)
    r = 2.0 / k * abs(math.sin(k * s / 2.0))
    for row, q in enumerate((1, -1)):
        assert o["trk_gen_idx"][row] == row
        dphi = o["trk_phi_calo"][row] - o["trk_phi"][row]
        assert dphi == pytest.approx(-q * k * s / 2.0, abs=2e-5)
        deta = o["trk_eta_calo"][row] - o["trk_eta"][row]
        assert deta == pytest.approx(math.asinh(C.z_calo / r) - eta, abs=2e-5)
    photon = o["clu_gen_idx"] == 2
    assert photon.sum() == 1
    assert o["clu_eta"][photon][0] == pytest.approx(eta, abs=0.01)
    assert o["clu_phi"][photon][0] == pytest.approx(0.0, abs=0.01)


def test_cluster_position_follows_helix():
    g = _gen([11], 20.0, 0.2, np.pi - 0.01)  # an electron bends towards +phi and across the wrap
    o = simulate_event(g, 3)
    k = 0.299792458 * C.b_field / (1000.0 * 20.0)
    phi_exp = (np.pi - 0.01 + math.asin(k * C.r_calo / 2.0) + np.pi) % (2 * np.pi) - np.pi
    sel = (o["clu_gen_idx"] == 0) & (o["clu_layer"] == schema.ClusterLayer.ECAL)
    main = np.argmax(np.where(sel, o["clu_e"], -1.0))
    assert abs((o["clu_phi"][main] - phi_exp + np.pi) % (2 * np.pi) - np.pi) < 0.01
    assert o["clu_phi"][main] < 0  # wrapped into [-pi, pi)


def test_loopers_leave_no_calo_deposit():
    # pT = 0.3 GeV: 2R = 0.53 m < 1.29 m; at eta 0 and 0.5 they never reach the barrel or the endcap
    cfg = dataclasses.replace(C, trk_eff_hadron=((1.0,) * 3, (1.0,) * 3))
    g = _gen([211, -211, 211], 0.3, [0.0, 0.5, -0.3], [0.1, 1.0, -2.0])
    o = simulate_event(g, 9, cfg)
    assert not np.isin([0, 1, 2], o["contrib_gen"]).any()
    assert not np.isin([0, 1, 2], o["clu_gen_idx"]).any()
    assert o["trk_pt"].size == 3  # still tracked
    # a 1 GeV pion does reach the calorimeter
    o2 = simulate_event(_gen([211], 1.0, 0.0, 0.1), 9, cfg)
    assert 0 in o2["contrib_gen"]


# ---- tracking -------------------------------------------------------------------------------------------
def test_muon_gun_efficiency_and_resolution():
    n = 4000
    rng = np.random.default_rng(2)
    pt = 20.0
    g = _gen(np.where(rng.random(n) < 0.5, 13, -13), pt, rng.uniform(-0.45, 0.45, n), rng.uniform(-3, 3, n))
    o = simulate_event(g, 21)
    eff = C.tracking_efficiency(pt, 0.0, "muon")
    assert abs(o["trk_pt"].size / n - eff) < 4 * math.sqrt(eff * (1 - eff) / n)
    rel = (o["trk_pt"] - pt) / pt
    exp_res = float(C.track_pt_resolution(pt, 0.0, muon=True))
    m = rel.size
    assert abs(rel.std() - exp_res) < 4 * exp_res / math.sqrt(2 * m)
    assert abs(rel.mean()) < 4 * exp_res / math.sqrt(m)
    np.testing.assert_allclose(o["trk_pt_err"] / o["trk_pt"], exp_res, rtol=1e-5)
    q = np.asarray(g["gen_charge"])[o["trk_gen_idx"]]
    np.testing.assert_array_equal(o["trk_charge"], q)
    # 20 GeV muons reach all 4 stations with the per-station efficiency
    assert o["trk_muon_stations"].mean() == pytest.approx(4 * C.muon_station_eff, abs=0.03)
    assert 10 <= np.median(o["trk_n_hits"]) <= 18
    assert np.abs(o["trk_d0"]).std() < 0.1  # vertex at the origin: smearing only


def test_pion_efficiency_low_pt_and_forward():
    n = 4000
    rng = np.random.default_rng(4)
    g = _gen([211] * n, 0.5, rng.uniform(-1.4, 1.4, n), rng.uniform(-3, 3, n))
    o = simulate_event(g, 1)
    eff = C.tracking_efficiency(0.5, 0.0, "hadron")
    assert abs(o["trk_pt"].size / n - eff) < 4 * math.sqrt(eff * (1 - eff) / n)
    g = _gen([211] * 100, 5.0, rng.uniform(2.6, 3.5, 100), 0.0)
    assert simulate_event(g, 1)["trk_pt"].size == 0


# ---- clustering ---------------------------------------------------------------------------------------
def _reference_clusters(ieta, iphi, e, n_eta, n_phi, seed_thr, gather_thr):
    """Pure-Python reference: one BFS per seed, cell -> (steps, seed rank) minimum."""
    cells = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(ieta, iphi))}

    def neighbours(a, b):
        for da in (-1, 0, 1):
            for db in (-1, 0, 1):
                if (da or db) and 0 <= a + da < n_eta:
                    j = cells.get((a + da, (b + db) % n_phi))
                    if j is not None:
                        yield j

    cid = [int(a) * n_phi + int(b) for a, b in zip(ieta, iphi)]
    seeds = []
    for i in range(len(e)):
        if e[i] > seed_thr[ieta[i]] and all(
            e[i] > e[j] or (e[i] == e[j] and cid[i] < cid[j]) for j in neighbours(ieta[i], iphi[i])
        ):
            seeds.append(i)
    seeds.sort(key=lambda i: (-e[i], cid[i]))
    best = {}
    for rank, s in enumerate(seeds):
        dist = {s: 0}
        todo = deque([s])
        while todo:
            i = todo.popleft()
            for j in neighbours(ieta[i], iphi[i]):
                if j not in dist and e[j] > gather_thr[ieta[j]]:
                    dist[j] = dist[i] + 1
                    todo.append(j)
        for j, d in dist.items():
            if j not in best or (d, rank) < best[j]:
                best[j] = (d, rank)
    label = np.full(len(e), -1)
    for j, (_, rank) in best.items():
        label[j] = rank
    return label, np.array(seeds)


def _cells_from_dense(grid):
    ieta, iphi = np.nonzero(grid)
    return ieta.astype(np.int64), iphi.astype(np.int64), grid[ieta, iphi].astype(np.float64)


def test_clustering_two_showers_and_phi_wrap():
    n_eta, n_phi = 10, 20
    thr_s, thr_g = np.full(n_eta, 1.0), np.full(n_eta, 0.2)
    grid = np.zeros((n_eta, n_phi))
    grid[2:5, 3:6] = [[0.3, 0.5, 0.3], [0.5, 5.0, 0.6], [0.3, 0.4, 0.3]]
    grid[6:9, 12:15] = [[0.3, 0.5, 0.3], [0.5, 3.0, 0.6], [0.1, 0.4, 0.3]]  # 0.1 below gathering
    ieta, iphi, e = _cells_from_dense(grid)
    label, seeds = topo_cluster(ieta, iphi, e, n_eta, n_phi, thr_s, thr_g)
    assert seeds.size == 2
    assert (label >= 0).sum() == 17
    assert e[label == 0].sum() == pytest.approx(grid[2:5, 3:6].sum())
    # a shower across phi = +-pi is one cluster with phi at the boundary
    grid = np.zeros((n_eta, n_phi))
    grid[4:7, n_phi - 1] = [0.5, 2.0, 0.5]
    grid[4:7, 0] = [0.5, 2.1, 0.5]
    ieta, iphi, e = _cells_from_dense(grid)
    label, seeds = topo_cluster(ieta, iphi, e, n_eta, n_phi, thr_s, thr_g)
    assert seeds.size == 1 and (label == 0).all()
    c_phi = -np.pi + (iphi + 0.5) * 2 * np.pi / n_phi
    c_eta = ieta * 0.1
    ce, ceta, cphi, s_eta, s_phi, ncell = cluster_moments(label, seeds, e, c_eta, c_phi)
    exp_phi = np.pi + (3.1 - 3.0) / 6.1 * (np.pi / n_phi)  # columns at pi -+ dphi/2: just above +pi
    assert cphi[0] == pytest.approx((exp_phi + np.pi) % (2 * np.pi) - np.pi, abs=1e-9)
    assert ncell[0] == 6 and ce[0] == pytest.approx(6.1)
    assert s_phi[0] == pytest.approx(np.pi / n_phi, rel=0.01)  # two columns, almost equal weight


def test_clustering_matches_reference_on_random_maps():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n_eta, n_phi = 12, 16
        occ = rng.random((n_eta, n_phi)) < rng.uniform(0.2, 0.7)
        grid = np.where(occ, rng.exponential(1.0, (n_eta, n_phi)), 0.0)
        ieta, iphi, e = _cells_from_dense(grid)
        perm = rng.permutation(e.size)  # cell order must not matter
        ieta, iphi, e = ieta[perm], iphi[perm], e[perm]
        thr_s = np.full(n_eta, 1.2)
        thr_g = np.where(np.arange(n_eta) < 6, 0.3, 0.5)
        label, seeds = topo_cluster(ieta, iphi, e, n_eta, n_phi, thr_s, thr_g)
        ref_label, ref_seeds = _reference_clusters(ieta, iphi, e, n_eta, n_phi, thr_s, thr_g)
        np.testing.assert_array_equal(seeds, ref_seeds)
        np.testing.assert_array_equal(label, ref_label)
        # moments against NumPy
        c_eta, c_phi = ieta * 0.1, -np.pi + (iphi + 0.5) * 2 * np.pi / n_phi
        ce, ceta, cphi, _, _, ncell = cluster_moments(label, seeds, e, c_eta, c_phi)
        for k in range(seeds.size):
            m = label == k
            d = (c_phi[m] - c_phi[seeds[k]] + np.pi) % (2 * np.pi) - np.pi
            assert ce[k] == pytest.approx(e[m].sum())
            assert ceta[k] == pytest.approx(np.average(c_eta[m], weights=e[m]))
            ph = (c_phi[seeds[k]] + np.average(d, weights=e[m]) + np.pi) % (2 * np.pi) - np.pi
            assert cphi[k] == pytest.approx(ph, abs=1e-12)
            assert ncell[k] == m.sum()


# ---- truth, schema, determinism ---------------------------------------------------------------------
def test_output_schema_and_truth_links():
    g = _busy_event()
    o = simulate_event(g, 42)
    for name, dt in {**schema.TRK.branches, **schema.CLU.branches}.items():
        assert o[name].dtype == dt, name
    assert len({o[n].size for n in schema.TRK.branches}) == 1
    assert len({o[n].size for n in schema.CLU.branches}) == 1
    assert o["clu_e"].size > 50 and o["trk_pt"].size > 50
    assert (np.asarray(g["gen_charge"])[o["trk_gen_idx"]] != 0).all()
    assert (np.abs(np.asarray(g["gen_eta"])[o["trk_gen_idx"]]) <= C.tracker_eta_max).all()
    # truth points at visible particles with |eta| < 5, and at layers that can see them
    pid = np.abs(np.asarray(g["gen_pid"]))
    assert not np.isin(pid[o["contrib_gen"]], list(schema.INVISIBLE_PDGIDS)).any()
    assert (o["contrib_e"] > 0).all()
    assert (np.abs(o["clu_eta"]) < 5.0).all() and (np.abs(o["clu_phi"]) <= np.pi).all()
    hf = o["clu_layer"] == schema.ClusterLayer.HF
    assert (np.abs(o["clu_eta"][hf]) > 2.9).all() and (np.abs(o["clu_eta"][~hf]) < 3.0).all()
    # gen_idx = the largest contributor
    for c in range(o["clu_e"].size):
        m = o["contrib_clu"] == c
        if m.any():
            assert o["clu_gen_idx"][c] == o["contrib_gen"][m][np.argmax(o["contrib_e"][m])]
        else:
            assert o["clu_gen_idx"][c] == -1
    # summed truth = cluster energy minus its noise, which is bounded by the summed cell noise
    sums = np.bincount(o["contrib_clu"], weights=o["contrib_e"], minlength=o["clu_e"].size)
    sigma = np.where(o["clu_layer"] == 1, C.ecal_noise_endcap, C.hcal_noise) * np.sqrt(o["clu_n_cells"])
    assert (np.abs(o["clu_e"] - sums) < 6 * sigma).all()


def test_truth_sums_exact_without_noise():
    cfg = dataclasses.replace(C, ecal_noise_barrel=0.0, ecal_noise_endcap=0.0, hcal_noise=0.0, hf_noise=0.0)
    o = simulate_event(_busy_event(seed=8), 5, cfg)
    sums = np.bincount(o["contrib_clu"], weights=o["contrib_e"], minlength=o["clu_e"].size)
    np.testing.assert_allclose(sums, o["clu_e"], rtol=1e-5, atol=1e-5)
    assert (o["clu_gen_idx"] >= 0).all()  # no noise-only clusters


def test_determinism_and_seed_dependence():
    g = _busy_event(seed=5)
    a, b, c = simulate_event(g, 7), simulate_event(g, 7), simulate_event(g, 8)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["clu_e"], c["clu_e"]) or a["clu_e"].size != c["clu_e"].size
    chunk = simulate_chunk([g, g], [7, 8])
    np.testing.assert_array_equal(chunk[0]["trk_pt"], a["trk_pt"])
    np.testing.assert_array_equal(chunk[1]["trk_pt"], c["trk_pt"])


def test_edges_and_empty_inputs():
    # invisible, beyond |eta| 5, exactly on the grid edges, phi = +-pi: nothing crashes, nothing leaks
    g = _gen([12, 22, 22, 22, 22, 130], 10.0, [0.0, 5.2, 3.0, -3.0, 4.999, 2.9999], [0.0, 1.0, np.pi, -np.pi, 0.0, 3.1415])
    o = simulate_event(g, 1)
    assert not np.isin([0, 1], o["contrib_gen"]).any()
    assert np.isin([2, 3, 4, 5], o["contrib_gen"]).all()
    empty = simulate_event({k: v[:0] for k, v in g.items()}, 1)
    for name, dt in {**schema.TRK.branches, **schema.CLU.branches}.items():
        assert empty[name].dtype == dt
    assert empty["trk_pt"].size == 0 and empty["contrib_e"].size == 0
    assert (empty["clu_gen_idx"] == -1).all()  # noise-only clusters, if any
    assert isinstance(DetectorConfig(), DetectorConfig)
