"""Object tables for the flash-simulation models (torch-free; the streaming torch dataset is flashsim_loader).

A flash-sim model maps a *generator-level object* (its ``context``) to the reconstructed object it becomes:
whether it is reconstructed at all (``matched``, trained as an efficiency) and, if so, its reconstructed
properties relative to the generator ones (``target``). Two object kinds:

* ``jet`` — :func:`jet_table`: generator jets (``genjet_``, anti-kt R=0.4 of visible hard-scatter generator
  particles) with pT > :data:`JET_MIN_PT` and |eta| < :data:`JET_MAX_ABS_ETA`. Context columns:
  :class:`JetContext`; target columns: :class:`JetTarget`. ``matched``: a reconstructed jet (``recojet_``,
  jets of the rule-based PF candidates) lies within ΔR < :data:`JET_MATCH_DR`; the closest one is the match.
  Matching is not exclusive (two generator jets may match the same reco jet; rare for R=0.4 jets).
  The *content fractions* are approximate: the energy fractions of charged hadrons, photons, neutral
  hadrons and leptons (e, μ) among the visible hard-scatter generator particles within ΔR < 0.4 of the jet
  axis (not the clustered constituents, which the files do not store); 0 for an empty cone.
* ``track`` — :func:`track_table`: charged generator particles (|charge| > 0, pT > :data:`TRACK_MIN_PT`,
  |eta| < :data:`TRACK_MAX_ABS_ETA`), **hard scatter and pile-up alike** (the tracker sees both; the
  production vertex in the context tells them apart). Context: :class:`TrackContext`; target:
  :class:`TrackTarget`. ``matched``: some track has ``trk_gen_idx`` == the particle's index (the first such
  track is the match).

Every table is ``dict(context float32[N, C], matched bool[N], target float32[N, D], event_index int64[N])``;
``target`` rows of unmatched objects are 0 (meaningless). Without the reco collection (``recojet_`` /
``trk_``: a generator-level file, the input of a flash-sim run) the context is built as usual and nothing is
matched. ``event_index`` is the event's position in the
chunk. Everything is vectorised over the flat content of the chunk (no per-event Python loops).

Angles: Δφ is wrapped into [-π, π). Discrete target columns (:data:`JET_DISCRETE_TARGETS`) hold integers
as floats; the model dequantises them for training and rounds its samples.

:class:`hepzoo.datasets.flashsim_loader.FlashSimDataset` streams batches ``dict(context [B,C] float32, matched [B] bool, target [B,D]
float32)`` from schema files, sharded over DDP ranks x DataLoader workers like
:class:`hepzoo.datasets.loader.MLPFDataset` (work unit = an entry range of one file).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, NamedTuple

import awkward as ak
import numpy as np

from hepzoo.datasets import io, schema

__all__ = [
    "JetContext",
    "JetTarget",
    "TrackContext",
    "TrackTarget",
    "KINDS",
    "KindTables",
    "jet_table",
    "track_table",
    "normalization_stats",
    "reconstruct",
]

JET_MIN_PT = 15.0  # GeV
JET_MAX_ABS_ETA = 2.5
JET_MATCH_DR = 0.2
JET_CONTENT_DR = 0.4
TRACK_MIN_PT = 0.2  # GeV
TRACK_MAX_ABS_ETA = 2.6


class JetContext(enum.IntEnum):
    """Context (condition) columns of a generator jet."""

    LOG_PT = 0  # log(pT / GeV)
    ETA = 1
    SIN_PHI = 2
    COS_PHI = 3
    MASS = 4  # GeV
    N_CONST = 5
    FRAC_CHARGED_HADRON = 6  # energy fractions in the ΔR<0.4 cone (see module docstring)
    FRAC_PHOTON = 7
    FRAC_NEUTRAL_HADRON = 8
    FRAC_LEPTON = 9
    N_PILEUP = 10  # event: number of pile-up interactions
    N_GENJETS = 11  # event: number of selected generator jets (pT, eta cuts above)


class JetTarget(enum.IntEnum):
    """Target columns of the matched reco jet."""

    PT_RESPONSE = 0  # reco pT / gen pT
    DETA = 1  # reco eta - gen eta
    DPHI = 2  # reco phi - gen phi, wrapped
    MASS = 3  # reco mass [GeV]
    N_CONST = 4  # reco number of constituents (discrete)


class TrackContext(enum.IntEnum):
    """Context columns of a charged generator particle."""

    LOG_PT = 0
    ETA = 1
    SIN_PHI = 2
    COS_PHI = 3
    CHARGE = 4
    IS_ELECTRON = 5  # |pid| category one-hot
    IS_MUON = 6
    IS_HADRON = 7  # everything else charged
    VZ = 8  # production vertex z [mm]
    VR = 9  # production vertex transverse radius [mm]


class TrackTarget(enum.IntEnum):
    """Target columns of the matched track."""

    PT_RATIO = 0  # track pT / gen pT
    DETA = 1
    DPHI = 2  # wrapped
    D0 = 3  # transverse impact parameter [mm]
    DZ0 = 4  # z0 - gen vz [mm]


def _names(e: type[enum.IntEnum]) -> tuple[str, ...]:
    return tuple(f.name.lower() for f in e)


JET_CONTEXT_NAMES = _names(JetContext)
JET_TARGET_NAMES = _names(JetTarget)
TRACK_CONTEXT_NAMES = _names(TrackContext)
TRACK_TARGET_NAMES = _names(TrackTarget)
JET_DISCRETE_TARGETS: tuple[JetTarget, ...] = (JetTarget.N_CONST,)
TRACK_DISCRETE_TARGETS: tuple[TrackTarget, ...] = ()

# which collections each table reads (scalars are always read)
JET_COLLECTIONS = ("gen", "genjet", "recojet")
TRACK_COLLECTIONS = ("gen", "trk")
# what the context alone needs (running a trained model on generator-level files: no reco collections)
JET_CONTEXT_COLLECTIONS = ("gen", "genjet")
TRACK_CONTEXT_COLLECTIONS = ("gen",)
# the event scalars the context reads (checked against ``schema.SCALAR_POLICY`` with the collections)
JET_CONTEXT_SCALARS = ("n_pileup",)
TRACK_CONTEXT_SCALARS: tuple[str, ...] = ()

_LEPTON_PIDS = (11, 13)
_PHOTON_PID = 22


# ---- flat helpers ----------------------------------------------------------------------------------------


def wrap_phi(dphi: np.ndarray) -> np.ndarray:
    """Wrap angles into [-π, π)."""
    return (dphi + np.pi) % (2 * np.pi) - np.pi


def _offsets(counts: np.ndarray) -> np.ndarray:
    off = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    return off


def _flat(coll: ak.Array, name: str, dtype: Any = None) -> np.ndarray:
    out = ak.to_numpy(ak.flatten(coll[name], axis=1))
    return out.astype(dtype) if dtype is not None else out


def _counts(coll: ak.Array) -> np.ndarray:
    return np.asarray(ak.num(coll, axis=1), dtype=np.int64)


def _require(events: ak.Array, prefix: str) -> ak.Array:
    if prefix not in events.fields:
        raise io.SchemaError(f"flash-sim table: the chunk has no {prefix!r} collection (fields: {events.fields})")
    return events[prefix]


def _pairs(rows_a: np.ndarray, event_a: np.ndarray, off_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (a, b) pairs of flat rows within the same event: ``rows_a`` are flat indices of A objects,
    ``event_a`` their events, ``off_b`` the offsets of collection B. Returns (a row, flat b index) arrays."""
    nb = off_b[event_a + 1] - off_b[event_a]
    pair_a = np.repeat(rows_a, nb)
    start = np.repeat(off_b[event_a], nb)
    within = np.arange(pair_a.size, dtype=np.int64) - np.repeat(_offsets(nb)[:-1], nb)
    return pair_a, start + within


