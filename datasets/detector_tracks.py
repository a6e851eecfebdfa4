"""Detector simulation, steps 1-2: propagation to the calorimeters and reconstructed tracks.

1. ``propagate``: helix in the solenoid from the production vertex to the ECAL surface (barrel cylinder or
   endcap disk, whichever comes first), straight on to the HF face for |eta| > 3. Loopers stop.
2. ``reconstruct_tracks``: efficiency, pT/angle/impact-parameter smearing, hit count, muon stations.

The tracking kernel reads its scalar parameters from one vector with the fields :class:`TrackPar` and writes
its output rows with the fields :class:`TrackFloat` / :class:`TrackInt` (``trk_<field name in lower case>``);
:func:`track_tables` packs everything the kernel reads from a :class:`DetectorConfig` (see kernel_fields).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from numba import njit

from .detector_config import DetectorConfig
from .kernel_fields import Fields, from_config, pack

__all__ = ["TrackPar", "TrackKind", "TrackFloat", "TrackInt", "TrackTables", "track_tables", "propagate",
           "reconstruct_tracks"]


class TrackPar(Fields):
    """Scalar parameters of the tracking kernel; each is the DetectorConfig field of that name unless noted."""

    TRACKER_ETA_MAX = enum.auto()
    TRACK_PT_MIN = enum.auto()
    TRK_EFF_PT_EDGE_LOW = enum.auto()  # trk_eff_pt_edges[0]
    TRK_EFF_PT_EDGE_HIGH = enum.auto()  # trk_eff_pt_edges[1]
    TRK_PHI_RES_A = enum.auto()
    TRK_PHI_RES_B = enum.auto()
    TRK_ETA_RES_A = enum.auto()
    TRK_ETA_RES_B = enum.auto()
    TRK_D0_RES_A = enum.auto()
    TRK_D0_RES_B = enum.auto()
    TRK_Z0_RES_A = enum.auto()
    TRK_Z0_RES_B = enum.auto()
    B_FIELD = enum.auto()
    TRK_BARREL_HALF_LENGTH = enum.auto()
    TRK_DISK_R_MIN = enum.auto()
    TRK_DISK_R_MAX = enum.auto()
    TRK_HIT_EFF = enum.auto()
    MUON_ETA_MAX = enum.auto()
    MUON_STATION_EFF = enum.auto()
    PUNCH_THROUGH_PROB = enum.auto()


class TrackKind(Fields):
    """First index of the efficiency and resolution tables (electrons use the hadron resolution)."""

    HADRON = enum.auto()
    ELECTRON = enum.auto()
    MUON = enum.auto()


class TrackFloat(Fields):
    """Rows of the kernel's float output: branch ``trk_<name in lower case>``."""

    PT = enum.auto()
    PT_ERR = enum.auto()
    ETA = enum.auto()
    PHI = enum.auto()
    P = enum.auto()
    ETA_CALO = enum.auto()
    PHI_CALO = enum.auto()
    D0 = enum.auto()
    Z0 = enum.auto()


class TrackInt(Fields):
    """Rows of the kernel's integer output: branch ``trk_<name in lower case>``."""

    CHARGE = enum.auto()
    N_HITS = enum.auto()
    MUON_STATIONS = enum.auto()
    GEN_IDX = enum.auto()


_N_FLOAT = len(TrackFloat)
_N_INT = len(TrackInt)


class TrackTables(NamedTuple):
    """Everything the tracking kernel reads from the configuration."""

    par: np.ndarray  # TrackPar fields
    eff: np.ndarray  # efficiency [TrackKind, |eta| bin (<= 1.5, > 1.5), pT bin (trk_eff_pt_edges)]
    res_edges: np.ndarray  # upper |eta| edges of the pT-resolution bins
    res_a: np.ndarray  # pT resolution sqrt(a^2 + (b pT)^2): a [TrackKind, |eta| bin]
    res_b: np.ndarray  # b [TrackKind, |eta| bin]
    radii: np.ndarray  # barrel layer radii [mm]
    disks: np.ndarray  # disk |z| [mm]
    station_p: np.ndarray  # momentum needed to reach each muon station [GeV]


