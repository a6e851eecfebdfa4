"""Topological calorimeter clustering (CMS particle-flow style) on a sparse list of cells, in Numba.

Why sparse: an event fires a few thousand of the ~125k ECAL cells; the kernels take the fired cells as flat
arrays (eta index, phi index, energy) and a dense cell -> list-position map is built once per call.

Algorithm (the test file holds an independent pure-Python reference of exactly this definition):
  1. A cell is a *seed* if its energy exceeds the seed threshold of its eta row and it is a local maximum
     among its 8 neighbours (ties broken by the smaller cell id ``ieta * n_phi + iphi``).
  2. Seeds are ranked by energy (descending; ties by cell id). Cells above the gathering threshold that are
     connected to a seed through 8-neighbour steps over cells above the gathering threshold are assigned to
     the seed with the fewest steps; equal steps go to the higher-ranked seed. Cluster k = seed of rank k.
  Neighbours wrap around in phi; there is no wrap in eta.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["topo_cluster", "cluster_moments", "cluster_contributions"]


@njit(cache=True)
def topo_cluster(cell_ieta, cell_iphi, cell_e, n_eta, n_phi, seed_thr_row, gather_thr_row):
    """Cluster cells; returns (cell_cluster (i4, -1 = unclustered), seed_cell (i4, one per cluster)).

    Cells must be unique. Thresholds are per eta row (arrays of length n_eta).
    """
    n = cell_e.shape[0]
    cmap = np.full(n_eta * n_phi, -1, dtype=np.int32)
    for i in range(n):
        cmap[cell_ieta[i] * n_phi + cell_iphi[i]] = i

    # 1. seeds: above threshold and local maximum
    is_seed = np.zeros(n, dtype=np.bool_)
    n_seed = 0
    for i in range(n):
        ie = cell_ieta[i]
        if not cell_e[i] > seed_thr_row[ie]:
            continue
        cid = ie * n_phi + cell_iphi[i]
        ok = True
        for de in range(-1, 2):
            je = ie + de
            if je < 0 or je >= n_eta:
                continue
            for dp in range(-1, 2):
                if de == 0 and dp == 0:
                    continue
                jp = (cell_iphi[i] + dp) % n_phi
                j = cmap[je * n_phi + jp]
                if j < 0:
                    continue
                if cell_e[j] > cell_e[i] or (cell_e[j] == cell_e[i] and je * n_phi + jp < cid):
                    ok = False
        if ok:
            is_seed[i] = True
            n_seed += 1

    seeds = np.empty(n_seed, dtype=np.int64)
    k = 0
    for i in range(n):
        if is_seed[i]:
            seeds[k] = i
            k += 1
    # rank: energy descending, ties by cell id (two stable sorts)
    sid = np.empty(n_seed, dtype=np.int64)
    for k in range(n_seed):
        sid[k] = cell_ieta[seeds[k]] * n_phi + cell_iphi[seeds[k]]
    seeds = seeds[np.argsort(sid, kind="mergesort")]
    se = np.empty(n_seed, dtype=np.float64)
    for k in range(n_seed):
        se[k] = -cell_e[seeds[k]]
    seeds = seeds[np.argsort(se, kind="mergesort")]

    # 2. multi-source breadth-first growth; FIFO order keeps each distance layer sorted by seed rank
    label = np.full(n, -1, dtype=np.int32)
    queue = np.empty(n, dtype=np.int64)
    head = 0
    tail = 0
    for k in range(n_seed):
        label[seeds[k]] = k
        queue[tail] = seeds[k]
        tail += 1
    while head < tail:
        i = queue[head]
        head += 1
        ie = cell_ieta[i]
        for de in range(-1, 2):
            je = ie + de
            if je < 0 or je >= n_eta:
                continue
            for dp in range(-1, 2):
                if de == 0 and dp == 0:
                    continue
                j = cmap[je * n_phi + (cell_iphi[i] + dp) % n_phi]
                if j < 0 or label[j] >= 0:
                    continue
                if cell_e[j] > gather_thr_row[je]:
                    label[j] = label[i]
                    queue[tail] = j
                    tail += 1
    return label, seeds.astype(np.int32)


@njit(cache=True)
def cluster_moments(cell_cluster, seed_cell, cell_e, cell_eta, cell_phi):
    """Energy, energy-weighted eta/phi, RMS widths and cell counts of each cluster.

    phi is averaged as an offset from the seed's phi wrapped into [-pi, pi), so clusters across the
    phi = +-pi boundary come out right. Returns (e, eta, phi, sigma_eta, sigma_phi, n_cells).
    """
    nc = seed_cell.shape[0]
    e = np.zeros(nc)
    se = np.zeros(nc)
    sp = np.zeros(nc)
    see = np.zeros(nc)
    spp = np.zeros(nc)
    ncell = np.zeros(nc, dtype=np.int32)
    for i in range(cell_e.shape[0]):
        c = cell_cluster[i]
        if c < 0:
            continue
        w = cell_e[i]
        dphi = _wrap(cell_phi[i] - cell_phi[seed_cell[c]])
        e[c] += w
        se[c] += w * cell_eta[i]
        sp[c] += w * dphi
        see[c] += w * cell_eta[i] * cell_eta[i]
        spp[c] += w * dphi * dphi
        ncell[c] += 1
    eta = np.zeros(nc)
    phi = np.zeros(nc)
    s_eta = np.zeros(nc)
    s_phi = np.zeros(nc)
    for c in range(nc):
        if e[c] > 0.0:
            me = se[c] / e[c]
            mp = sp[c] / e[c]
            eta[c] = me
            phi[c] = _wrap(cell_phi[seed_cell[c]] + mp)
            s_eta[c] = np.sqrt(max(see[c] / e[c] - me * me, 0.0))
            s_phi[c] = np.sqrt(max(spp[c] / e[c] - mp * mp, 0.0))
        else:
            eta[c] = cell_eta[seed_cell[c]]
            phi[c] = cell_phi[seed_cell[c]]
    return e, eta, phi, s_eta, s_phi, ncell


@njit(cache=True)
def cluster_contributions(cell_cluster, n_clusters, cell_head, hit_next, hit_part, hit_e, n_particles):
    """Exact per-(particle, cluster) signal energies from per-cell linked lists of particle deposits.

    ``cell_head[i]`` is the first deposit (index into hit_*) of cell i, ``hit_next`` chains deposits (-1 ends).
    Returns (contrib_gen, contrib_clu, contrib_e, best_gen per cluster (-1: noise only), signal per cluster).
    Entries are ordered by cluster, then particle index.
    """
    n = cell_cluster.shape[0]
    # cells grouped by cluster (counting sort)
    count = np.zeros(n_clusters + 1, dtype=np.int64)
    for i in range(n):
        if cell_cluster[i] >= 0:
            count[cell_cluster[i] + 1] += 1
    for c in range(n_clusters):
        count[c + 1] += count[c]
    order = np.empty(count[n_clusters], dtype=np.int64)
    fill = count[:-1].copy()
    for i in range(n):
        c = cell_cluster[i]
        if c >= 0:
            order[fill[c]] = i
            fill[c] += 1

    acc = np.zeros(n_particles)
    seen = np.zeros(n_particles, dtype=np.bool_)
    touched = np.empty(n_particles, dtype=np.int64)
    cap = 16 + 4 * n_clusters
    out_g = np.empty(cap, dtype=np.int32)
    out_c = np.empty(cap, dtype=np.int32)
    out_e = np.empty(cap, dtype=np.float64)
    m = 0
    best = np.full(n_clusters, -1, dtype=np.int32)
    signal = np.zeros(n_clusters)
    for c in range(n_clusters):
        nt = 0
        for k in range(count[c], count[c + 1]):
            h = cell_head[order[k]]
            while h >= 0:
                p = hit_part[h]
                if not seen[p]:
                    seen[p] = True
                    touched[nt] = p
                    nt += 1
                acc[p] += hit_e[h]
                h = hit_next[h]
        tl = np.sort(touched[:nt])
        best_e = 0.0
        for t in range(nt):
            p = tl[t]
            v = acc[p]
            acc[p] = 0.0
            seen[p] = False
            if v <= 0.0:
                continue
            if m == cap:
                cap *= 2
                out_g = _grow_i4(out_g, cap)
                out_c = _grow_i4(out_c, cap)
                out_e = _grow_f8(out_e, cap)
            out_g[m] = p
            out_c[m] = c
            out_e[m] = v
            m += 1
            signal[c] += v
            if v > best_e:
                best_e = v
                best[c] = p
    return out_g[:m].copy(), out_c[:m].copy(), out_e[:m].copy(), best, signal


@njit(cache=True)
def _wrap(x):
    """Wrap an angle into [-pi, pi)."""
    return (x + np.pi) % (2.0 * np.pi) - np.pi


@njit(cache=True)
def _grow_i4(a, cap):
    b = np.empty(cap, dtype=np.int32)
    b[: a.shape[0]] = a
    return b


@njit(cache=True)
def _grow_f8(a, cap):
    b = np.empty(cap, dtype=np.float64)
    b[: a.shape[0]] = a
    return b
