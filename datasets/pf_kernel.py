"""PF baseline, steps 2-5: the candidates of each block (muons, electrons, charged hadrons, neutrals).

``pf_candidates`` walks the blocks of ``pf_links.link_blocks`` (see pf_baseline for the rules) and returns
the candidates as a :class:`Candidates` tuple. Its scalar parameters come in one vector with the fields
:class:`PFParam` (``PFConfig.params()``), the calibration knots as arrays (``PFConfig.calib_arrays()``).
"""

from __future__ import annotations

import enum
import math
from typing import NamedTuple

import numpy as np
from numba import njit

from .kernel_fields import Fields
from .schema import ClusterLayer, TargetClass

__all__ = ["PFParam", "Candidates", "pf_candidates"]

_PION_MASS = 0.13957
_MUON_MASS = 0.10566

_ECAL = int(ClusterLayer.ECAL)
_HCAL = int(ClusterLayer.HCAL)
_HF = int(ClusterLayer.HF)
_CH = int(TargetClass.CHARGED_HADRON)
_NH = int(TargetClass.NEUTRAL_HADRON)
_GAMMA = int(TargetClass.PHOTON)
_ELE = int(TargetClass.ELECTRON)
_MU = int(TargetClass.MUON)


class PFParam(Fields):
    """Scalar parameters of the candidate kernel: the PFConfig fields of these names (as float)."""

    MUON_MIN_STATIONS = enum.auto()
    MUON_MIN_P = enum.auto()
    MUON_MIP_ECAL = enum.auto()
    MUON_MIP_HCAL = enum.auto()
    ELE_MIN_PT = enum.auto()
    ELE_EP_MIN = enum.auto()
    ELE_EP_MAX = enum.auto()
    ELE_HOE_MAX = enum.auto()
    ELE_MAX_SIGMA_ETA = enum.auto()
    NEUTRAL_NSIGMA = enum.auto()
    COMBINE_NSIGMA = enum.auto()
    COMBINE_TRACKS_CALO = enum.auto()
    PHOTON_MIN_E = enum.auto()
    NEUTRAL_HADRON_MIN_E = enum.auto()
    HCAL_SINGLE_TOWER_MIN_E = enum.auto()
    HF_MIN_E = enum.auto()
    HF_EM_MIN_FRAC = enum.auto()
    ECAL_RES_STOCH = enum.auto()
    ECAL_RES_CONST = enum.auto()
    ECAL_RES_NOISE = enum.auto()
    HAD_RES_STOCH = enum.auto()
    HAD_RES_CONST = enum.auto()
    HAD_RES_NOISE = enum.auto()
    ECAL_EM_SCALE = enum.auto()
    HF_EM_SCALE = enum.auto()


_P = PFParam  # short name in the kernel


class Candidates(NamedTuple):
    """PF candidates of one event (int64 / float64)."""

    cls: np.ndarray  # TargetClass
    charge: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    e: np.ndarray
    trk_idx: np.ndarray  # track of the candidate (-1: none)
    clu_idx: np.ndarray  # its main cluster (-1: none)


@njit(cache=True)
def _dphi(a, b):
    """a - b wrapped into [-pi, pi) (the same in pf_links: kernels call only functions of their own file,
    Numba's cache being per file)."""
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
    return _quadrature(par[_P.HAD_RES_STOCH], par[_P.HAD_RES_CONST], par[_P.HAD_RES_NOISE], max(e, 0.5))


