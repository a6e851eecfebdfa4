"""MLPF element rows from in-memory event chunks, without torch (the runtime and the trainer share them).

* :func:`element_features` — one row per element (the event's tracks, then its clusters), columns in the order of
  ``schema.ElementFeature``; features that do not apply to an element type are 0. What ``Family.encode`` of the MLPF
  family is, so ``hepzoo run`` featurises events without importing torch.
* :func:`element_targets` — the element-aligned ``tgt`` collection as (class, regression) rows, regression columns
  in the order of ``schema.TargetFeature``.
* :func:`element_counts` — tracks and clusters per event.

The torch loader that pads these rows into training batches is :mod:`hepzoo.datasets.loader`.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from hepzoo.datasets import schema
from hepzoo.datasets.dtypes import SchemaError

__all__ = ["N_FEATURES", "N_TARGETS", "element_counts", "element_features", "element_targets", "offsets_from_counts"]

EF = schema.ElementFeature
TF = schema.TargetFeature
N_FEATURES = len(EF)
N_TARGETS = len(TF)

_LAYER_TO_TYPE = {
    schema.ClusterLayer.ECAL: schema.ElementType.ECAL_CLUSTER,
    schema.ClusterLayer.HCAL: schema.ElementType.HCAL_CLUSTER,
    schema.ClusterLayer.HF: schema.ElementType.HF_CLUSTER,
}


def _flat(coll: ak.Array, name: str) -> np.ndarray:
    return ak.to_numpy(ak.flatten(coll[name], axis=1))


def _require(events: ak.Array, prefix: str) -> ak.Array:
    if prefix not in events.fields:
        raise SchemaError(f"the chunk has no {prefix!r} collection (fields: {events.fields})")
    return events[prefix]


def offsets_from_counts(counts: np.ndarray) -> np.ndarray:
    off = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    return off


def element_counts(events: ak.Array) -> tuple[np.ndarray, np.ndarray]:
    """(number of tracks, number of clusters) per event, int64."""
    ntrk = np.asarray(ak.num(_require(events, "trk"), axis=1), dtype=np.int64)
    nclu = np.asarray(ak.num(_require(events, "clu"), axis=1), dtype=np.int64)
    return ntrk, nclu


def _element_positions(ntrk: np.ndarray, nclu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row of each flat track and each flat cluster in the element array, and element offsets."""
    off = offsets_from_counts(ntrk + nclu)
    trk_off = offsets_from_counts(ntrk)
    clu_off = offsets_from_counts(nclu)
    nb = len(ntrk)
    trk_rows = np.arange(trk_off[-1]) + np.repeat(off[:nb] - trk_off[:nb], ntrk)
    clu_rows = np.arange(clu_off[-1]) + np.repeat(off[:nb] + ntrk - clu_off[:nb], nclu)
    return trk_rows, clu_rows, off


def element_features(events: ak.Array) -> tuple[np.ndarray, np.ndarray]:
    """Element feature rows ``float32[N_elem, len(ElementFeature)]`` and offsets ``int64[B+1]``."""
    trk = _require(events, "trk")
    clu = _require(events, "clu")
    ntrk, nclu = element_counts(events)
    trk_rows, clu_rows, off = _element_positions(ntrk, nclu)
    x = np.zeros((int(off[-1]), N_FEATURES), dtype=np.float32)

    t = np.zeros((trk_rows.size, N_FEATURES), dtype=np.float32)
    t[:, EF.TYPE] = schema.ElementType.TRACK
    t[:, EF.PT] = _flat(trk, "pt")
    t[:, EF.ETA] = _flat(trk, "eta")
    phi = _flat(trk, "phi")
    t[:, EF.SIN_PHI] = np.sin(phi)
    t[:, EF.COS_PHI] = np.cos(phi)
    t[:, EF.E] = _flat(trk, "p")
    t[:, EF.CHARGE] = _flat(trk, "charge")
    t[:, EF.ETA_CALO] = _flat(trk, "eta_calo")
    phic = _flat(trk, "phi_calo")
    t[:, EF.SIN_PHI_CALO] = np.sin(phic)
    t[:, EF.COS_PHI_CALO] = np.cos(phic)
    t[:, EF.PT_ERR] = _flat(trk, "pt_err")
    t[:, EF.D0] = _flat(trk, "d0")
    t[:, EF.Z0] = _flat(trk, "z0")
    t[:, EF.N_HITS] = _flat(trk, "n_hits")
    t[:, EF.MUON_STATIONS] = _flat(trk, "muon_stations")
    x[trk_rows] = t

    c = np.zeros((clu_rows.size, N_FEATURES), dtype=np.float32)
    layer = _flat(clu, "layer")
    lut = np.zeros(max(int(v) for v in schema.ClusterLayer) + 1, dtype=np.float32)
    for lay, typ in _LAYER_TO_TYPE.items():
        lut[int(lay)] = int(typ)
    bad = (layer < 0) | (layer >= lut.size)
    bad[~bad] = lut[layer[~bad]] == 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        ev = int(np.searchsorted(offsets_from_counts(nclu), i, side="right") - 1)
        raise SchemaError(f"event {ev}: cluster has unknown clu_layer {int(layer[i])}")
    c[:, EF.TYPE] = lut[layer]
    c[:, EF.PT] = _flat(clu, "et")
    c[:, EF.ETA] = _flat(clu, "eta")
    phi = _flat(clu, "phi")
    c[:, EF.SIN_PHI] = np.sin(phi)
    c[:, EF.COS_PHI] = np.cos(phi)
    c[:, EF.E] = _flat(clu, "e")
    c[:, EF.E_ECAL] = _flat(clu, "e_ecal")
    c[:, EF.E_HCAL] = _flat(clu, "e_hcal")
    c[:, EF.SIGMA_ETA] = _flat(clu, "sigma_eta")
    c[:, EF.SIGMA_PHI] = _flat(clu, "sigma_phi")
    c[:, EF.N_CELLS] = _flat(clu, "n_cells")
    x[clu_rows] = c
    return x, off


def element_targets(events: ak.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets (cls ``int64[N]``, reg ``float32[N, len(TargetFeature)]``, offsets ``int64[B+1]``).

    Raises :class:`~hepzoo.datasets.dtypes.SchemaError` if an event's tgt count != ntrk + nclu.
    """
    tgt = _require(events, "tgt")
    ntrk, nclu = element_counts(events)
    ntgt = np.asarray(ak.num(tgt, axis=1), dtype=np.int64)
    if not np.array_equal(ntgt, ntrk + nclu):
        i = int(np.flatnonzero(ntgt != ntrk + nclu)[0])
        eid = f" (event_id {int(events['event_id'][i])})" if "event_id" in events.fields else ""
        raise SchemaError(
            f"event {i}{eid}: tgt is not element-aligned: {ntgt[i]} target slots for "
            f"{ntrk[i]} tracks + {nclu[i]} clusters"
        )
    cls = _flat(tgt, "cls").astype(np.int64)
    reg = np.empty((cls.size, N_TARGETS), dtype=np.float32)
    reg[:, TF.CHARGE] = _flat(tgt, "charge")
    reg[:, TF.PT] = _flat(tgt, "pt")
    reg[:, TF.ETA] = _flat(tgt, "eta")
    reg[:, TF.SIN_PHI] = _flat(tgt, "sin_phi")
    reg[:, TF.COS_PHI] = _flat(tgt, "cos_phi")
    reg[:, TF.E] = _flat(tgt, "e")
    return cls, reg, offsets_from_counts(ntgt)
