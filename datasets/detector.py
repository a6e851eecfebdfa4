"""Parametrised CMS-like detector simulation: generator particles -> tracks and calorimeter clusters.

Why parametrised: the zoo needs millions of events with realistic tracks/clusters and exact truth links
(which particle fed which cluster, with how much energy) at a few ms per event; Geant4 is out of scope.

Chain (each heavy step is an ``@njit(cache=True)`` kernel on flat arrays; all constants in DetectorConfig):
  1. ``_propagate``: helix in the solenoid from the production vertex to the ECAL surface (barrel cylinder or
     endcap disk, whichever comes first), straight on to the HF face for |eta| > 3. Loopers stop.
  2. ``_tracks``: efficiency, pT/angle/impact-parameter smearing, hit count, muon stations.
  3. ``_deposit``: total measured energy per particle (response x resolution), split ECAL/HCAL, spread over
     cells with a Gaussian lateral profile (separable erf integrals over each cell) -> (cell, particle, E).
  4. ``_build_cells`` per calorimeter: merge deposits per cell (linked list kept for truth), add Gaussian
     noise to every hit cell, and add noise-only cells. Noise-only cells are drawn from the Gaussian tail
     above the gathering threshold (Poisson count per eta row, Marsaglia tail sampler): cells below that
     threshold can never join or seed a cluster, so this is equivalent to noising all ~130k cells but O(fired).
     (A noise draw that lands on an already fired cell is dropped: a negligible under-count.)
  5. ``clustering.topo_cluster`` + moments + exact truth contributions.

Output conventions: clusters are ECAL, then HCAL, then HF, each ordered by seed energy; ``clu_e`` is at the
EM scale (see detector_config); ECAL clusters have e_ecal = e, HCAL and HF clusters e_hcal = e (HF has
one layer). Tracks of loopers keep eta_calo/phi_calo = their vertex eta/phi. Electrons: no bremsstrahlung.

Random numbers: each kernel seeds Numba's generator with a child of ``np.random.SeedSequence(seed)``, so
(gen, seed, config) -> bit-identical output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numba import njit

from .clustering import cluster_contributions, cluster_moments, topo_cluster
from .detector_config import DEFAULT_CONFIG, DetectorConfig
from .schema import CLU, INVISIBLE_PDGIDS, TRK, ClusterLayer

__all__ = ["simulate_event", "simulate_chunk", "GEN_INPUTS"]

GEN_INPUTS = ("gen_pid", "gen_charge", "gen_pt", "gen_eta", "gen_phi", "gen_e", "gen_m",
              "gen_vx", "gen_vy", "gen_vz")

# particle classes for the calorimeters
_INVISIBLE, _EM, _MUON, _HADRON = 0, 1, 2, 3
_BARYONS = np.array([2212, 2112, 3122, 3222, 3212, 3112, 3322, 3312, 3334], dtype=np.int64)

# indices into the packed float parameter vector of _deposit
(_P_HF_ETA_MIN, _P_HF_ETA_MAX, _P_EB_MAX, _P_EA_B, _P_EC_B, _P_EA_E, _P_EC_E, _P_HFEM_A, _P_HFEM_C,
 _P_HAD_A, _P_HAD_C, _P_HFHAD_A, _P_HFHAD_C, _P_EH, _P_HF_EH, _P_E0, _P_K, _P_LAMBDA, _P_FMIN, _P_FMAX,
 _P_EM_SIG, _P_HE_SIG, _P_HH_SIG, _P_HFEM_SIG, _P_HFHAD_SIG, _P_MIP_E, _P_MIP_H, _P_MIP_W) = range(28)
# integer parameters: footprints, then (n_eta, n_phi) for ECAL, HCAL, HF
_I_EM_FP, _I_HE_FP, _I_HH_FP, _I_HF_FP = range(4)


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
def _propagate(charge, pt, eta, phi, vx, vy, vz, b_field, r_c, z_c, z_hf, max_turn):
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
def _tracks(seed, pid, charge, pt, eta, phi, vx, vy, vz, face_eta, face_phi, reach, fpar, eff_tab,
            res_edges, res_a, res_b, radii, disks, station_p):
    """Reconstructed tracks (rows in gen order). eff_tab[kind, eta_bin, pt_bin]; res_a/b[kind(0 had, 1 mu), bin]."""
    np.random.seed(seed)
    (eta_max, pt_min, pt_e1, pt_e2, phi_a, phi_b, eta_a, eta_b, d0_a, d0_b, z0_a, z0_b, b_field,
     half_length, dr_min, dr_max, hit_eff, mu_eta_max, st_eff, punch) = (
        fpar[0], fpar[1], fpar[2], fpar[3], fpar[4], fpar[5], fpar[6], fpar[7], fpar[8], fpar[9],
        fpar[10], fpar[11], fpar[12], fpar[13], fpar[14], fpar[15], fpar[16], fpar[17], fpar[18], fpar[19])
    n = pt.shape[0]
    o_f = np.zeros((9, n))  # pt, pt_err, eta, phi, p, eta_calo, phi_calo, d0, z0
    o_i = np.zeros((4, n), dtype=np.int32)  # charge, n_hits, muon_stations, gen_idx
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
        kind = 2 if apid == 13 else (1 if apid == 11 else 0)
        eb = 0 if a_eta <= 1.5 else 1
        pb = 0 if pt[i] <= pt_e1 else (1 if pt[i] <= pt_e2 else 2)
        if u >= eff_tab[kind, eb, pb]:
            continue
        rk = 1 if kind == 2 else 0
        rb = 0
        while rb < res_edges.shape[0] - 1 and a_eta > res_edges[rb]:
            rb += 1
        rel = np.sqrt(res_a[rk, rb] ** 2 + (res_b[rk, rb] * pt[i]) ** 2)
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
        n_exp = _count_layers(pt[i], eta[i], b_field, radii, half_length, disks, dr_min, dr_max)
        nh = 0
        for _ in range(n_exp):
            if np.random.random() < hit_eff:
                nh += 1
        p_true = pt[i] * np.cosh(eta[i])
        ns = 0
        if kind == 2 and a_eta < mu_eta_max:
            for st in range(station_p.shape[0]):
                if p_true > station_p[st] and np.random.random() < st_eff:
                    ns += 1
        elif kind == 0 and np.random.random() < punch * (1.0 - np.exp(-p_true / 20.0)):
            ns = 1
        o_f[0, m] = pt_r
        o_f[1, m] = rel * pt_r
        o_f[2, m] = eta_r
        o_f[3, m] = phi_r
        o_f[4, m] = pt_r * np.cosh(eta_r)
        if reach[i]:
            o_f[5, m] = face_eta[i] + d_eta
            o_f[6, m] = _wrap(face_phi[i] + d_phi)
        else:
            o_f[5, m] = eta_r
            o_f[6, m] = phi_r
        o_f[7, m] = d0
        o_f[8, m] = z0
        o_i[0, m] = 1 if q > 0 else -1
        o_i[1, m] = nh
        o_i[2, m] = ns
        o_i[3, m] = i
        m += 1
    return o_f[:, :m].copy(), o_i[:, :m].copy()


# --------------------------------------------------------------------------------------------------------
# 3. energy deposits
# --------------------------------------------------------------------------------------------------------
@njit(cache=True)
def _spread(calo, part, energy, eta0, phi0, sigma, half, min_e, eta_min, deta, n_eta, n_phi, active,
            h_calo, h_cell, h_part, h_e, k):
    """Deposit ``energy`` over a (2 half + 1)^2 window with a Gaussian lateral profile; returns new k.

    Fractions are erf integrals over each cell, renormalised over the active cells of the window. Cells
    that would receive less than ``min_e`` (the gathering threshold) get nothing and their share is
    folded into the others: a compact-shower model in which the clustered sum carries the configured
    resolution (what CMS cluster containment corrections aim at). The deposited sum is exactly ``energy``.
    """
    if energy <= 0.0:
        return k
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
            h_calo[k] = calo
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
def _deposit(seed, cls, e_vis, dep_eta, dep_phi, reach, par, ipar, grids, active_e, active_h, active_f,
             gather_e, gather_h, gather_f):
    """Energy deposits as (calo 0/1/2 = ECAL/HCAL/HF, cell, particle, energy) rows."""
    np.random.seed(seed)
    n = cls.shape[0]
    cap = 16
    fp_em = ipar[_I_EM_FP]
    fp_he = ipar[_I_HE_FP]
    fp_hh = ipar[_I_HH_FP]
    fp_hf = ipar[_I_HF_FP]
    per = max((2 * fp_em + 1) ** 2, (2 * fp_he + 1) ** 2 + (2 * fp_hh + 1) ** 2, (2 * fp_hf + 1) ** 2)
    cap += n * per
    h_calo = np.empty(cap, dtype=np.int8)
    h_cell = np.empty(cap, dtype=np.int32)
    h_part = np.empty(cap, dtype=np.int32)
    h_e = np.empty(cap, dtype=np.float64)
    k = 0
    e_min, e_deta, e_neta, e_nphi = grids[0, 0], grids[0, 1], int(grids[0, 2]), int(grids[0, 3])
    h_min, h_deta, h_neta, h_nphi = grids[1, 0], grids[1, 1], int(grids[1, 2]), int(grids[1, 3])
    f_min, f_deta, f_neta, f_nphi = grids[2, 0], grids[2, 1], int(grids[2, 2]), int(grids[2, 3])
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
        g_e = gather_e[min(max(int((eta0 - e_min) / e_deta), 0), e_neta - 1)]
        g_h = gather_h[min(max(int((eta0 - h_min) / h_deta), 0), h_neta - 1)]
        g_f = gather_f[min(max(int((eta0 - f_min) / f_deta), 0), f_neta - 1)]
        e = e_vis[i]
        if a >= par[_P_HF_ETA_MAX] or e <= 0.0:
            continue
        if a >= par[_P_HF_ETA_MIN]:
            if c == _MUON:
                continue
            if c == _EM:
                rel = np.sqrt(par[_P_HFEM_A] ** 2 / e + par[_P_HFEM_C] ** 2)
                em = max(e * (1.0 + rel * z1), 0.0)
                sig = par[_P_HFEM_SIG]
            else:
                rel = np.sqrt(par[_P_HFHAD_A] ** 2 / e + par[_P_HFHAD_C] ** 2)
                resp = _response(e, par[_P_HF_EH], par[_P_E0], par[_P_K])
                em = max(e * resp * (1.0 + rel * z1), 0.0)
                sig = par[_P_HFHAD_SIG]
            k = _spread(2, i, em, eta0, phi0, sig, fp_hf, g_f, f_min, f_deta, f_neta, f_nphi, active_f,
                        h_calo, h_cell, h_part, h_e, k)
            continue
        if c == _EM:
            if a < par[_P_EB_MAX]:
                rel = np.sqrt(par[_P_EA_B] ** 2 / e + par[_P_EC_B] ** 2)
            else:
                rel = np.sqrt(par[_P_EA_E] ** 2 / e + par[_P_EC_E] ** 2)
            em = max(e * (1.0 + rel * z1), 0.0)
            k = _spread(0, i, em, eta0, phi0, par[_P_EM_SIG], fp_em, g_e, e_min, e_deta, e_neta, e_nphi,
                        active_e, h_calo, h_cell, h_part, h_e, k)
        elif c == _MUON:
            ee = min(_mip(par[_P_MIP_E], par[_P_MIP_W]), e)
            eh = min(_mip(par[_P_MIP_H], par[_P_MIP_W]), e - ee)
            k = _spread(0, i, ee, eta0, phi0, 1.0, 0, 0.0, e_min, e_deta, e_neta, e_nphi, active_e,
                        h_calo, h_cell, h_part, h_e, k)
            k = _spread(1, i, eh, eta0, phi0, 1.0, 0, 0.0, h_min, h_deta, h_neta, h_nphi, active_h,
                        h_calo, h_cell, h_part, h_e, k)
        else:
            rel = np.sqrt(par[_P_HAD_A] ** 2 / e + par[_P_HAD_C] ** 2)
            resp = _response(e, par[_P_EH], par[_P_E0], par[_P_K])
            tot = max(e * resp * (1.0 + rel * z1), 0.0)
            if u1 < 1.0 - np.exp(-par[_P_LAMBDA]):
                ee = tot * (par[_P_FMIN] + (par[_P_FMAX] - par[_P_FMIN]) * u2)
                k = _spread(0, i, ee, eta0, phi0, par[_P_HE_SIG], fp_he, g_e, e_min, e_deta, e_neta, e_nphi,
                            active_e, h_calo, h_cell, h_part, h_e, k)
            else:
                ee = min(par[_P_MIP_E] * (1.0 + par[_P_MIP_W] * (2.0 * u2 - 1.0) * 1.7320508), tot)
                k = _spread(0, i, ee, eta0, phi0, 1.0, 0, 0.0, e_min, e_deta, e_neta, e_nphi, active_e,
                            h_calo, h_cell, h_part, h_e, k)
            k = _spread(1, i, tot - ee, eta0, phi0, par[_P_HH_SIG], fp_hh, g_h, h_min, h_deta, h_neta, h_nphi,
                        active_h, h_calo, h_cell, h_part, h_e, k)
    return h_calo[:k].copy(), h_cell[:k].copy(), h_part[:k].copy(), h_e[:k].copy()


# --------------------------------------------------------------------------------------------------------
# 4. cells and noise
# --------------------------------------------------------------------------------------------------------
@njit(cache=True)
def _tail_normal(a):
    """Standard normal conditioned on x > a (a > 0): Marsaglia's exponential-proposal tail sampler."""
    while True:
        x = -np.log(1.0 - np.random.random()) / a
        y = -np.log(1.0 - np.random.random())
        if 2.0 * y > x * x:
            return a + x