def track_tables(config: DetectorConfig) -> TrackTables:
    """The tracking kernel's tables for ``config``."""
    c = config
    f8 = np.float64
    # electrons: hadron resolution (no bremsstrahlung model)
    res_of = {TrackKind.HADRON: "hadron", TrackKind.ELECTRON: "hadron", TrackKind.MUON: "muon"}
    par = from_config(TrackPar, c, TRK_EFF_PT_EDGE_LOW=c.trk_eff_pt_edges[0],
                      TRK_EFF_PT_EDGE_HIGH=c.trk_eff_pt_edges[1])
    return TrackTables(
        par=pack(TrackPar, par),
        eff=np.array([getattr(c, f"trk_eff_{k.name.lower()}") for k in TrackKind], dtype=f8),
        res_edges=np.array(c.trk_res_eta_edges, dtype=f8),
        res_a=np.array([getattr(c, f"trk_res_{res_of[k]}_a") for k in TrackKind], dtype=f8),
        res_b=np.array([getattr(c, f"trk_res_{res_of[k]}_b") for k in TrackKind], dtype=f8),
        radii=np.array(c.trk_barrel_radii, dtype=f8),
        disks=np.array(c.trk_disk_z, dtype=f8),
        station_p=np.array(c.muon_station_p_min, dtype=f8),
    )


# --------------------------------------------------------------------------------------------------------
# 1. propagation
# --------------------------------------------------------------------------------------------------------
@njit(cache=True)
def _wrap(x):
    return (x + np.pi) % (2.0 * np.pi) - np.pi


@njit(cache=True)
def _eta_of(r, z):
    if r < 1e-9:
        return 20.0 if z >= 0 else -20.0
    return np.arcsinh(z / r)


@njit(cache=True)
def propagate(charge, pt, eta, phi, vx, vy, vz, b_field, r_c, z_c, z_hf, max_turn):
    """Impact (eta, phi) seen from the origin: at the ECAL surface ('face') and where energy is deposited
    ('dep': the same, or the HF face for very forward particles). reach=False: looper / no calorimeter."""
    n = pt.shape[0]
    face_eta = np.zeros(n)
    face_phi = np.zeros(n)
    dep_eta = np.zeros(n)
    dep_phi = np.zeros(n)
    reach = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        x0 = vx[i]
        y0 = vy[i]
        z0 = vz[i]
        p0 = phi[i]
        sh = np.sinh(eta[i])
        r0 = np.hypot(x0, y0)
        if pt[i] <= 0.0:
            continue
        if r0 >= r_c or abs(z0) >= z_c:  # produced beyond the ECAL surface: deposit along its direction
            face_eta[i] = eta[i]
            face_phi[i] = p0
            dep_eta[i] = eta[i]
            dep_phi[i] = p0
            reach[i] = True
            continue
        kappa = 0.0
        if charge[i] != 0:
            kappa = -charge[i] * 0.299792458 * b_field / (1000.0 * pt[i])  # dphi/ds [1/mm]
        straight = abs(kappa) < 1e-12
        # path length (transverse) to the endcap disk
        if sh > 0.0:
            s_e = (z_c - z0) / sh
        elif sh < 0.0:
            s_e = (-z_c - z0) / sh
        else:
            s_e = np.inf
        # path length to the barrel cylinder
        cp = np.cos(p0)
        sp = np.sin(p0)
        if straight:
            b = x0 * cp + y0 * sp
            s_b = -b + np.sqrt(b * b - (r0 * r0 - r_c * r_c))
        else:
            cx = x0 - sp / kappa
            cy = y0 + cp / kappa
            rho = 1.0 / abs(kappa)
            d = np.hypot(cx, cy)
            s_b = np.inf
            if d + rho > r_c and d > 1e-12:
                a = (r_c * r_c - rho * rho + d * d) / (2.0 * d)
                h = np.sqrt(max(r_c * r_c - a * a, 0.0))
                px = a * cx / d
                py = a * cy / d
                for sgn in (-1.0, 1.0):
                    qx = px + sgn * h * cy / d
                    qy = py - sgn * h * cx / d
                    ang = np.arctan2(kappa * (qx - cx), -kappa * (qy - cy))
                    dphi = (np.sign(kappa) * (ang - p0)) % (2.0 * np.pi)
                    s = dphi / abs(kappa)
                    if 1e-9 < s < s_b:
                        s_b = s
        if s_b <= s_e:
            s = s_b
            endcap = False
        else:
            s = s_e
            endcap = True
            if not np.isfinite(s) or abs(kappa) * s > max_turn:
                continue  # looper
        # position and direction at s
        if straight:
            x = x0 + s * cp
            y = y0 + s * sp
            dirp = p0
        else:
            dirp = p0 + kappa * s
            x = x0 + (np.sin(dirp) - sp) / kappa
            y = y0 - (np.cos(dirp) - cp) / kappa
        z = z0 + s * sh
        r = np.hypot(x, y)
        fe = _eta_of(r, z)
        fp = np.arctan2(y, x)
        face_eta[i] = fe
        face_phi[i] = _wrap(fp)
        reach[i] = True
        if endcap and abs(fe) >= 3.0:
            # straight on to the HF face (field ignored beyond the endcap)
            t = ((z_hf if sh > 0 else -z_hf) - z) / sh
            x += t * np.cos(dirp)
            y += t * np.sin(dirp)
            z = z_hf if sh > 0 else -z_hf
            fe = _eta_of(np.hypot(x, y), z)
            fp = np.arctan2(y, x)
        dep_eta[i] = fe
        dep_phi[i] = _wrap(fp)
    return face_eta, face_phi, dep_eta, dep_phi, reach