def _event_of(counts: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


def _n_pileup(events: ak.Array) -> np.ndarray:
    if "n_pileup" in events.fields:
        return ak.to_numpy(events["n_pileup"]).astype(np.float32)
    return np.zeros(len(events), np.float32)


# ---- jet table ------------------------------------------------------------------------------------------


def jet_table(events: ak.Array) -> dict[str, np.ndarray]:
    """Generator-jet table of one chunk (see the module docstring for the selection, matching, columns)."""
    gen, genjet = (_require(events, p) for p in JET_CONTEXT_COLLECTIONS)
    recojet = events["recojet"] if "recojet" in events.fields else None  # absent: context only (inference)
    n_ev = len(events)
    gj_counts = _counts(genjet)
    gj_event = _event_of(gj_counts)
    pt, eta, phi = (_flat(genjet, k, np.float64) for k in ("pt", "eta", "phi"))
    sel = (pt > JET_MIN_PT) & (np.abs(eta) < JET_MAX_ABS_ETA)
    rows = np.flatnonzero(sel)
    ev = gj_event[rows]
    n = rows.size

    ctx = np.zeros((n, len(JetContext)), np.float32)
    ctx[:, JetContext.LOG_PT] = np.log(pt[rows])
    ctx[:, JetContext.ETA] = eta[rows]
    ctx[:, JetContext.SIN_PHI] = np.sin(phi[rows])
    ctx[:, JetContext.COS_PHI] = np.cos(phi[rows])
    ctx[:, JetContext.MASS] = _flat(genjet, "m")[rows]
    ctx[:, JetContext.N_CONST] = _flat(genjet, "n_const")[rows]
    ctx[:, JetContext.N_PILEUP] = _n_pileup(events)[ev]
    ctx[:, JetContext.N_GENJETS] = np.bincount(gj_event[sel], minlength=n_ev)[ev]

    # content fractions: selected jets x visible hard-scatter gen particles of the same event
    g_off = _offsets(_counts(gen))
    pid = np.abs(_flat(gen, "pid"))
    g_eta, g_phi, g_e = (_flat(gen, k, np.float64) for k in ("eta", "phi", "e"))
    visible = ~_flat(gen, "is_pu") & ~np.isin(pid, list(schema.INVISIBLE_PDGIDS))
    pj, pg = _pairs(np.arange(n, dtype=np.int64), ev, g_off)
    dr2 = (g_eta[pg] - eta[rows][pj]) ** 2 + wrap_phi(g_phi[pg] - phi[rows][pj]) ** 2
    inside = visible[pg] & (dr2 < JET_CONTENT_DR**2)
    pj, pg = pj[inside], pg[inside]
    e_in = g_e[pg]
    total = np.bincount(pj, weights=e_in, minlength=n)
    is_lep = np.isin(pid[pg], _LEPTON_PIDS)
    is_pho = pid[pg] == _PHOTON_PID
    charged = _flat(gen, "charge")[pg] != 0
    cats = {
        JetContext.FRAC_CHARGED_HADRON: charged & ~is_lep,
        JetContext.FRAC_PHOTON: is_pho,
        JetContext.FRAC_NEUTRAL_HADRON: ~charged & ~is_pho & ~is_lep,
        JetContext.FRAC_LEPTON: is_lep,
    }
    safe = np.where(total > 0, total, 1.0)
    for col, m in cats.items():
        ctx[:, col] = np.bincount(pj[m], weights=e_in[m], minlength=n) / safe

    tgt = np.zeros((n, len(JetTarget)), np.float32)
    if recojet is None:
        return {"context": ctx, "matched": np.zeros(n, bool), "target": tgt, "event_index": ev}
    # matching: closest reco jet within ΔR < JET_MATCH_DR
    r_eta, r_phi = (_flat(recojet, k, np.float64) for k in ("eta", "phi"))
    r_pt, r_m, r_nc = (_flat(recojet, k) for k in ("pt", "m", "n_const"))
    pj, pr = _pairs(np.arange(n, dtype=np.int64), ev, _offsets(_counts(recojet)))
    dr2 = (r_eta[pr] - eta[rows][pj]) ** 2 + wrap_phi(r_phi[pr] - phi[rows][pj]) ** 2
    close = dr2 < JET_MATCH_DR**2
    pj, pr, dr2 = pj[close], pr[close], dr2[close]
    order = np.lexsort((dr2, pj))  # by jet, then by distance
    jets_with, first = np.unique(pj[order], return_index=True)
    best = pr[order][first]
    matched = np.zeros(n, bool)
    matched[jets_with] = True
    g_rows = rows[jets_with]
    tgt[jets_with, JetTarget.PT_RESPONSE] = r_pt[best] / pt[g_rows]
    tgt[jets_with, JetTarget.DETA] = r_eta[best] - eta[g_rows]
    tgt[jets_with, JetTarget.DPHI] = wrap_phi(r_phi[best] - phi[g_rows])
    tgt[jets_with, JetTarget.MASS] = r_m[best]
    tgt[jets_with, JetTarget.N_CONST] = r_nc[best]
    return {"context": ctx, "matched": matched, "target": tgt, "event_index": ev}


# ---- track table ----------------------------------------------------------------------------------------


def track_table(events: ak.Array) -> dict[str, np.ndarray]:
    """Charged-particle table of one chunk (see the module docstring for the selection, matching, columns)."""
    (gen,) = (_require(events, p) for p in TRACK_CONTEXT_COLLECTIONS)
    trk = events["trk"] if "trk" in events.fields else None  # absent: context only (inference)
    g_counts = _counts(gen)
    g_event = _event_of(g_counts)
    g_off = _offsets(g_counts)
    charge = _flat(gen, "charge")
    pt, eta, phi = (_flat(gen, k, np.float64) for k in ("pt", "eta", "phi"))
    sel = (charge != 0) & (pt > TRACK_MIN_PT) & (np.abs(eta) < TRACK_MAX_ABS_ETA)
    rows = np.flatnonzero(sel)
    n = rows.size
    pid = np.abs(_flat(gen, "pid"))[rows]
    vx, vy, vz = (_flat(gen, k, np.float64)[rows] for k in ("vx", "vy", "vz"))

    ctx = np.zeros((n, len(TrackContext)), np.float32)
    ctx[:, TrackContext.LOG_PT] = np.log(pt[rows])
    ctx[:, TrackContext.ETA] = eta[rows]
    ctx[:, TrackContext.SIN_PHI] = np.sin(phi[rows])
    ctx[:, TrackContext.COS_PHI] = np.cos(phi[rows])
    ctx[:, TrackContext.CHARGE] = charge[rows]
    is_e, is_mu = pid == 11, pid == 13
    ctx[:, TrackContext.IS_ELECTRON] = is_e
    ctx[:, TrackContext.IS_MUON] = is_mu
    ctx[:, TrackContext.IS_HADRON] = ~is_e & ~is_mu
    ctx[:, TrackContext.VZ] = vz
    ctx[:, TrackContext.VR] = np.hypot(vx, vy)

    if trk is None:
        empty = np.zeros((n, len(TrackTarget)), np.float32)
        return {"context": ctx, "matched": np.zeros(n, bool), "target": empty, "event_index": g_event[rows]}
    # matching: flat gen index of each track's particle; the first track of a particle wins
    t_counts = _counts(trk)
    t_event = _event_of(t_counts)
    gidx = _flat(trk, "gen_idx").astype(np.int64)
    ok = (gidx >= 0) & (gidx < g_counts[t_event])
    flat_g = g_off[t_event[ok]] + gidx[ok]
    particles, first = np.unique(flat_g, return_index=True)
    trk_of_gen = np.full(g_off[-1], -1, np.int64)
    trk_of_gen[particles] = np.flatnonzero(ok)[first]
    best = trk_of_gen[rows]
    matched = best >= 0
    m_rows, t = rows[matched], best[matched]
    tgt = np.zeros((n, len(TrackTarget)), np.float32)
    tgt[matched, TrackTarget.PT_RATIO] = _flat(trk, "pt")[t] / pt[m_rows]
    tgt[matched, TrackTarget.DETA] = _flat(trk, "eta")[t] - eta[m_rows]
    tgt[matched, TrackTarget.DPHI] = wrap_phi(_flat(trk, "phi")[t] - phi[m_rows])
    tgt[matched, TrackTarget.D0] = _flat(trk, "d0")[t]
    tgt[matched, TrackTarget.DZ0] = _flat(trk, "z0")[t] - vz[matched]
    return {"context": ctx, "matched": matched, "target": tgt, "event_index": g_event[rows]}


def reconstruct_jets(context: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Jet context rows + (sampled) :class:`JetTarget` rows -> ``pt, eta, phi, m, n_const`` (see :func:`reconstruct`)."""
    C, T = JetContext, JetTarget
    context = np.asarray(context, np.float64)
    target = np.asarray(target, np.float64)
    columns = {
        "pt": np.exp(context[:, C.LOG_PT]) * target[:, T.PT_RESPONSE],
        "eta": context[:, C.ETA] + target[:, T.DETA],
        "phi": wrap_phi(np.arctan2(context[:, C.SIN_PHI], context[:, C.COS_PHI]) + target[:, T.DPHI]),
        "m": target[:, T.MASS],
        "n_const": np.rint(target[:, T.N_CONST]),
    }
    return _objects(columns, {"n_const": np.int32})


def reconstruct_tracks(context: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Track context rows + (sampled) :class:`TrackTarget` rows -> ``pt, eta, phi, charge, d0, z0``."""
    C, T = TrackContext, TrackTarget
    context = np.asarray(context, np.float64)
    target = np.asarray(target, np.float64)
    columns = {
        "pt": np.exp(context[:, C.LOG_PT]) * target[:, T.PT_RATIO],
        "eta": context[:, C.ETA] + target[:, T.DETA],
        "phi": wrap_phi(np.arctan2(context[:, C.SIN_PHI], context[:, C.COS_PHI]) + target[:, T.DPHI]),
        "charge": np.rint(context[:, C.CHARGE]),
        "d0": target[:, T.D0],
        "z0": target[:, T.DZ0] + context[:, C.VZ],
    }
    return _objects(columns, {"charge": np.int32})


def _objects(columns: dict[str, np.ndarray], dtypes: dict[str, Any]) -> dict[str, np.ndarray]:
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow gives inf: the runtime refuses it, no warning
        return {k: v.astype(dtypes.get(k, np.float32)) for k, v in columns.items()}


class KindTables(NamedTuple):
    """The data side of one flash-sim object kind (the model-facing entry is ``hepzoo.models.families``)."""

    table: Callable[[ak.Array], dict[str, np.ndarray]]  # events -> object table (see the module docstring)
    collections: tuple[str, ...]  # what the table reads for training (reco collections included)
    context_collections: tuple[str, ...]  # what the context alone reads (a run on generator-level files)
    context_scalars: tuple[str, ...]  # event scalars the context reads
    reconstruct: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]  # context + target -> objects
    context_names: tuple[str, ...]  # context columns, in order
    target_names: tuple[str, ...]  # target columns, in order


JET = KindTables(jet_table, JET_COLLECTIONS, JET_CONTEXT_COLLECTIONS, JET_CONTEXT_SCALARS, reconstruct_jets,
                 JET_CONTEXT_NAMES, JET_TARGET_NAMES)  # fmt: skip
TRACK = KindTables(track_table, TRACK_COLLECTIONS, TRACK_CONTEXT_COLLECTIONS, TRACK_CONTEXT_SCALARS,
                   reconstruct_tracks, TRACK_CONTEXT_NAMES, TRACK_TARGET_NAMES)  # fmt: skip
# the object kinds by name (a flash-sim config's ``data.kind``); adding a kind: its enums, table and
# reconstruction above, one record here, and its ObjectKind in hepzoo.models.families
KINDS: dict[str, KindTables] = {"jet": JET, "track": TRACK}


def reconstruct(kind: str, context: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Invert the target definitions: context rows + (sampled) targets -> reconstructed objects in physical
    units, the form a flash-sim run writes. ``jet``: ``pt, eta, phi, m, n_const``; ``track``:
    ``pt, eta, phi, charge, d0, z0``. The generator quantities come from the context columns."""
    if kind not in KINDS:
        raise ValueError(f"unknown flash-sim kind {kind!r}; choose one of {sorted(KINDS)}")
    return KINDS[kind].reconstruct(context, target)


def normalization_stats(table: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(context_mean, context_std, target_mean, target_std), float32, for ``model.set_normalization``:
    context over all rows, target over matched rows only. Constant columns get std 1."""
    c = np.asarray(table["context"], np.float64)
    t = np.asarray(table["target"], np.float64)[np.asarray(table["matched"], bool)]
    if len(c) == 0 or len(t) == 0:
        raise ValueError("normalization_stats: the table has no rows (or no matched rows)")

    def ms(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = x.std(axis=0)
        return x.mean(axis=0).astype(np.float32), np.where(s > 1e-6, s, 1.0).astype(np.float32)

    return (*ms(c), *ms(t))
