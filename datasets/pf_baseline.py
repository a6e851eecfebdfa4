"""Rule-based particle-flow (PF) baseline: the reference our MLPF models must beat.

In the spirit of CMS particle flow (CMS-PRF-14-001, JINST 12 (2017) P10003), reduced to the elements of the
hepzoo schema (tracks with their helix position at the calorimeter, ECAL/HCAL/HF clusters):

1. **Links.** A track is linked to an ECAL (HCAL) cluster when its extrapolated position at the calorimeter
   (``trk_eta_calo``, ``trk_phi_calo``) lies within the cluster's extent,
   ``dR < max(k * width, dR_min(layer))``. Every such link joins the block (so calorimeter energy shared by
   several tracks is compared with all of them); for per-track bookkeeping (electron/muon clusters, the
   candidate's main cluster) each cluster remembers only its *closest* linked track. ECAL clusters
   without a track link are linked to their closest HCAL cluster within ``ecal_hcal_link_dr``. Blocks are the
   connected components of these links (union-find).
2. **Muons**: tracks with ``muon_stations >= muon_min_stations``; a MIP deposit is removed from their clusters.
3. **Electrons**: a track whose linked ECAL energy has E/p compatible with 1, small H/E, and a narrow shower;
   energy = resolution-weighted mean of ECAL energy and track momentum; its clusters are consumed.
4. **Charged hadrons**: all remaining tracks, momentum from the track; when the hadron-calibrated block
   calorimeter energy is compatible with the summed track momenta, the momenta are rescaled to the
   resolution-weighted mean of both (matters only at high p, where the calorimeter is the more precise).
5. **Neutrals**: the block's calibrated calorimeter excess over the summed track momenta, when larger than
   ``neutral_nsigma`` times the expected calorimeter resolution, becomes a photon (ECAL part, first) and a
   neutral hadron (the rest). Blocks without tracks: each HCAL cluster (with the ECAL clusters linked to it)
   becomes a hadron-calibrated neutral hadron; ECAL clusters alone become photons; HF clusters become photons
   when EM-like, neutral hadrons otherwise.

No truth (``*_gen_idx``) information is read. The event loop is a single Numba kernel.

Calibration: cluster energies (``clu_e``) are at the electromagnetic scale. Hadron showers need the
non-compensation (e/h) correction ``E = a_e(E_raw) * E_ecal + a_h(E_raw) * E_hcal`` whose knots live in
:class:`PFConfig` (see :func:`fit_calibration` for how they are obtained).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from hepzoo.datasets.schema import CLASS_PDGID, CLU, PF, TRK, ClusterLayer, TargetClass

__all__ = ["PFConfig", "DEFAULT_PF_CONFIG", "run_pf", "empty_pf", "hadron_energy", "fit_calibration"]

_F32_MINUS_PI = np.nextafter(np.float32(-np.pi), np.float32(0.0))  # smallest float32 >= -pi
_PION_MASS = 0.13957
_MUON_MASS = 0.10566
_ELECTRON_MASS = 0.000511


@dataclass(frozen=True)
class PFConfig:
    """Thresholds, link sizes, resolutions and calibration constants of the PF baseline."""

    # ---- links -----------------------------------------------------------------------------------------
    # track-cluster link: dR(track at calo, cluster) < max(link_k_width * sqrt(sigma_eta^2 + sigma_phi^2),
    # link_dr_min_<layer>). The minima are about 1.5 cells of the calorimeter (ECAL cell 0.0174, HCAL 0.087).
    link_k_width: float = 2.0
    link_dr_min_ecal: float = 0.04
    link_dr_min_hcal: float = 0.15
    # ECAL cluster (without a track) <-> HCAL cluster link radius (about 1.5 HCAL cells).
    ecal_hcal_link_dr: float = 0.15

    # ---- muons -------------------------------------------------------------------------------------------
    muon_min_stations: int = 2  # matched muon-station segments to call a track a muon
    muon_min_p: float = 2.5  # GeV, a muon below this cannot reach the muon stations
    muon_mip_ecal: float = 0.3  # GeV removed from the muon's ECAL cluster(s) (MIP deposit)
    muon_mip_hcal: float = 2.0  # GeV removed from the muon's HCAL cluster(s)

    # ---- electrons ---------------------------------------------------------------------------------------
    ele_min_pt: float = 2.0  # GeV
    ele_ep_min: float = 0.8  # window on E_ecal / p
    ele_ep_max: float = 1.25
    ele_hoe_max: float = 0.10  # H/E of the clusters linked to the track
    ele_max_sigma_eta: float = 0.03  # shower width (energy-weighted RMS in eta) of the main ECAL cluster

    # ---- charged hadrons / neutrals ----------------------------------------------------------------------
    # a neutral excess must exceed neutral_nsigma * sigma_calo(sum p) (expected hadron resolution)
    neutral_nsigma: float = 1.0
    # calorimeter and tracks are combined when |E_calo - sum p| < combine_nsigma * sqrt(sigma_p^2+sigma_c^2)
    combine_nsigma: float = 2.0
    combine_tracks_calo: bool = True
    photon_min_e: float = 0.5  # GeV, smallest photon candidate (excess or isolated ECAL cluster)
    neutral_hadron_min_e: float = 1.0  # GeV, smallest neutral-hadron candidate
    # noise: an HCAL cluster of one tower without a track must exceed this raw (EM-scale) energy to make a
    # neutral hadron. The simulation's HCAL tower noise (0.25 GeV, gathering threshold 0.8 GeV) makes ~3.5
    # one-tower clusters per event with raw E in 0.8-1.6 GeV (99.9% quantile 1.6 GeV, measured).
    hcal_single_tower_min_e: float = 1.7
    hf_min_e: float = 2.0  # GeV, smallest HF candidate
    hf_em_min_frac: float = 0.7  # HF cluster with e_ecal / e >= this is a photon

    # ---- expected resolutions (sigma/E = stoch/sqrt(E) (+) const (+) noise/E) -------------------------------
    # from detector_config: ECAL barrel 2.8%/sqrt(E) (+) 0.7% (+) ~0.12 GeV (cell noise x ~9 cells);
    # hadrons 110%/sqrt(E) (+) 5% (+) ~0.8 GeV (HCAL tower noise 0.25 GeV x ~10 towers).
    ecal_res_stoch: float = 0.028
    ecal_res_const: float = 0.007
    ecal_res_noise: float = 0.12
    had_res_stoch: float = 1.1
    had_res_const: float = 0.05
    had_res_noise: float = 0.8

    # ---- calibration --------------------------------------------------------------------------------------
    # Fitted with fit_calibration() (n_events=1000, seed=12345; single photons and K0L through
    # detector.simulate_event with DEFAULT_CONFIG; ~11 s). Regenerate after any detector response change.
    # EM scale of ECAL clusters (photons/electrons): E_true = ecal_em_scale * clu_e
    ecal_em_scale: float = 1.0004
    # hadron calibration, E = a_e(E_raw) * E_ecal + a_h(E_raw) * E_hcal, with E_raw = E_ecal + E_hcal of the
    # block (EM scale); knots interpolated linearly in log(E_raw), flat outside. a_e = a_h: the simulation has
    # one non-compensated response for the whole shower. Knots below 4 GeV: the response model's inverse.
    had_calib_e: tuple[float, ...] = (
        0.5, 1.0, 2.0, 4.1517, 5.7359, 8.0307, 12.1558, 16.6734, 25.2522, 42.4388, 87.2675, 177.9762, 454.6091,
    )
    had_calib_ecal: tuple[float, ...] = (
        1.4, 1.3698, 1.3159, 1.2043, 1.2204, 1.2452, 1.234, 1.1995, 1.188, 1.1782, 1.1459, 1.1237, 1.0998,
    )
    had_calib_hcal: tuple[float, ...] = had_calib_ecal
    # HF (one layer, EM and hadronic showers indistinguishable by e_ecal in this simulation):
    # EM-like clusters E = hf_em_scale * clu_e; hadron-like E = f_hf(clu_e) * clu_e on the had_calib_e knots
    hf_em_scale: float = 0.9948
    hf_had_calib: tuple[float, ...] = (
        3.5777, 2.9335, 2.4941, 2.1728, 1.7856, 1.6608, 1.7015, 1.6993, 1.6412, 1.5737, 1.5013, 1.4361, 1.3651,
    )
    # provenance of the calibration numbers (free text)
    calib_source: str = "fit_calibration(n_events=1000, seed=12345) on single photons and K0L"

    def params(self) -> np.ndarray:
        """Scalar parameters packed for the Numba kernel (order = the ``_P_*`` indices)."""
        return np.array([float(getattr(self, n)) for n in _PARAM_NAMES], dtype=np.float64)

    def calib_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(log of the energy knots, a_e, a_h, HF hadron factors) for the kernel."""
        x = np.log(np.asarray(self.had_calib_e, dtype=np.float64))
        ae = np.asarray(self.had_calib_ecal, dtype=np.float64)
        ah = np.asarray(self.had_calib_hcal, dtype=np.float64)
        hf = np.asarray(self.hf_had_calib, dtype=np.float64)
        if not (x.shape == ae.shape == ah.shape == hf.shape) or x.size < 1 or np.any(np.diff(x) <= 0):
            raise ValueError("PFConfig: had_calib_*/hf_had_calib must have equal lengths, increasing energies")
        return x, ae, ah, hf


