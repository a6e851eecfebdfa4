"""Detector simulation, step 3: the calorimeter table and the energy deposits of the particles.

:func:`calorimeters` is the table of the three calorimeters keyed by :class:`ClusterLayer` (ECAL, HCAL, HF),
one :class:`Calorimeter` row each: its uniform eta x phi grid and per-eta-row noise, thresholds and activity.

``deposit_energy``: total measured energy per particle (response x resolution), split ECAL/HCAL, spread over
cells with a Gaussian lateral profile (separable erf integrals over each cell) -> (layer, cell, particle, E)
rows. The kernel reads its scalar parameters from vectors with the fields :class:`DepositPar` and
:class:`DepositFootprint` (DetectorConfig fields of the same names; see kernel_fields).
"""

from __future__ import annotations

import enum
import math
from typing import NamedTuple

import numpy as np
from numba import njit

from .detector_config import DetectorConfig
from .kernel_fields import Fields, from_config, pack
from .schema import INVISIBLE_PDGIDS, ClusterLayer

__all__ = ["Calorimeter", "calorimeters", "DepositPar", "DepositFootprint", "DepositTables", "deposit_tables",
           "Deposits", "classify", "deposit_energy"]

# particle classes for the calorimeters
_INVISIBLE, _EM, _MUON, _HADRON = 0, 1, 2, 3
_BARYONS = np.array([2212, 2112, 3122, 3222, 3212, 3112, 3322, 3312, 3334], dtype=np.int64)


class Calorimeter(NamedTuple):
    """One calorimeter: a uniform grid of n_eta x n_phi cells (phi from -pi) and per-eta-row tables.

    A NamedTuple so that the kernels take it as it is (fields read by name, compile-time offsets). Only the
    kernels of this module read it (Numba's cache is per file; see kernel_fields); others get plain arrays.
    """

    layer: int  # ClusterLayer value, also the calorimeter id of the deposits
    eta_min: float
    deta: float  # cell size in eta
    n_eta: int
    n_phi: int
    noise: np.ndarray  # Gaussian cell noise per eta row [GeV]
    gather: np.ndarray  # gathering (topological) threshold per eta row [GeV]
    seed: np.ndarray  # seed threshold per eta row [GeV]
    active: np.ndarray  # eta row is instrumented (HF: |eta| > hf_eta_min)
    lam: np.ndarray  # expected noise-only cells above the gathering threshold per eta row


def calorimeters(config: DetectorConfig) -> dict[ClusterLayer, Calorimeter]:
    """The calorimeter table of ``config``, keyed by ClusterLayer in the order ECAL, HCAL, HF."""
    table = {}
    for layer in ClusterLayer:
        lo, hi, n_eta, n_phi = config.grid(int(layer))
        rows = config.row_tables(int(layer))
        table[layer] = Calorimeter(layer=int(layer), eta_min=lo, deta=(hi - lo) / n_eta, n_eta=n_eta, n_phi=n_phi,
                                   noise=rows["noise"], gather=rows["gather"], seed=rows["seed"],
                                   active=rows["active"], lam=rows["lam"])
    return table


class DepositPar(Fields):
    """Scalar float parameters of the deposit kernel: the DetectorConfig fields of these names."""

    HF_ETA_MIN = enum.auto()
    HF_ETA_MAX = enum.auto()
    ECAL_BARREL_ETA_MAX = enum.auto()
    ECAL_A_BARREL = enum.auto()
    ECAL_C_BARREL = enum.auto()
    ECAL_A_ENDCAP = enum.auto()
    ECAL_C_ENDCAP = enum.auto()
    HF_EM_A = enum.auto()
    HF_EM_C = enum.auto()
    HAD_A = enum.auto()
    HAD_C = enum.auto()
    HF_HAD_A = enum.auto()
    HF_HAD_C = enum.auto()
    E_OVER_H = enum.auto()
    HF_E_OVER_H = enum.auto()
    HAD_E0 = enum.auto()
    HAD_K = enum.auto()
    ECAL_LAMBDA_INT = enum.auto()
    ECAL_FRAC_MIN = enum.auto()
    ECAL_FRAC_MAX = enum.auto()
    EM_LATERAL_SIGMA = enum.auto()
    HAD_ECAL_LATERAL_SIGMA = enum.auto()
    HAD_HCAL_LATERAL_SIGMA = enum.auto()
    HF_EM_LATERAL_SIGMA = enum.auto()
    HF_HAD_LATERAL_SIGMA = enum.auto()
    MIP_ECAL = enum.auto()
    MIP_HCAL = enum.auto()
    MIP_REL_WIDTH = enum.auto()