# --------------------------------------------------------------------------------------------------------
# 2. tracks
# --------------------------------------------------------------------------------------------------------
@njit(cache=True)
def _count_layers(pt, eta, b_field, radii, half_length, disks, dr_min, dr_max):
    """Expected crossed tracker layers (vertex-at-origin helix: r(s) = 2/k |sin(k s / 2)|)."""
    k = 0.299792458 * b_field / (1000.0 * pt)
    r_max = 2.0 / k
    sh = abs(np.sinh(eta))
    n = 0
    for r in radii:
        if r >= r_max:
            break
        s = 2.0 / k * np.arcsin(min(r * k / 2.0, 1.0))
        if s * sh < half_length:
            n += 1
    if sh > 1e-9:
        for zd in disks:
            s = zd / sh
            if k * s > np.pi:
                break
            r = 2.0 / k * abs(np.sin(k * s / 2.0))
            if dr_min <= r <= dr_max:
                n += 1
    return n


@njit(cache=True)
def _tracks(seed, pid, charge, pt, eta, phi, vx, vy, vz, face_eta, face_phi, reach, tables):
    """Reconstructed tracks (rows in gen order) as (TrackFloat rows, TrackInt rows) of the ``tables``."""
    np.random.seed(seed)
    par = tables.par
    eta_max = par[TrackPar.TRACKER_ETA_MAX]
    pt_min = par[TrackPar.TRACK_PT_MIN]
    pt_e1 = par[TrackPar.TRK_EFF_PT_EDGE_LOW]
    pt_e2 = par[TrackPar.TRK_EFF_PT_EDGE_HIGH]
    phi_a = par[TrackPar.TRK_PHI_RES_A]
    phi_b = par[TrackPar.TRK_PHI_RES_B]
    eta_a = par[TrackPar.TRK_ETA_RES_A]
    eta_b = par[TrackPar.TRK_ETA_RES_B]
    d0_a = par[TrackPar.TRK_D0_RES_A]
    d0_b = par[TrackPar.TRK_D0_RES_B]
    z0_a = par[TrackPar.TRK_Z0_RES_A]
    z0_b = par[TrackPar.TRK_Z0_RES_B]
    b_field = par[TrackPar.B_FIELD]
    half_length = par[TrackPar.TRK_BARREL_HALF_LENGTH]
    dr_min = par[TrackPar.TRK_DISK_R_MIN]
    dr_max = par[TrackPar.TRK_DISK_R_MAX]
    hit_eff = par[TrackPar.TRK_HIT_EFF]
    mu_eta_max = par[TrackPar.MUON_ETA_MAX]
    st_eff = par[TrackPar.MUON_STATION_EFF]
    punch = par[TrackPar.PUNCH_THROUGH_PROB]
    eff_tab = tables.eff
    res_edges = tables.res_edges
    res_a = tables.res_a
    res_b = tables.res_b
    station_p = tables.station_p
    n = pt.shape[0]
    o_f = np.zeros((_N_FLOAT, n))
    o_i = np.zeros((_N_INT, n), dtype=np.int32)
    m = 0
    for i in range(n):
        q = charge[i]
        if q == 0:
            continue
        u = np.random.random()  # one draw per charged particle keeps the stream aligned
        a_eta = abs(eta[i])
        if pt[i] <= pt_min or a_eta > eta_max:
            continue
        apid = abs(pid[i])
        kind = TrackKind.MUON if apid == 13 else (TrackKind.ELECTRON if apid == 11 else TrackKind.HADRON)
        eb = 0 if a_eta <= 1.5 else 1
        pb = 0 if pt[i] <= pt_e1 else (1 if pt[i] <= pt_e2 else 2)
        if u >= eff_tab[kind, eb, pb]:
            continue
        rb = 0
        while rb < res_edges.shape[0] - 1 and a_eta > res_edges[rb]:
            rb += 1
        rel = np.sqrt(res_a[kind, rb] ** 2 + (res_b[kind, rb] * pt[i]) ** 2)
        pt_r = pt[i] * (1.0 + rel * np.random.standard_normal())
        if pt_r < 0.05 * pt[i]:
            pt_r = 0.05 * pt[i]
        s_phi = np.sqrt(phi_a * phi_a + (phi_b / pt[i]) ** 2)
        s_eta = np.sqrt(eta_a * eta_a + (eta_b / pt[i]) ** 2)
        d_eta = s_eta * np.random.standard_normal()
        d_phi = s_phi * np.random.standard_normal()
        eta_r = eta[i] + d_eta
        phi_r = _wrap(phi[i] + d_phi)
        sp = np.sin(phi[i])
        cp = np.cos(phi[i])
        d0 = -vx[i] * sp + vy[i] * cp
        z0 = vz[i] - (vx[i] * cp + vy[i] * sp) * np.sinh(eta[i])
        d0 += np.sqrt(d0_a * d0_a + (d0_b / pt[i]) ** 2) * np.random.standard_normal()
        z0 += np.sqrt(z0_a * z0_a + (z0_b / pt[i]) ** 2) * np.random.standard_normal()
        n_exp = _count_layers(pt[i], eta[i], b_field, tables.radii, half_length, tables.disks, dr_min, dr_max)
        nh = 0
        for _ in range(n_exp):
            if np.random.random() < hit_eff:
                nh += 1
        p_true = pt[i] * np.cosh(eta[i])
        ns = 0
        if kind == TrackKind.MUON and a_eta < mu_eta_max:
            for st in range(station_p.shape[0]):
                if p_true > station_p[st] and np.random.random() < st_eff:
                    ns += 1
        elif kind == TrackKind.HADRON and np.random.random() < punch * (1.0 - np.exp(-p_true / 20.0)):
            ns = 1
        o_f[TrackFloat.PT, m] = pt_r
        o_f[TrackFloat.PT_ERR, m] = rel * pt_r
        o_f[TrackFloat.ETA, m] = eta_r
        o_f[TrackFloat.PHI, m] = phi_r
        o_f[TrackFloat.P, m] = pt_r * np.cosh(eta_r)
        if reach[i]:
            o_f[TrackFloat.ETA_CALO, m] = face_eta[i] + d_eta
            o_f[TrackFloat.PHI_CALO, m] = _wrap(face_phi[i] + d_phi)
        else:
            o_f[TrackFloat.ETA_CALO, m] = eta_r
            o_f[TrackFloat.PHI_CALO, m] = phi_r
        o_f[TrackFloat.D0, m] = d0
        o_f[TrackFloat.Z0, m] = z0
        o_i[TrackInt.CHARGE, m] = 1 if q > 0 else -1
        o_i[TrackInt.N_HITS, m] = nh
        o_i[TrackInt.MUON_STATIONS, m] = ns
        o_i[TrackInt.GEN_IDX, m] = i
        m += 1
    return o_f[:, :m].copy(), o_i[:, :m].copy()


def reconstruct_tracks(seed: int, pid: np.ndarray, charge: np.ndarray, gen: Mapping[str, np.ndarray],
                       face_eta: np.ndarray, face_phi: np.ndarray, reach: np.ndarray,
                       tables: TrackTables) -> dict[str, np.ndarray]:
    """The ``trk_*`` branches of one event: ``gen`` holds the float64 ``gen_*`` kinematics and vertices,
    ``face_*``/``reach`` come from :func:`propagate`."""
    tf, ti = _tracks(seed, pid, charge, gen["gen_pt"], gen["gen_eta"], gen["gen_phi"], gen["gen_vx"],
                     gen["gen_vy"], gen["gen_vz"], face_eta, face_phi, reach, tables)
    out = {f"trk_{row.name.lower()}": tf[row].astype(np.float32) for row in TrackFloat}
    out.update({f"trk_{row.name.lower()}": ti[row].astype(np.int32) for row in TrackInt})
    return out