_PARAM_NAMES = (
    "link_k_width",
    "link_dr_min_ecal",
    "link_dr_min_hcal",
    "ecal_hcal_link_dr",
    "muon_min_stations",
    "muon_min_p",
    "muon_mip_ecal",
    "muon_mip_hcal",
    "ele_min_pt",
    "ele_ep_min",
    "ele_ep_max",
    "ele_hoe_max",
    "ele_max_sigma_eta",
    "neutral_nsigma",
    "combine_nsigma",
    "combine_tracks_calo",
    "photon_min_e",
    "neutral_hadron_min_e",
    "hcal_single_tower_min_e",
    "hf_min_e",
    "hf_em_min_frac",
    "ecal_res_stoch",
    "ecal_res_const",
    "ecal_res_noise",
    "had_res_stoch",
    "had_res_const",
    "had_res_noise",
    "ecal_em_scale",
    "hf_em_scale",
)
# indices into PFConfig.params() (module-level ints are compile-time constants for Numba)
(
    _P_LINK_K,
    _P_DRMIN_E,
    _P_DRMIN_H,
    _P_DR_EH,
    _P_MU_NST,
    _P_MU_MINP,
    _P_MU_MIPE,
    _P_MU_MIPH,
    _P_E_MINPT,
    _P_E_EPMIN,
    _P_E_EPMAX,
    _P_E_HOE,
    _P_E_SIGETA,
    _P_NEU_NSIG,
    _P_COMB_NSIG,
    _P_COMB,
    _P_PHO_MINE,
    _P_NH_MINE,
    _P_H1_MINE,
    _P_HF_MINE,
    _P_HF_EMFRAC,
    _P_ER_S,
    _P_ER_C,
    _P_ER_N,
    _P_HR_S,
    _P_HR_C,
    _P_HR_N,
    _P_EM_SCALE,
    _P_HF_EM,
) = range(len(_PARAM_NAMES))