@njit(cache=True)
def _build_cells(seed, hit_cell, hit_part, hit_e, n_eta, n_phi, noise_row, gather_row, lam_row):
    """Merge deposits per cell, add noise, add noise-only cells. Returns cell ids, total and noise energy,
    and the per-cell linked list of deposits (cell_head, hit_next) for the truth."""
    np.random.seed(seed)
    nh = hit_cell.shape[0]
    cmap = np.full(n_eta * n_phi, -1, dtype=np.int32)
    lam_tot = 0.0
    for r in range(n_eta):
        lam_tot += lam_row[r]
    cap = nh + int(lam_tot + 10.0 * np.sqrt(lam_tot + 1.0)) + 64
    cell_id = np.empty(cap, dtype=np.int64)
    cell_sig = np.zeros(cap)
    cell_head = np.full(cap, -1, dtype=np.int32)
    hit_next = np.full(nh, -1, dtype=np.int32)
    nc = 0
    for h in range(nh):
        cid = hit_cell[h]
        j = cmap[cid]
        if j < 0:
            j = nc
            cmap[cid] = j
            cell_id[j] = cid
            nc += 1
        hit_next[h] = cell_head[j]
        cell_head[j] = h
        cell_sig[j] += hit_e[h]
    cell_noise = np.zeros(cap)
    for j in range(nc):
        cell_noise[j] = noise_row[cell_id[j] // n_phi] * np.random.standard_normal()
    for r in range(n_eta):
        if lam_row[r] <= 0.0:
            continue
        nk = np.random.poisson(lam_row[r])
        a = gather_row[r] / noise_row[r]
        for _ in range(nk):
            cid = r * n_phi + np.random.randint(0, n_phi)
            v = noise_row[r] * _tail_normal(a)
            if cmap[cid] >= 0 or nc >= cap:
                continue
            cmap[cid] = nc
            cell_id[nc] = cid
            cell_noise[nc] = v
            nc += 1
    return cell_id[:nc].copy(), cell_sig[:nc] + cell_noise[:nc], cell_noise[:nc].copy(), cell_head[:nc].copy(), hit_next


# --------------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------------
def _classify(pid: np.ndarray, e: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _tables(config: DetectorConfig) -> dict:
    """Packed numeric parameters for the kernels (cached on the config instance)."""
    key = "kernel_tables"
    if key in config._derived:
        return config._derived[key]
    c = config
    eff = np.array([c.trk_eff_hadron, c.trk_eff_electron, c.trk_eff_muon], dtype=np.float64)
    t = {
        "trk_f": np.array([c.tracker_eta_max, c.track_pt_min, c.trk_eff_pt_edges[0], c.trk_eff_pt_edges[1],
                           c.trk_phi_res_a, c.trk_phi_res_b, c.trk_eta_res_a, c.trk_eta_res_b,
                           c.trk_d0_res_a, c.trk_d0_res_b, c.trk_z0_res_a, c.trk_z0_res_b, c.b_field,
                           c.trk_barrel_half_length, c.trk_disk_r_min, c.trk_disk_r_max, c.trk_hit_eff,
                           c.muon_eta_max, c.muon_station_eff, c.punch_through_prob]),
        "eff": eff,
        "res_edges": np.array(c.trk_res_eta_edges, dtype=np.float64),
        "res_a": np.array([c.trk_res_hadron_a, c.trk_res_muon_a], dtype=np.float64),
        "res_b": np.array([c.trk_res_hadron_b, c.trk_res_muon_b], dtype=np.float64),
        "radii": np.array(c.trk_barrel_radii, dtype=np.float64),
        "disks": np.array(c.trk_disk_z, dtype=np.float64),
        "station_p": np.array(c.muon_station_p_min, dtype=np.float64),
        "par": np.array([c.hf_eta_min, c.hf_eta_max, c.ecal_barrel_eta_max, c.ecal_a_barrel, c.ecal_c_barrel,
                         c.ecal_a_endcap, c.ecal_c_endcap, c.hf_em_a, c.hf_em_c, c.had_a, c.had_c, c.hf_had_a,
                         c.hf_had_c, c.e_over_h, c.hf_e_over_h, c.had_e0, c.had_k, c.ecal_lambda_int,
                         c.ecal_frac_min, c.ecal_frac_max, c.em_lateral_sigma, c.had_ecal_lateral_sigma,
                         c.had_hcal_lateral_sigma, c.hf_em_lateral_sigma, c.hf_had_lateral_sigma,
                         c.mip_ecal, c.mip_hcal, c.mip_rel_width], dtype=np.float64),
        "ipar": np.array([c.em_footprint, c.had_ecal_footprint, c.had_hcal_footprint, c.hf_footprint],
                         dtype=np.int64),
        "grids": np.array([[lo, (hi - lo) / ne, ne, nphi] for lo, hi, ne, nphi in
                           (c.grid(1), c.grid(2), c.grid(3))], dtype=np.float64),
        "rows": [c.row_tables(layer) for layer in (1, 2, 3)],
    }
    config._derived[key] = t
    return t


def _empty_output() -> dict[str, np.ndarray]:
    out = {name: np.zeros(0, dtype=dt) for name, dt in {**TRK.branches, **CLU.branches}.items()}
    out["contrib_gen"] = np.zeros(0, dtype=np.int32)
    out["contrib_clu"] = np.zeros(0, dtype=np.int32)
    out["contrib_e"] = np.zeros(0, dtype=np.float32)
    return out


def simulate_event(gen: Mapping[str, np.ndarray], seed: int,
                   config: DetectorConfig = DEFAULT_CONFIG) -> dict[str, np.ndarray]:
    """Simulate one event: every ``trk_*`` and ``clu_*`` branch (schema dtypes) plus the truth arrays
    ``contrib_gen``, ``contrib_clu``, ``contrib_e`` (EM-scale signal energy of particle -> cluster)."""
    f8 = {k: np.ascontiguousarray(gen[k], dtype=np.float64) for k in
          ("gen_pt", "gen_eta", "gen_phi", "gen_e", "gen_m", "gen_vx", "gen_vy", "gen_vz")}
    pid = np.ascontiguousarray(gen["gen_pid"], dtype=np.int64)
    charge = np.ascontiguousarray(gen["gen_charge"], dtype=np.int64)
    n = pid.shape[0]
    t = _tables(config)
    s_trk, s_dep, *s_cal = (int(x) for x in np.random.SeedSequence(int(seed)).generate_state(5))

    face_eta, face_phi, dep_eta, dep_phi, reach = _propagate(
        charge, f8["gen_pt"], f8["gen_eta"], f8["gen_phi"], f8["gen_vx"], f8["gen_vy"], f8["gen_vz"],
        config.b_field, config.r_calo, config.z_calo, config.z_hf, config.max_turning_angle)
    out = _empty_output()

    tf, ti = _tracks(s_trk, pid, charge, f8["gen_pt"], f8["gen_eta"], f8["gen_phi"], f8["gen_vx"],
                     f8["gen_vy"], f8["gen_vz"], face_eta, face_phi, reach, t["trk_f"], t["eff"],
                     t["res_edges"], t["res_a"], t["res_b"], t["radii"], t["disks"], t["station_p"])
    for row, name in enumerate(("pt", "pt_err", "eta", "phi", "p", "eta_calo", "phi_calo", "d0", "z0")):
        out[f"trk_{name}"] = tf[row].astype(np.float32)
    for row, name in enumerate(("charge", "n_hits", "muon_stations", "gen_idx")):
        out[f"trk_{name}"] = ti[row].astype(np.int32)

    cls, e_vis = _classify(pid, f8["gen_e"], f8["gen_m"])
    rows = t["rows"]
    h_calo, h_cell, h_part, h_e = _deposit(s_dep, cls, e_vis, dep_eta, dep_phi, reach, t["par"], t["ipar"],
                                           t["grids"], rows[0]["active"], rows[1]["active"], rows[2]["active"],
                                           rows[0]["gather"], rows[1]["gather"], rows[2]["gather"])

    clu_parts: list[dict[str, np.ndarray]] = []
    contrib: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    n_before = 0
    for ci, layer in enumerate((ClusterLayer.ECAL, ClusterLayer.HCAL, ClusterLayer.HF)):
        sel = h_calo == ci
        eta_min, dgeta, n_eta, n_phi = t["grids"][ci]
        n_eta, n_phi = int(n_eta), int(n_phi)
        r = rows[ci]
        cell_id, cell_e, _, head, nxt = _build_cells(
            s_cal[ci], h_cell[sel], h_part[sel], h_e[sel], n_eta, n_phi, r["noise"], r["gather"], r["lam"])
        ieta = (cell_id // n_phi).astype(np.int64)
        iphi = (cell_id % n_phi).astype(np.int64)
        label, seeds = topo_cluster(ieta, iphi, cell_e, n_eta, n_phi, r["seed"], r["gather"])
        c_eta = eta_min + (ieta + 0.5) * dgeta
        c_phi = -np.pi + (iphi + 0.5) * (2.0 * np.pi / n_phi)
        e, eta, phi, s_eta, s_phi, ncell = cluster_moments(label, seeds, cell_e, c_eta, c_phi)
        g, cc, ce, best, _ = cluster_contributions(label, seeds.shape[0], head, nxt, h_part[sel], h_e[sel], n)
        nc = seeds.shape[0]
        clu_parts.append({
            "clu_layer": np.full(nc, int(layer), dtype=np.int32),
            "clu_e": e, "clu_et": e / np.cosh(eta), "clu_eta": eta, "clu_phi": phi,
            "clu_e_ecal": e if layer == ClusterLayer.ECAL else np.zeros(nc),
            "clu_e_hcal": np.zeros(nc) if layer == ClusterLayer.ECAL else e,
            "clu_sigma_eta": s_eta, "clu_sigma_phi": s_phi, "clu_n_cells": ncell, "clu_gen_idx": best,
        })
        contrib.append((g, cc + n_before, ce))
        n_before += nc
    for name, dt in CLU.branches.items():
        out[name] = np.concatenate([p[name] for p in clu_parts]).astype(dt)
    out["contrib_gen"] = np.concatenate([c[0] for c in contrib]).astype(np.int32)
    out["contrib_clu"] = np.concatenate([c[1] for c in contrib]).astype(np.int32)
    out["contrib_e"] = np.concatenate([c[2] for c in contrib]).astype(np.float32)
    return out


def simulate_chunk(gens: Sequence[Mapping[str, np.ndarray]], seeds: Sequence[int],
                   config: DetectorConfig = DEFAULT_CONFIG) -> list[dict[str, np.ndarray]]:
    """Simulate several events (one seed each); a convenience loop over ``simulate_event``."""
    if len(gens) != len(seeds):
        raise ValueError(f"simulate_chunk: {len(gens)} events but {len(seeds)} seeds")
    return [simulate_event(g, s, config) for g, s in zip(gens, seeds)]
