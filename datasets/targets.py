"""Element-aligned MLPF targets: one target slot per input element (tracks first, then clusters).

Assignment, in the spirit of the MLPF datasets (jpata/particleflow):
1. a visible generator particle with a track is assigned to that track's slot;
2. otherwise to the cluster that received most of its energy;
3. what remains (visible but below every threshold) is merged into the nearest assigned slot in (eta, phi),
   so the summed target energy equals the summed visible generator energy of the event.
A slot's target is the four-momentum sum of its particles; its class is that of its most energetic directly
assigned particle. A charged particle that reaches a cluster slot without a track cannot be measured as
charged, so it is relabelled (hadron -> neutral hadron, electron -> photon, muon -> neutral hadron).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.spatial import cKDTree

from .schema import INVISIBLE_PDGIDS, TGT, TargetClass

# Generator particles beyond the forward calorimeter's reach (|eta| > 5) are not visible to the detector.
VISIBLE_ABS_ETA = 5.0


def particle_class(pid: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """TargetClass of generator particles from PDG id and charge."""
    apid = np.abs(pid)
    cls = np.where(charge != 0, TargetClass.CHARGED_HADRON, TargetClass.NEUTRAL_HADRON).astype(np.int32)
    cls[apid == 22] = TargetClass.PHOTON
    cls[apid == 11] = TargetClass.ELECTRON
    cls[apid == 13] = TargetClass.MUON
    return cls


def visible_mask(gen: Mapping[str, np.ndarray]) -> np.ndarray:
    invisible = np.isin(np.abs(gen["gen_pid"]), list(INVISIBLE_PDGIDS))
    return ~invisible & (np.abs(gen["gen_eta"]) < VISIBLE_ABS_ETA)


def build_targets(gen: Mapping[str, np.ndarray], det: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the ``tgt_*`` branches and ``gen_elem_idx`` for one event.

    ``det`` holds the event's ``trk_*`` and ``clu_*`` branches and the truth contributions
    ``contrib_gen``, ``contrib_clu``, ``contrib_e`` of the detector simulation.
    """
    n_gen = len(gen["gen_pid"])
    n_trk = len(det["trk_pt"])
    n_clu = len(det["clu_e"])
    n_slot = n_trk + n_clu
    slot_of = np.full(n_gen, -1, dtype=np.int64)
    visible = visible_mask(gen)

    # 1. tracks
    trk_gen = det["trk_gen_idx"].astype(np.int64)
    has_gen = trk_gen >= 0
    slot_of[trk_gen[has_gen]] = np.nonzero(has_gen)[0]

    # 2. the cluster with the largest contribution of each particle not yet assigned
    c_gen = det["contrib_gen"].astype(np.int64)
    c_clu = det["contrib_clu"].astype(np.int64)
    c_e = det["contrib_e"].astype(np.float64)
    if len(c_gen):
        order = np.lexsort((-c_e, c_gen))  # by particle, largest energy first
        first = np.ones(len(order), dtype=bool)
        first[1:] = c_gen[order][1:] != c_gen[order][:-1]
        best_gen, best_clu = c_gen[order][first], c_clu[order][first]
        free = slot_of[best_gen] < 0
        slot_of[best_gen[free]] = n_trk + best_clu[free]
    slot_of[~visible] = -1
    direct = slot_of >= 0

    # 3. merge the visible remainder into the nearest assigned slot
    leftover = np.nonzero(visible & ~direct)[0]
    if len(leftover) and n_slot:
        slot_eta, slot_phi = _slot_positions(det)
        if direct.any():
            assigned_slots = np.unique(slot_of[direct])
        else:  # nothing passed a threshold: the leftovers define the slots' classes themselves
            assigned_slots = np.arange(n_slot)
            direct = visible.copy()
        slot_of[leftover] = assigned_slots[
            _nearest(slot_eta[assigned_slots], slot_phi[assigned_slots], gen["gen_eta"][leftover], gen["gen_phi"][leftover])
        ]

    return _slot_targets(gen, slot_of, direct, n_trk, n_slot)