DEFAULT_PF_CONFIG = PFConfig()

_ECAL = int(ClusterLayer.ECAL)
_HCAL = int(ClusterLayer.HCAL)
_HF = int(ClusterLayer.HF)
_CH = int(TargetClass.CHARGED_HADRON)
_NH = int(TargetClass.NEUTRAL_HADRON)
_GAMMA = int(TargetClass.PHOTON)
_ELE = int(TargetClass.ELECTRON)
_MU = int(TargetClass.MUON)


# ---------------------------------------------------------------------------------------------------------
# Numba kernel
# ---------------------------------------------------------------------------------------------------------


@njit(cache=True)
def _dphi(a, b):
    d = a - b
    while d >= math.pi:
        d -= 2.0 * math.pi
    while d < -math.pi:
        d += 2.0 * math.pi
    return d


@njit(cache=True)
def _wrap(phi):
    while phi >= math.pi:
        phi -= 2.0 * math.pi
    while phi < -math.pi:
        phi += 2.0 * math.pi
    return phi


@njit(cache=True)
def _find(parent, i):
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@njit(cache=True)
def _union(parent, a, b):
    ra = _find(parent, a)
    rb = _find(parent, b)
    if ra != rb:
        if ra < rb:
            parent[rb] = ra
        else:
            parent[ra] = rb


@njit(cache=True)
def _calib_factor(x, y, logE):
    n = x.size
    if logE <= x[0]:
        return y[0]
    if logE >= x[n - 1]:
        return y[n - 1]
    for i in range(1, n):
        if logE < x[i]:
            f = (logE - x[i - 1]) / (x[i] - x[i - 1])
            return y[i - 1] + f * (y[i] - y[i - 1])
    return y[n - 1]


@njit(cache=True)
def _quadrature(stochastic, constant, noise, e):
    """Absolute resolution of energy ``e``: sqrt((s*sqrt(E))^2 + (c*E)^2 + n^2)."""
    s = stochastic * math.sqrt(e)
    c = constant * e
    return math.sqrt(s * s + c * c + noise * noise)


@njit(cache=True)
def _sigma_had(par, e):
    return _quadrature(par[_P_HR_S], par[_P_HR_C], par[_P_HR_N], max(e, 0.5))


@njit(cache=True)
def _sigma_ecal(par, e):
    return _quadrature(par[_P_ER_S], par[_P_ER_C], par[_P_ER_N], max(e, 0.1))


@njit(cache=True)
def _layer_centroid(order, i0, i1, nt, clu_layer, layer, rem, clu_eta, clu_phi):
    """(main cluster, eta, phi): the block's remaining energy in one calorimeter layer, energy-weighted.

    ``main`` is the most energetic cluster of that layer in the block (-1 if none has energy left).
    """
    main = -1
    for k in range(i0, i1):
        c = order[k] - nt
        if c < 0 or clu_layer[c] != layer or rem[c] <= 0.0:
            continue
        if main < 0 or rem[c] > rem[main]:
            main = c
    if main < 0:
        return -1, 0.0, 0.0
    sw = 0.0
    seta = 0.0
    sphi = 0.0
    for k in range(i0, i1):
        c = order[k] - nt
        if c < 0 or clu_layer[c] != layer or rem[c] <= 0.0:
            continue
        sw += rem[c]
        seta += rem[c] * clu_eta[c]
        sphi += rem[c] * _dphi(clu_phi[c], clu_phi[main])
    return main, seta / sw, _wrap(clu_phi[main] + sphi / sw)


