"""Detector simulation, steps 4-5: calorimeter cells with noise, then clusters with their exact truth.

4. ``_build_cells`` per calorimeter: merge deposits per cell (linked list kept for truth), add Gaussian
   noise to every hit cell, and add noise-only cells. Noise-only cells are drawn from the Gaussian tail
   above the gathering threshold (Poisson count per eta row, Marsaglia tail sampler): cells below that
   threshold can never join or seed a cluster, so this is equivalent to noising all ~130k cells but O(fired).
   (A noise draw that lands on an already fired cell is dropped: a negligible under-count.)
5. ``clustering.topo_cluster`` + moments + exact truth contributions (:func:`cluster_calorimeter`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .clustering import cluster_contributions, cluster_moments, topo_cluster
from .detector_deposits import Calorimeter
from .schema import ClusterLayer

__all__ = ["cluster_calorimeter"]


# --------------------------------------------------------------------------------------------------------
# kernels
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
# one calorimeter: cells -> clusters
# --------------------------------------------------------------------------------------------------------
def cluster_calorimeter(calo: Calorimeter, seed: int, hit_cell: np.ndarray, hit_part: np.ndarray,
                        hit_e: np.ndarray, n_gen: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Cells and clusters of one calorimeter from its deposits (``hit_*`` rows of Deposits).

    Returns the ``clu_*`` branches of its clusters (ordered by seed energy; float64/int before the schema
    cast) and the truth contributions ``{"gen", "clu", "e"}`` with cluster indices local to this calorimeter.
    """
    n_eta, n_phi = calo.n_eta, calo.n_phi
    cell_id, cell_e, _, head, nxt = _build_cells(seed, hit_cell, hit_part, hit_e, n_eta, n_phi, calo.noise,
                                                 calo.gather, calo.lam)
    ieta = (cell_id // n_phi).astype(np.int64)
    iphi = (cell_id % n_phi).astype(np.int64)
    label, seeds = topo_cluster(ieta, iphi, cell_e, n_eta, n_phi, calo.seed, calo.gather)
    c_eta = calo.eta_min + (ieta + 0.5) * calo.deta
    c_phi = -np.pi + (iphi + 0.5) * (2.0 * np.pi / n_phi)
    e, eta, phi, s_eta, s_phi, ncell = cluster_moments(label, seeds, cell_e, c_eta, c_phi)
    g, cc, ce, best, _ = cluster_contributions(label, seeds.shape[0], head, nxt, hit_part, hit_e, n_gen)
    nc = seeds.shape[0]
    ecal = calo.layer == ClusterLayer.ECAL  # HCAL and HF (one layer) clusters count as hadronic
    clusters = {
        "clu_layer": np.full(nc, calo.layer, dtype=np.int32),
        "clu_e": e, "clu_et": e / np.cosh(eta), "clu_eta": eta, "clu_phi": phi,
        "clu_e_ecal": e if ecal else np.zeros(nc),
        "clu_e_hcal": np.zeros(nc) if ecal else e,
        "clu_sigma_eta": s_eta, "clu_sigma_phi": s_phi, "clu_n_cells": ncell, "clu_gen_idx": best,
    }
    return clusters, {"gen": g, "clu": cc, "e": ce}
