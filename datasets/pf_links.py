"""PF baseline, step 1: links between tracks and clusters, and the blocks they form.

A track is linked to an ECAL (HCAL) cluster when its extrapolated position at the calorimeter lies within the
cluster's extent, ``dR < max(link_k_width * width, link_dr_min_<layer>)``; every such link joins the block,
and each cluster remembers its closest linked track. ECAL clusters without a track link are linked to their
closest HCAL cluster within ``ecal_hcal_link_dr``. Blocks are the connected components (union-find) of the
elements: tracks 0..nt-1, then clusters nt..nt+nc-1. HF clusters are never linked (each is its own block).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from .schema import ClusterLayer

__all__ = ["Links", "link_blocks"]

_ECAL = int(ClusterLayer.ECAL)
_HCAL = int(ClusterLayer.HCAL)


class Links(NamedTuple):
    """Links and blocks of one event (elements: tracks, then clusters)."""

    clu_trk: np.ndarray  # closest linked track of each cluster (-1: none)
    clu_dr: np.ndarray  # its distance (1e9: none)
    ecal_hcal: np.ndarray  # ECAL cluster without a track -> closest HCAL cluster (-1: none)
    block: np.ndarray  # block id (its smallest element) of each element
    order: np.ndarray  # elements sorted by block (stable: tracks first, then clusters, by index)


@njit(cache=True)
def _dphi(a, b):
    """a - b wrapped into [-pi, pi) (the same in pf_kernel: kernels call only functions of their own file,
    Numba's cache being per file)."""
    d = a - b
    while d >= math.pi:
        d -= 2.0 * math.pi
    while d < -math.pi:
        d += 2.0 * math.pi
    return d


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
def link_blocks(trk_eta_calo, trk_phi_calo, clu_layer, clu_eta, clu_phi, clu_sigma_eta, clu_sigma_phi,
                link_k_width, link_dr_min_ecal, link_dr_min_hcal, ecal_hcal_link_dr):
    """Links of one event; the link sizes are the PFConfig fields of the same names."""
    nt = trk_eta_calo.size
    nc = clu_eta.size
    ne = nt + nc

    clu_trk = np.full(nc, -1, np.int64)  # closest linked track
    clu_dr = np.full(nc, 1e9)
    ecal_hcal = np.full(nc, -1, np.int64)  # ECAL cluster -> closest HCAL cluster
    parent = np.arange(ne)
    for c in range(nc):
        lay = clu_layer[c]
        if lay != _ECAL and lay != _HCAL:
            continue
        w = math.sqrt(clu_sigma_eta[c] ** 2 + clu_sigma_phi[c] ** 2)
        rmin = link_dr_min_ecal if lay == _ECAL else link_dr_min_hcal
        r = max(link_k_width * w, rmin)
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
    rEH = ecal_hcal_link_dr
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
    return Links(clu_trk=clu_trk, clu_dr=clu_dr, ecal_hcal=ecal_hcal, block=block, order=order)