@njit(cache=True)
def _pf_kernel(
    trk_pt, trk_pt_err, trk_eta, trk_phi, trk_p, trk_q, trk_eta_calo, trk_phi_calo, trk_mu,
    clu_layer, clu_e, clu_eta, clu_phi, clu_e_ecal, clu_sig_eta, clu_sig_phi, clu_ncell,
    par, cx, cae, cah, chf,
):  # fmt: skip
    nt = trk_pt.size
    nc = clu_e.size
    ne = nt + nc

    # ---- 1. links ---------------------------------------------------------------------------------------
    clu_trk = np.full(nc, -1, np.int64)  # closest linked track
    clu_dr = np.full(nc, 1e9)
    ecal_hcal = np.full(nc, -1, np.int64)  # ECAL cluster -> closest HCAL cluster
    parent = np.arange(ne)
    for c in range(nc):
        lay = clu_layer[c]
        if lay != _ECAL and lay != _HCAL:
            continue
        w = math.sqrt(clu_sig_eta[c] ** 2 + clu_sig_phi[c] ** 2)
        rmin = par[_P_DRMIN_E] if lay == _ECAL else par[_P_DRMIN_H]
        r = max(par[_P_LINK_K] * w, rmin)
        for t in range(nt):
            deta = trk_eta_calo[t] - clu_eta[c]
            if abs(deta) >= r:
                continue
            dr = math.sqrt(deta * deta + _dphi(trk_phi_calo[t], clu_phi[c]) ** 2)
            if dr < r:
                # every link joins the block, so energy shared by several tracks is compared with all of them
                _union(parent, nt + c, t)
                if dr < clu_dr[c]:
                    clu_dr[c] = dr
                    clu_trk[c] = t
    rEH = par[_P_DR_EH]
    for c in range(nc):
        if clu_layer[c] != _ECAL or clu_trk[c] >= 0:
            continue
        best = rEH
        for h in range(nc):
            if clu_layer[h] != _HCAL:
                continue
            deta = clu_eta[h] - clu_eta[c]
            if abs(deta) >= best:
                continue
            dr = math.sqrt(deta * deta + _dphi(clu_phi[h], clu_phi[c]) ** 2)
            if dr < best:
                best = dr
                ecal_hcal[c] = h

    for c in range(nc):
        if clu_trk[c] >= 0:
            _union(parent, nt + c, clu_trk[c])
        elif ecal_hcal[c] >= 0:
            _union(parent, nt + c, nt + ecal_hcal[c])
    block = np.empty(ne, np.int64)
    for i in range(ne):
        block[i] = _find(parent, i)
    order = np.argsort(block, kind="mergesort")

    # remaining (EM-scale) energy of each cluster
    rem = np.empty(nc)
    for c in range(nc):
        rem[c] = clu_e[c]

    nmax = nt + 2 * nc + 2
    o_cls = np.zeros(nmax, np.int64)
    o_q = np.zeros(nmax, np.int64)
    o_pt = np.zeros(nmax)
    o_eta = np.zeros(nmax)
    o_phi = np.zeros(nmax)
    o_e = np.zeros(nmax)
    o_trk = np.full(nmax, -1, np.int64)
    o_clu = np.full(nmax, -1, np.int64)
    n = 0

    used = np.zeros(nt, np.bool_)
    scale = np.ones(nt)

    i0 = 0
    while i0 < ne:
        i1 = i0
        b = block[order[i0]]
        while i1 < ne and block[order[i1]] == b:
            i1 += 1
        # elements order[i0:i1] form one block (sorted by index: tracks first, then clusters)

        # ---- HF clusters: standalone ---------------------------------------------------------------------
        if i1 - i0 == 1 and order[i0] >= nt and clu_layer[order[i0] - nt] == _HF:
            c = order[i0] - nt
            emf = clu_e_ecal[c] / clu_e[c] if clu_e[c] > 0 else 0.0
            if emf >= par[_P_HF_EMFRAC]:
                e = clu_e[c] * par[_P_HF_EM]
                cls = _GAMMA
            else:
                e = clu_e[c] * _calib_factor(cx, chf, math.log(max(clu_e[c], 1e-3)))
                cls = _NH
            if e >= par[_P_HF_MINE]:
                o_cls[n] = cls
                o_eta[n] = clu_eta[c]
                o_phi[n] = _wrap(clu_phi[c])
                o_e[n] = e
                o_pt[n] = e / math.cosh(clu_eta[c])
                o_clu[n] = c
                n += 1
            i0 = i1
            continue

        # ---- 2. muons ------------------------------------------------------------------------------------
        ntrk_blk = 0
        for k in range(i0, i1):
            el = order[k]
            if el >= nt:
                continue
            ntrk_blk += 1
            t = el
            if trk_mu[t] >= par[_P_MU_NST] and trk_p[t] >= par[_P_MU_MINP]:
                used[t] = True
                best_c = -1
                for kk in range(i0, i1):
                    c = order[kk] - nt
                    if c < 0 or clu_trk[c] != t:
                        continue
                    mip = par[_P_MU_MIPE] if clu_layer[c] == _ECAL else par[_P_MU_MIPH]
                    rem[c] = max(rem[c] - mip, 0.0)
                    if best_c < 0 or clu_dr[c] < clu_dr[best_c]:
                        best_c = c
                o_cls[n] = _MU
                o_q[n] = trk_q[t]
                o_pt[n] = trk_pt[t]
                o_eta[n] = trk_eta[t]
                o_phi[n] = _wrap(trk_phi[t])
                o_e[n] = math.sqrt(trk_p[t] ** 2 + _MUON_MASS**2)
                o_trk[n] = t
                o_clu[n] = best_c
                n += 1

        # ---- 3. electrons --------------------------------------------------------------------------------
        for k in range(i0, i1):
            t = order[k]
            if t >= nt or used[t] or trk_pt[t] < par[_P_E_MINPT]:
                continue
            ee = 0.0
            eh = 0.0
            main = -1
            for kk in range(i0, i1):
                c = order[kk] - nt
                if c < 0 or clu_trk[c] != t:
                    continue
                if clu_layer[c] == _ECAL:
                    ee += rem[c]
                    if main < 0 or rem[c] > rem[main]:
                        main = c
                else:
                    eh += rem[c]
            if main < 0 or ee <= 0.0:
                continue
            ee *= par[_P_EM_SCALE]
            ep = ee / trk_p[t]
            if ep < par[_P_E_EPMIN] or ep > par[_P_E_EPMAX]:
                continue
            if eh > par[_P_E_HOE] * ee or clu_sig_eta[main] > par[_P_E_SIGETA]:
                continue
            used[t] = True
            sp = trk_p[t] * trk_pt_err[t] / max(trk_pt[t], 1e-6)
            se = _sigma_ecal(par, ee)
            wp = 1.0 / max(sp * sp, 1e-12)
            we = 1.0 / (se * se)
            e = (wp * trk_p[t] + we * ee) / (wp + we)
            for kk in range(i0, i1):
                c = order[kk] - nt
                if c >= 0 and clu_trk[c] == t:
                    rem[c] = 0.0
            o_cls[n] = _ELE
            o_q[n] = trk_q[t]
            o_eta[n] = trk_eta[t]
            o_phi[n] = _wrap(trk_phi[t])
            o_e[n] = e
            o_pt[n] = e / math.cosh(trk_eta[t])
            o_trk[n] = t
            o_clu[n] = main
            n += 1

        # ---- block calorimeter content after muons and electrons -----------------------------------------
        e_ecal = 0.0
        e_hcal = 0.0
        for k in range(i0, i1):
            c = order[k] - nt
            if c < 0:
                continue
            if clu_layer[c] == _ECAL:
                e_ecal += rem[c]
            elif clu_layer[c] == _HCAL:
                e_hcal += rem[c]
        e_raw = e_ecal + e_hcal
        lg = math.log(max(e_raw, 1e-3))
        a_e = _calib_factor(cx, cae, lg)
        a_h = _calib_factor(cx, cah, lg)

        sum_p = 0.0
        var_p = 0.0
        n_ch = 0
        for k in range(i0, i1):
            t = order[k]
            if t >= nt or used[t]:
                continue
            n_ch += 1
            sum_p += trk_p[t]
            sp = trk_p[t] * trk_pt_err[t] / max(trk_pt[t], 1e-6)
            var_p += sp * sp

        if n_ch > 0:
            # ---- 4. charged hadrons, 5. neutral excess ------------------------------------------------
            e_calo = a_e * e_ecal + a_h * e_hcal
            sig_c = _sigma_had(par, sum_p)
            excess = e_calo - sum_p
            fac = 1.0
            if excess > par[_P_NEU_NSIG] * sig_c:
                # photon first (ECAL part, back to the EM scale), neutral hadron from the rest
                e_pho = 0.0
                e_nh = 0.0
                if a_e > 0.0 and excess >= a_e * e_ecal:
                    e_pho = e_ecal * par[_P_EM_SCALE]
                    e_nh = excess - a_e * e_ecal
                elif a_e > 0.0:
                    e_pho = excess / a_e * par[_P_EM_SCALE]
                else:
                    e_nh = excess
                if e_pho >= par[_P_PHO_MINE]:
                    main, eta, phi = _layer_centroid(order, i0, i1, nt, clu_layer, _ECAL, rem, clu_eta, clu_phi)
                    if main >= 0:
                        o_cls[n] = _GAMMA
                        o_eta[n] = eta
                        o_phi[n] = phi
                        o_e[n] = e_pho
                        o_pt[n] = e_pho / math.cosh(eta)
                        o_clu[n] = main
                        n += 1
                if e_nh >= par[_P_NH_MINE]:
                    main, eta, phi = _layer_centroid(order, i0, i1, nt, clu_layer, _HCAL, rem, clu_eta, clu_phi)
                    if main >= 0:
                        o_cls[n] = _NH
                        o_eta[n] = eta
                        o_phi[n] = phi
                        o_e[n] = e_nh
                        o_pt[n] = e_nh / math.cosh(eta)
                        o_clu[n] = main
                        n += 1
            elif par[_P_COMB] > 0.5 and e_raw > 0.0:
                sig_tot = math.sqrt(var_p + sig_c * sig_c)
                if abs(excess) < par[_P_COMB_NSIG] * sig_tot:
                    wp = 1.0 / max(var_p, 1e-12)
                    wc = 1.0 / (sig_c * sig_c)
                    fac = (wp * sum_p + wc * e_calo) / (wp + wc) / sum_p
            for k in range(i0, i1):
                t = order[k]
                if t >= nt or used[t]:
                    continue
                used[t] = True
                scale[t] = fac
                main = -1
                for kk in range(i0, i1):
                    c = order[kk] - nt
                    if c < 0 or clu_trk[c] != t:
                        continue
                    if main < 0 or clu_dr[c] < clu_dr[main]:
                        main = c
                p = trk_p[t] * fac
                o_cls[n] = _CH
                o_q[n] = trk_q[t]
                o_pt[n] = trk_pt[t] * fac
                o_eta[n] = trk_eta[t]
                o_phi[n] = _wrap(trk_phi[t])
                o_e[n] = math.sqrt(p * p + _PION_MASS**2)
                o_trk[n] = t
                o_clu[n] = main
                n += 1
        else:
            # ---- 5'. blocks without (remaining) tracks ----------------------------------------------------
            for k in range(i0, i1):
                c = order[k] - nt
                if c < 0:
                    continue
                if clu_layer[c] == _HCAL:
                    # neutral hadron from the HCAL cluster and the ECAL clusters linked to it
                    ee = 0.0
                    sw = a_h * rem[c]
                    seta = sw * clu_eta[c]
                    sphi = 0.0
                    for kk in range(i0, i1):
                        c2 = order[kk] - nt
                        if c2 < 0 or clu_layer[c2] != _ECAL or ecal_hcal[c2] != c or clu_trk[c2] >= 0:
                            continue
                        ee += rem[c2]
                        w = a_e * rem[c2]
                        sw += w
                        seta += w * clu_eta[c2]
                        sphi += w * _dphi(clu_phi[c2], clu_phi[c])
                    e = a_e * ee + a_h * rem[c]
                    noise = clu_ncell[c] <= 1 and ee <= 0.0 and rem[c] < par[_P_H1_MINE]
                    if e >= par[_P_NH_MINE] and sw > 0.0 and not noise:
                        eta = seta / sw
                        o_cls[n] = _NH
                        o_eta[n] = eta
                        o_phi[n] = _wrap(clu_phi[c] + sphi / sw)
                        o_e[n] = e
                        o_pt[n] = e / math.cosh(eta)
                        o_clu[n] = c
                        n += 1
                elif clu_layer[c] == _ECAL and (ecal_hcal[c] < 0 or clu_trk[c] >= 0):
                    # ECAL cluster on its own (or left over by an electron/muon track): photon
                    e = rem[c] * par[_P_EM_SCALE]
                    if e >= par[_P_PHO_MINE]:
                        o_cls[n] = _GAMMA
                        o_eta[n] = clu_eta[c]
                        o_phi[n] = _wrap(clu_phi[c])
                        o_e[n] = e
                        o_pt[n] = e / math.cosh(clu_eta[c])
                        o_clu[n] = c
                        n += 1
        i0 = i1

    return o_cls[:n], o_q[:n], o_pt[:n], o_eta[:n], o_phi[:n], o_e[:n], o_trk[:n], o_clu[:n]