_P = DepositPar  # short name in the kernel


class DepositFootprint(Fields):
    """Integer parameters of the deposit kernel: half-widths in cells of the deposited windows (config fields)."""

    EM_FOOTPRINT = enum.auto()
    HAD_ECAL_FOOTPRINT = enum.auto()
    HAD_HCAL_FOOTPRINT = enum.auto()
    HF_FOOTPRINT = enum.auto()


class DepositTables(NamedTuple):
    """Everything the deposit kernel reads from the configuration."""

    par: np.ndarray  # DepositPar fields, float64
    footprint: np.ndarray  # DepositFootprint fields, int64
    calos: dict[ClusterLayer, Calorimeter]


def deposit_tables(config: DetectorConfig) -> DepositTables:
    """The deposit kernel's tables for ``config``."""
    return DepositTables(par=pack(DepositPar, from_config(DepositPar, config)),
                         footprint=pack(DepositFootprint, from_config(DepositFootprint, config), dtype=np.int64),
                         calos=calorimeters(config))


class Deposits(NamedTuple):
    """Energy deposits, one row per (calorimeter, cell, particle) piece."""

    layer: np.ndarray  # int8, ClusterLayer value
    cell: np.ndarray  # int32, ieta * n_phi + iphi of that calorimeter
    part: np.ndarray  # int32, generator particle index
    e: np.ndarray  # float64, EM-scale energy [GeV]