@njit(cache=True)
def _sigma_ecal(par, e):
    return _quadrature(par[_P.ECAL_RES_STOCH], par[_P.ECAL_RES_CONST], par[_P.ECAL_RES_NOISE], max(e, 0.1))


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
def pf_candidates(
    trk_pt, trk_pt_err, trk_eta, trk_phi, trk_p, trk_charge, trk_eta_calo, trk_phi_calo, trk_muon_stations,
    clu_layer, clu_e, clu_eta, clu_phi, clu_e_ecal, clu_sigma_eta, clu_sigma_phi, clu_n_cells,
    clu_trk, clu_dr, ecal_hcal, block, order,
    par, cx, cae, cah, chf,
):  # fmt: skip
    """Candidates of one event from its ``trk_*``/``clu_*`` branches and its links (``pf_links.Links``).

    ``par``: PFParam vector; ``cx``: log of the calibration energy knots; ``cae``, ``cah``: hadron
    calibration factors of the ECAL and HCAL energy; ``chf``: HF hadron factors (``PFConfig.calib_arrays``).
    """
    nt = trk_pt.size
    nc = clu_e.size
    ne = nt + nc

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
            if emf >= par[_P.HF_EM_MIN_FRAC]:
                e = clu_e[c] * par[_P.HF_EM_SCALE]
                cls = _GAMMA
            else:
                e = clu_e[c] * _calib_factor(cx, chf, math.log(max(clu_e[c], 1e-3)))
                cls = _NH
            if e >= par[_P.HF_MIN_E]:
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
            if trk_muon_stations[t] >= par[_P.MUON_MIN_STATIONS] and trk_p[t] >= par[_P.MUON_MIN_P]:
                used[t] = True
                best_c = -1
                for kk in range(i0, i1):
                    c = order[kk] - nt
                    if c < 0 or clu_trk[c] != t:
                        continue
                    mip = par[_P.MUON_MIP_ECAL] if clu_layer[c] == _ECAL else par[_P.MUON_MIP_HCAL]
                    rem[c] = max(rem[c] - mip, 0.0)
                    if best_c < 0 or clu_dr[c] < clu_dr[best_c]:
                        best_c = c
                o_cls[n] = _MU
                o_q[n] = trk_charge[t]
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
            if t >= nt or used[t] or trk_pt[t] < par[_P.ELE_MIN_PT]:
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
            ee *= par[_P.ECAL_EM_SCALE]
            ep = ee / trk_p[t]
            if ep < par[_P.ELE_EP_MIN] or ep > par[_P.ELE_EP_MAX]:
                continue
            if eh > par[_P.ELE_HOE_MAX] * ee or clu_sigma_eta[main] > par[_P.ELE_MAX_SIGMA_ETA]:
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
            o_q[n] = trk_charge[t]
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
            if excess > par[_P.NEUTRAL_NSIGMA] * sig_c:
                # photon first (ECAL part, back to the EM scale), neutral hadron from the rest
                e_pho = 0.0
                e_nh = 0.0
                if a_e > 0.0 and excess >= a_e * e_ecal:
                    e_pho = e_ecal * par[_P.ECAL_EM_SCALE]
                    e_nh = excess - a_e * e_ecal
                elif a_e > 0.0:
                    e_pho = excess / a_e * par[_P.ECAL_EM_SCALE]
                else:
                    e_nh = excess
                if e_pho >= par[_P.PHOTON_MIN_E]:
                    main, eta, phi = _layer_centroid(order, i0, i1, nt, clu_layer, _ECAL, rem, clu_eta, clu_phi)
                    if main >= 0:
                        o_cls[n] = _GAMMA
                        o_eta[n] = eta
                        o_phi[n] = phi
                        o_e[n] = e_pho
                        o_pt[n] = e_pho / math.cosh(eta)
                        o_clu[n] = main
                        n += 1
                if e_nh >= par[_P.NEUTRAL_HADRON_MIN_E]:
                    main, eta, phi = _layer_centroid(order, i0, i1, nt, clu_layer, _HCAL, rem, clu_eta, clu_phi)
                    if main >= 0:
                        o_cls[n] = _NH
                        o_eta[n] = eta
                        o_phi[n] = phi
                        o_e[n] = e_nh
                        o_pt[n] = e_nh / math.cosh(eta)
                        o_clu[n] = main
                        n += 1
            elif par[_P.COMBINE_TRACKS_CALO] > 0.5 and e_raw > 0.0:
                sig_tot = math.sqrt(var_p + sig_c * sig_c)
                if abs(excess) < par[_P.COMBINE_NSIGMA] * sig_tot:
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
                o_q[n] = trk_charge[t]
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
                    noise = clu_n_cells[c] <= 1 and ee <= 0.0 and rem[c] < par[_P.HCAL_SINGLE_TOWER_MIN_E]
                    if e >= par[_P.NEUTRAL_HADRON_MIN_E] and sw > 0.0 and not noise:
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
                    e = rem[c] * par[_P.ECAL_EM_SCALE]
                    if e >= par[_P.PHOTON_MIN_E]:
                        o_cls[n] = _GAMMA
                        o_eta[n] = clu_eta[c]
                        o_phi[n] = _wrap(clu_phi[c])
                        o_e[n] = e
                        o_pt[n] = e / math.cosh(clu_eta[c])
                        o_clu[n] = c
                        n += 1
        i0 = i1

    return Candidates(cls=o_cls[:n], charge=o_q[:n], pt=o_pt[:n], eta=o_eta[:n], phi=o_phi[:n], e=o_e[:n],
                      trk_idx=o_trk[:n], clu_idx=o_clu[:n])