# ---------------------------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------------------------


def empty_pf() -> dict[str, np.ndarray]:
    """An event without PF candidates: every ``pf_*`` branch, empty, with the schema dtype."""
    return {name: np.zeros(0, dtype=dt) for name, dt in PF.branches.items()}


def _get(det: Mapping[str, np.ndarray], coll, field: str, dtype) -> np.ndarray:
    name = coll.branch(field)
    if name not in det:
        raise KeyError(f"run_pf: input branch {name!r} is missing")
    return np.ascontiguousarray(np.asarray(det[name]), dtype=dtype)


def run_pf(det: Mapping[str, np.ndarray], config: PFConfig = DEFAULT_PF_CONFIG) -> dict[str, np.ndarray]:
    """Run the rule-based PF on one event.

    ``det`` holds the event's ``trk_*`` and ``clu_*`` branches as flat arrays (``*_gen_idx`` are ignored).
    Returns every ``pf_*`` branch of :data:`hepzoo.datasets.schema.PF` as flat arrays with the schema dtypes.
    """
    f8, i8 = np.float64, np.int64
    trk = [
        _get(det, TRK, f, f8) for f in ("pt", "pt_err", "eta", "phi", "p", "charge", "eta_calo", "phi_calo",
                                         "muon_stations")
    ]  # fmt: skip
    clu = [_get(det, CLU, "layer", i8)] + [
        _get(det, CLU, f, f8) for f in ("e", "eta", "phi", "e_ecal", "sigma_eta", "sigma_phi")
    ] + [_get(det, CLU, "n_cells", i8)]
    nt, nc = trk[0].size, clu[0].size
    if any(a.size != nt for a in trk) or any(a.size != nc for a in clu):
        raise ValueError("run_pf: trk_* (or clu_*) branches of one event have different lengths")
    trk[5] = trk[5].astype(i8)
    trk[8] = trk[8].astype(i8)
    if nt + nc == 0:
        return empty_pf()
    cx, cae, cah, chf = config.calib_arrays()
    cls, q, pt, eta, phi, e, ti, ci = _pf_kernel(*trk, *clu, config.params(), cx, cae, cah, chf)
    pdg_abs = np.zeros(8, np.int64)
    for k, v in CLASS_PDGID.items():
        pdg_abs[int(k)] = v
    pid = pdg_abs[cls]
    sign = np.ones_like(cls)
    lep = (cls == _ELE) | (cls == _MU)
    sign[lep] = -q[lep]
    sign[cls == _CH] = q[cls == _CH]
    pid = pid * sign
    # phi in [-pi, pi) also after rounding to float32
    phi32 = phi.astype(np.float32)
    phi32[phi32.astype(np.float64) >= np.pi] = _F32_MINUS_PI
    phi32[phi32.astype(np.float64) < -np.pi] = _F32_MINUS_PI
    phi = phi32
    dt = PF.branches
    out = {
        "pf_pid": pid,
        "pf_cls": cls,
        "pf_charge": q,
        "pf_pt": pt,
        "pf_eta": eta,
        "pf_phi": phi,
        "pf_e": e,
        "pf_trk_idx": ti,
        "pf_clu_idx": ci,
    }
    return {name: np.ascontiguousarray(out[name], dtype=dt[name]) for name in dt}