def _slot_targets(gen, slot_of: np.ndarray, direct: np.ndarray, n_trk: int, n_slot: int) -> dict[str, np.ndarray]:
    pt = gen["gen_pt"].astype(np.float64)
    phi = gen["gen_phi"].astype(np.float64)
    px, py = pt * np.cos(phi), pt * np.sin(phi)
    pz = pt * np.sinh(gen["gen_eta"].astype(np.float64))
    energy = gen["gen_e"].astype(np.float64)
    assigned = slot_of >= 0
    sums = np.zeros((n_slot, 4))
    for column, values in enumerate((px, py, pz, energy)):
        np.add.at(sums[:, column], slot_of[assigned], values[assigned])

    # class and charge from the most energetic directly assigned particle of each slot
    cls = np.zeros(n_slot, dtype=np.int32)
    charge = np.zeros(n_slot, dtype=np.int32)
    idx = np.nonzero(direct)[0]
    if len(idx):
        order = idx[np.lexsort((-energy[idx], slot_of[idx]))]
        lead = np.ones(len(order), dtype=bool)
        lead[1:] = slot_of[order][1:] != slot_of[order][:-1]
        lead_particles = order[lead]
        slots = slot_of[lead_particles]
        particle_cls = particle_class(gen["gen_pid"][lead_particles], gen["gen_charge"][lead_particles])
        particle_charge = gen["gen_charge"][lead_particles].astype(np.int32)
        in_cluster = slots >= n_trk
        relabel = {
            TargetClass.CHARGED_HADRON: TargetClass.NEUTRAL_HADRON,
            TargetClass.ELECTRON: TargetClass.PHOTON,
            TargetClass.MUON: TargetClass.NEUTRAL_HADRON,
        }
        for charged, neutral in relabel.items():
            particle_cls[in_cluster & (particle_cls == charged)] = neutral
        particle_charge[in_cluster] = 0
        cls[slots] = particle_cls
        charge[slots] = particle_charge

    spx, spy, spz, se = sums.T
    spt = np.hypot(spx, spy)
    with np.errstate(divide="ignore", invalid="ignore"):
        seta = np.where(spt > 0, np.arcsinh(spz / np.where(spt > 0, spt, 1.0)), 0.0)
    sphi = np.arctan2(spy, spx)
    has = cls != TargetClass.NONE
    out = {
        "tgt_cls": cls,
        "tgt_charge": charge,
        "tgt_pt": np.where(has, spt, 0.0),
        "tgt_eta": np.where(has, seta, 0.0),
        "tgt_sin_phi": np.where(has, np.sin(sphi), 0.0),
        "tgt_cos_phi": np.where(has, np.cos(sphi), 0.0),
        "tgt_e": np.where(has, se, 0.0),
        "gen_elem_idx": slot_of.astype(np.int32),
    }
    return {k: v.astype(TGT.branches.get(k, np.dtype(np.int32))) for k, v in out.items()}


def _slot_positions(det: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(eta, phi) of each element: tracks at the calorimeter surface, clusters at their centroid."""
    eta = np.concatenate([det["trk_eta_calo"], det["clu_eta"]]).astype(np.float64)
    phi = np.concatenate([det["trk_phi_calo"], det["clu_phi"]]).astype(np.float64)
    return eta, phi


def _nearest(eta: np.ndarray, phi: np.ndarray, query_eta: np.ndarray, query_phi: np.ndarray) -> np.ndarray:
    """Index of the nearest (eta, phi) point for each query, phi periodic (k-d tree over three phi copies)."""
    n = len(eta)
    points = np.concatenate([np.column_stack([eta, phi + shift]) for shift in (0.0, 2 * np.pi, -2 * np.pi)])
    _, index = cKDTree(points).query(np.column_stack([query_eta, query_phi]))
    return index % n