def classify(pid: np.ndarray, e: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calorimeter class and visible energy (kinetic for baryons, E + m for anti-baryons, E otherwise)."""
    apid = np.abs(pid)
    cls = np.full(pid.shape, _HADRON, dtype=np.int8)
    cls[(apid == 11) | (apid == 22)] = _EM
    cls[apid == 13] = _MUON
    cls[np.isin(apid, np.fromiter(INVISIBLE_PDGIDS, dtype=np.int64))] = _INVISIBLE
    e_vis = e.astype(np.float64).copy()
    baryon = np.isin(apid, _BARYONS)
    e_vis[baryon & (pid > 0)] -= m[baryon & (pid > 0)]
    e_vis[baryon & (pid < 0)] += m[baryon & (pid < 0)]
    e_vis[apid == 13] -= m[apid == 13]
    return cls, np.maximum(e_vis, 0.0)


def deposit_energy(seed: int, cls: np.ndarray, e_vis: np.ndarray, dep_eta: np.ndarray, dep_phi: np.ndarray,
                   reach: np.ndarray, tables: DepositTables) -> Deposits:
    """Deposits of the particles of :func:`classify` at their impact points (``dep_*``, ``reach``: propagate)."""
    calos = tables.calos
    return _deposit(seed, cls, e_vis, dep_eta, dep_phi, reach, tables.par, tables.footprint,
                    calos[ClusterLayer.ECAL], calos[ClusterLayer.HCAL], calos[ClusterLayer.HF])


# --------------------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------------------
@njit(cache=True)
def _spread(calo, part, energy, eta0, phi0, sigma, half, min_e, h_calo, h_cell, h_part, h_e, k):
    """Deposit ``energy`` in Calorimeter ``calo`` over a (2 half + 1)^2 window with a Gaussian lateral
    profile; returns new k.

    Fractions are erf integrals over each cell, renormalised over the active cells of the window. Cells
    that would receive less than ``min_e`` (the gathering threshold) get nothing and their share is
    folded into the others: a compact-shower model in which the clustered sum carries the configured
    resolution (what CMS cluster containment corrections aim at). The deposited sum is exactly ``energy``.
    """
    if energy <= 0.0:
        return k
    eta_min = calo.eta_min
    deta = calo.deta
    n_eta = calo.n_eta
    n_phi = calo.n_phi
    active = calo.active
    dphi = 2.0 * np.pi / n_phi
    ie0 = int(np.floor((eta0 - eta_min) / deta))
    ie0 = min(max(ie0, 0), n_eta - 1)
    ip0 = int(np.floor((phi0 + np.pi) / dphi))
    w = 2 * half + 1
    fe = np.zeros(w)
    fp = np.zeros(w)
    inv = 1.0 / (sigma * np.sqrt(2.0))
    tot_e = 0.0
    tot_p = 0.0
    for d in range(w):
        row = ie0 + d - half
        if 0 <= row < n_eta and active[row]:
            lo = eta_min + row * deta - eta0
            if half == 0:
                fe[d] = 1.0
            else:
                fe[d] = 0.5 * (math.erf((lo + deta) * inv) - math.erf(lo * inv))
            tot_e += fe[d]
        lo = -np.pi + (ip0 + d - half) * dphi - phi0
        if half == 0:
            fp[d] = 1.0
        else:
            fp[d] = 0.5 * (math.erf((lo + dphi) * inv) - math.erf(lo * inv))
        tot_p += fp[d]
    if tot_e <= 0.0 or tot_p <= 0.0:
        return k
    # fold the tails below min_e into the cells above it (all into the largest cell if none is above)
    norm = energy / (tot_e * tot_p)
    kept = 0.0
    v_max = 0.0
    a_max = 0
    b_max = 0
    for a in range(w):
        for b in range(w):
            v = norm * fe[a] * fp[b]
            if v > v_max:
                v_max = v
                a_max = a
                b_max = b
            if v >= min_e:
                kept += v
    for a in range(w):
        row = ie0 + a - half
        for b in range(w):
            v = norm * fe[a] * fp[b]
            if kept > 0.0:
                if v <= 0.0 or v < min_e:
                    continue
                v *= energy / kept
            elif a == a_max and b == b_max:
                v = energy
            else:
                continue
            h_calo[k] = calo.layer
            h_cell[k] = row * n_phi + (ip0 + b - half) % n_phi
            h_part[k] = part
            h_e[k] = v
            k += 1
    return k


@njit(cache=True)
def _response(e, eh, e0, kk):
    return 1.0 - (1.0 - 1.0 / eh) * (max(e, e0) / e0) ** (kk - 1.0)


@njit(cache=True)
def _mip(mpv, width):
    return max(mpv * (1.0 + width * np.random.standard_normal()), 0.0)


@njit(cache=True)
def _gather_at(calo, eta):
    """Gathering threshold of the eta row of ``calo`` at ``eta`` (clamped to the grid)."""
    return calo.gather[min(max(int((eta - calo.eta_min) / calo.deta), 0), calo.n_eta - 1)]


@njit(cache=True)
def _deposit(seed, cls, e_vis, dep_eta, dep_phi, reach, par, footprint, ecal, hcal, hf):
    """Energy deposits in the Calorimeters ``ecal``, ``hcal``, ``hf`` as Deposits rows."""
    np.random.seed(seed)
    n = cls.shape[0]
    cap = 16
    fp_em = footprint[DepositFootprint.EM_FOOTPRINT]
    fp_he = footprint[DepositFootprint.HAD_ECAL_FOOTPRINT]
    fp_hh = footprint[DepositFootprint.HAD_HCAL_FOOTPRINT]
    fp_hf = footprint[DepositFootprint.HF_FOOTPRINT]
    per = max((2 * fp_em + 1) ** 2, (2 * fp_he + 1) ** 2 + (2 * fp_hh + 1) ** 2, (2 * fp_hf + 1) ** 2)
    cap += n * per
    h_calo = np.empty(cap, dtype=np.int8)
    h_cell = np.empty(cap, dtype=np.int32)
    h_part = np.empty(cap, dtype=np.int32)
    h_e = np.empty(cap, dtype=np.float64)
    k = 0
    for i in range(n):
        c = cls[i]
        if c == _INVISIBLE or not reach[i]:
            continue
        # draw the same number of randoms for every visible particle: stable streams
        z1 = np.random.standard_normal()
        u1 = np.random.random()
        u2 = np.random.random()
        eta0 = dep_eta[i]
        phi0 = dep_phi[i]
        a = abs(eta0)
        g_e = _gather_at(ecal, eta0)
        g_h = _gather_at(hcal, eta0)
        g_f = _gather_at(hf, eta0)
        e = e_vis[i]
        if a >= par[_P.HF_ETA_MAX] or e <= 0.0:
            continue
        if a >= par[_P.HF_ETA_MIN]:
            if c == _MUON:
                continue
            if c == _EM:
                rel = np.sqrt(par[_P.HF_EM_A] ** 2 / e + par[_P.HF_EM_C] ** 2)
                em = max(e * (1.0 + rel * z1), 0.0)
                sig = par[_P.HF_EM_LATERAL_SIGMA]
            else:
                rel = np.sqrt(par[_P.HF_HAD_A] ** 2 / e + par[_P.HF_HAD_C] ** 2)
                resp = _response(e, par[_P.HF_E_OVER_H], par[_P.HAD_E0], par[_P.HAD_K])
                em = max(e * resp * (1.0 + rel * z1), 0.0)
                sig = par[_P.HF_HAD_LATERAL_SIGMA]
            k = _spread(hf, i, em, eta0, phi0, sig, fp_hf, g_f, h_calo, h_cell, h_part, h_e, k)
            continue
        if c == _EM:
            if a < par[_P.ECAL_BARREL_ETA_MAX]:
                rel = np.sqrt(par[_P.ECAL_A_BARREL] ** 2 / e + par[_P.ECAL_C_BARREL] ** 2)
            else:
                rel = np.sqrt(par[_P.ECAL_A_ENDCAP] ** 2 / e + par[_P.ECAL_C_ENDCAP] ** 2)
            em = max(e * (1.0 + rel * z1), 0.0)
            k = _spread(ecal, i, em, eta0, phi0, par[_P.EM_LATERAL_SIGMA], fp_em, g_e, h_calo, h_cell, h_part, h_e, k)
        elif c == _MUON:
            ee = min(_mip(par[_P.MIP_ECAL], par[_P.MIP_REL_WIDTH]), e)
            eh = min(_mip(par[_P.MIP_HCAL], par[_P.MIP_REL_WIDTH]), e - ee)
            k = _spread(ecal, i, ee, eta0, phi0, 1.0, 0, 0.0, h_calo, h_cell, h_part, h_e, k)
            k = _spread(hcal, i, eh, eta0, phi0, 1.0, 0, 0.0, h_calo, h_cell, h_part, h_e, k)
        else:
            rel = np.sqrt(par[_P.HAD_A] ** 2 / e + par[_P.HAD_C] ** 2)
            resp = _response(e, par[_P.E_OVER_H], par[_P.HAD_E0], par[_P.HAD_K])
            tot = max(e * resp * (1.0 + rel * z1), 0.0)
            if u1 < 1.0 - np.exp(-par[_P.ECAL_LAMBDA_INT]):
                ee = tot * (par[_P.ECAL_FRAC_MIN] + (par[_P.ECAL_FRAC_MAX] - par[_P.ECAL_FRAC_MIN]) * u2)
                k = _spread(ecal, i, ee, eta0, phi0, par[_P.HAD_ECAL_LATERAL_SIGMA], fp_he, g_e,
                            h_calo, h_cell, h_part, h_e, k)
            else:
                ee = min(par[_P.MIP_ECAL] * (1.0 + par[_P.MIP_REL_WIDTH] * (2.0 * u2 - 1.0) * 1.7320508), tot)
                k = _spread(ecal, i, ee, eta0, phi0, 1.0, 0, 0.0, h_calo, h_cell, h_part, h_e, k)
            k = _spread(hcal, i, tot - ee, eta0, phi0, par[_P.HAD_HCAL_LATERAL_SIGMA], fp_hh, g_h,
                        h_calo, h_cell, h_part, h_e, k)
    return Deposits(layer=h_calo[:k].copy(), cell=h_cell[:k].copy(), part=h_part[:k].copy(), e=h_e[:k].copy())