def hadron_energy(e_ecal, e_hcal, config: PFConfig = DEFAULT_PF_CONFIG) -> np.ndarray:
    """Hadron-calibrated energy ``a_e(E_raw) * e_ecal + a_h(E_raw) * e_hcal`` (EM-scale inputs, vectorised)."""
    e_ecal = np.asarray(e_ecal, dtype=np.float64)
    e_hcal = np.asarray(e_hcal, dtype=np.float64)
    x, ae, ah, _ = config.calib_arrays()
    lg = np.log(np.maximum(e_ecal + e_hcal, 1e-3))
    return np.interp(lg, x, ae) * e_ecal + np.interp(lg, x, ah) * e_hcal


def single_particle_gen(pid: int, energy: float, eta: float, phi: float) -> dict[str, np.ndarray]:
    """Flat ``gen_*`` arrays of one particle from the origin (for single-particle calibration and tests)."""
    masses = {22: 0.0, 11: 0.000511, 13: 0.10566, 211: 0.13957, 130: 0.497611, 2112: 0.939565, 321: 0.493677}
    m = masses.get(abs(pid), 0.0)
    charge = 0 if abs(pid) in (22, 130, 2112) else (1 if pid > 0 else -1)
    if abs(pid) in (11, 13):
        charge = -charge
    p = math.sqrt(max(energy * energy - m * m, 0.0))
    pt = p / math.cosh(eta)
    f4 = np.float32
    return {
        "gen_pid": np.array([pid], np.int32), "gen_charge": np.array([charge], np.int32),
        "gen_pt": np.array([pt], f4), "gen_eta": np.array([eta], f4), "gen_phi": np.array([phi], f4),
        "gen_e": np.array([energy], f4), "gen_m": np.array([m], f4),
        "gen_vx": np.zeros(1, f4), "gen_vy": np.zeros(1, f4), "gen_vz": np.zeros(1, f4),
        "gen_is_pu": np.zeros(1, np.bool_),
    }  # fmt: skip


def _raw_energy_near(det, eta, phi, layers, dr_max):
    lay = np.asarray(det["clu_layer"])
    d_eta = np.asarray(det["clu_eta"], np.float64) - eta
    d_phi = (np.asarray(det["clu_phi"], np.float64) - phi + np.pi) % (2 * np.pi) - np.pi
    sel = np.isin(lay, layers) & (d_eta**2 + d_phi**2 < dr_max**2)
    return float(np.asarray(det["clu_e"], np.float64)[sel].sum()), float(np.asarray(det["clu_e_ecal"])[sel].sum())


def fit_calibration(
    n_events: int = 1000,
    energies: tuple[float, ...] = (5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 200.0, 500.0),
    seed: int = 12345,
    det_config=None,
) -> dict[str, object]:
    """Fit the PF calibration constants on single-particle samples of the detector simulation.

    Uses truth, which is legitimate here: this is the calibration procedure, not the reconstruction.
    - EM scale: single photons, |eta| < 1.3: mean true energy / mean summed ECAL cluster energy in dR < 0.15.
    - hadrons: single K0L, |eta| < 2.5, at each true energy E: raw = mean summed ECAL+HCAL cluster energy in
      dR < 0.4 (events with some energy); knot (raw, E / raw). a_e = a_h: the simulation has one response for the whole shower.
    - HF: single K0L (E >= 10 GeV) and photons at 3.2 < |eta| < 4.8 likewise.
    - below the lowest fitted energy the clustering thresholds bias any fit (only up-fluctuations survive),
      so knots at raw 0.5, 1, 2 GeV come from the simulation's response model
      (``DetectorConfig.calibrate_hadron``), the same for HF.
    Returns PFConfig field values: ``dataclasses.replace(DEFAULT_PF_CONFIG, **fit_calibration())``.
    """
    from hepzoo.datasets.detector import simulate_event
    from hepzoo.datasets.detector_config import DEFAULT_CONFIG

    det_config = DEFAULT_CONFIG if det_config is None else det_config
    rng = np.random.default_rng(seed)
    ev_seed = [int(seed) * 1000003]

    def sample(pid, energy, eta_lo, eta_hi, layers, dr):
        raws = np.empty(n_events)
        for i in range(n_events):
            eta = rng.uniform(eta_lo, eta_hi) * rng.choice([-1.0, 1.0])
            phi = rng.uniform(-np.pi, np.pi)
            ev_seed[0] += 1
            det = simulate_event(single_particle_gen(pid, energy, eta, phi), ev_seed[0], det_config)
            raws[i] = _raw_energy_near(det, eta, phi, layers, dr)[0]
        return raws[raws > 0.0]  # a particle below the clustering thresholds makes no candidate anyway

    em = [e / sample(22, e, 0.0, 1.3, (_ECAL,), 0.15).mean() for e in (5.0, 20.0, 100.0)]
    had_raw, had_fac, hf_raw, hf_fac = [], [], [], []
    for e in energies:
        r = sample(130, e, 0.0, 2.5, (_ECAL, _HCAL), 0.4).mean()
        had_raw.append(r)
        had_fac.append(e / max(r, 1e-6))
        if e >= 10.0:
            r = sample(130, e, 3.2, 4.8, (_HF,), 0.4).mean()
            hf_raw.append(r)
            hf_fac.append(e / max(r, 1e-6))
    hf_em = [e / sample(22, e, 3.2, 4.8, (_HF,), 0.4).mean() for e in (20.0, 100.0)]
    low = [x for x in (0.5, 1.0, 2.0) if x < min(had_raw)]
    had_raw = low + had_raw
    had_fac = [det_config.calibrate_hadron(x) / x for x in low] + had_fac
    low = [x for x in (0.5, 1.0, 2.0, 3.0, 5.0) if x < min(hf_raw)]
    hf_raw = low + hf_raw
    hf_fac = [det_config.calibrate_hadron(x, hf=True) / x for x in low] + hf_fac
    # knots must increase: keep the hadron knots on the ECAL+HCAL raw energies; map the HF factors onto them
    order = np.argsort(had_raw)
    knots = np.asarray(had_raw)[order]
    keep = np.concatenate([[True], np.diff(knots) > 0])
    knots = knots[keep]
    fac = np.asarray(had_fac)[order][keep]
    hf_o = np.argsort(hf_raw)
    hf_on_knots = np.interp(np.log(knots), np.log(np.asarray(hf_raw)[hf_o]), np.asarray(hf_fac)[hf_o])
    r4 = lambda a: tuple(round(float(x), 4) for x in a)  # noqa: E731
    return {
        "ecal_em_scale": round(float(np.mean(em)), 4),
        "had_calib_e": r4(knots),
        "had_calib_ecal": r4(fac),
        "had_calib_hcal": r4(fac),
        "hf_em_scale": round(float(np.mean(hf_em)), 4),
        "hf_had_calib": r4(hf_on_knots),
        "calib_source": f"fit_calibration(n_events={n_events}, seed={seed}) on single photons and K0L",
    }
