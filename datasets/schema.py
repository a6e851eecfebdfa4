"""The event schema: the single source of truth for branch names, dtypes, units and feature order.

Every other module (generation, I/O, loaders, models, cards, C++) reads names and orders from here.
A ROOT file in this schema holds one TTree ``events`` with one entry per event. Each collection is a
prefix: the branches ``<prefix>_<field>`` are jagged and share the counter ``n<prefix>`` (this is what
uproot writes for ``ak.zip`` of per-object fields under the name ``<prefix>``).

Units: GeV for energies and momenta, mm for lengths, radians for angles, phi in [-pi, pi).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

TREE_NAME = "events"


class Process(enum.IntEnum):
    """Value of the ``process`` event scalar: which source produced the event."""

    TTBAR = 1
    QCD = 2
    ZLL = 3
    GUN = 4
    MINBIAS = 5
    HEPMC = 6
    EXTERNAL = 7  # read from another producer's file (e.g. Delphes) with a branch mapping


class ClusterLayer(enum.IntEnum):
    """Calorimeter a cluster was formed in (``clu_layer``)."""

    ECAL = 1
    HCAL = 2
    HF = 3  # forward calorimeter, 3.0 < |eta| < 5.0, no ECAL/HCAL separation


class ElementType(enum.IntEnum):
    """Type of an MLPF input element (first input feature)."""

    TRACK = 1
    ECAL_CLUSTER = 2
    HCAL_CLUSTER = 3
    HF_CLUSTER = 4


class TargetClass(enum.IntEnum):
    """MLPF target class of an element slot (``tgt_cls``) and PF candidate category."""

    NONE = 0
    CHARGED_HADRON = 1
    NEUTRAL_HADRON = 2
    PHOTON = 3
    ELECTRON = 4
    MUON = 5


# Representative |PDG id| of each target class, used for ``pf_pid`` and MLPF outputs (sign = -charge for
# leptons, charge for hadrons, as in PDG convention).
CLASS_PDGID = {
    TargetClass.CHARGED_HADRON: 211,
    TargetClass.NEUTRAL_HADRON: 130,
    TargetClass.PHOTON: 22,
    TargetClass.ELECTRON: 11,
    TargetClass.MUON: 13,
}


@dataclass(frozen=True)
class Field:
    name: str
    dtype: str  # numpy dtype string
    doc: str


@dataclass(frozen=True)
class Collection:
    """A jagged collection: branches ``<prefix>_<field>`` sharing the counter ``n<prefix>``."""

    prefix: str
    fields: tuple[Field, ...]
    doc: str

    @property
    def counter(self) -> str:
        return f"n{self.prefix}"

    def branch(self, field: str) -> str:
        return f"{self.prefix}_{field}"

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def branches(self) -> dict[str, np.dtype]:
        return {self.branch(f.name): np.dtype(f.dtype) for f in self.fields}


def _fields(*spec: tuple[str, str, str]) -> tuple[Field, ...]:
    return tuple(Field(*s) for s in spec)


GEN = Collection(
    "gen",
    _fields(
        ("pid", "i4", "PDG id"),
        ("charge", "i4", "electric charge in units of e"),
        ("pt", "f4", "transverse momentum [GeV]"),
        ("eta", "f4", "pseudorapidity"),
        ("phi", "f4", "azimuth [rad]"),
        ("e", "f4", "energy [GeV]"),
        ("m", "f4", "mass [GeV]"),
        ("vx", "f4", "production vertex x [mm]"),
        ("vy", "f4", "production vertex y [mm]"),
        ("vz", "f4", "production vertex z [mm]"),
        ("is_pu", "bool", "true for particles of overlaid pile-up interactions"),
        ("elem_idx", "i4", "MLPF target slot (index into tgt_) this particle was assigned to; -1 if invisible"),
    ),
    "stable (final-state) generator particles, hard scatter first, then pile-up",
)

TRK = Collection(
    "trk",
    _fields(
        ("pt", "f4", "reconstructed transverse momentum [GeV]"),
        ("pt_err", "f4", "expected absolute pT resolution [GeV]"),
        ("eta", "f4", "pseudorapidity at the vertex"),
        ("phi", "f4", "azimuth at the vertex [rad]"),
        ("p", "f4", "momentum magnitude [GeV]"),
        ("charge", "i4", "charge (+1/-1)"),
        ("eta_calo", "f4", "eta of the helix at the ECAL front face"),
        ("phi_calo", "f4", "phi of the helix at the ECAL front face"),
        ("d0", "f4", "transverse impact parameter [mm]"),
        ("z0", "f4", "longitudinal impact parameter [mm]"),
        ("n_hits", "i4", "number of tracker hits"),
        ("muon_stations", "i4", "number of muon stations with a matched segment"),
        ("gen_idx", "i4", "index into gen_ of the particle that made the track (-1: none)"),
    ),
    "reconstructed tracks",
)

CLU = Collection(
    "clu",
    _fields(
        ("layer", "i4", "ClusterLayer of the cluster"),
        ("e", "f4", "calibrated energy [GeV]"),
        ("et", "f4", "transverse energy [GeV]"),
        ("eta", "f4", "energy-weighted eta"),
        ("phi", "f4", "energy-weighted phi"),
        ("e_ecal", "f4", "energy in ECAL cells [GeV]"),
        ("e_hcal", "f4", "energy in HCAL cells [GeV]"),
        ("sigma_eta", "f4", "energy-weighted RMS width in eta"),
        ("sigma_phi", "f4", "energy-weighted RMS width in phi"),
        ("n_cells", "i4", "number of cells"),
        ("gen_idx", "i4", "index into gen_ of the particle that contributed most energy (-1: noise)"),
    ),
    "calorimeter clusters",
)

PF = Collection(
    "pf",
    _fields(
        ("pid", "i4", "PDG id of the candidate type (211, 130, 22, 11, 13, signed)"),
        ("cls", "i4", "TargetClass of the candidate"),
        ("charge", "i4", "charge"),
        ("pt", "f4", "transverse momentum [GeV]"),
        ("eta", "f4", "pseudorapidity"),
        ("phi", "f4", "azimuth [rad]"),
        ("e", "f4", "energy [GeV]"),
        ("trk_idx", "i4", "index into trk_ of its track (-1: neutral)"),
        ("clu_idx", "i4", "index into clu_ of its main cluster (-1: none)"),
    ),
    "candidates of the rule-based particle-flow baseline",
)

TGT = Collection(
    "tgt",
    _fields(
        ("cls", "i4", "TargetClass"),
        ("charge", "i4", "charge"),
        ("pt", "f4", "target pT [GeV]"),
        ("eta", "f4", "target eta"),
        ("sin_phi", "f4", "sin of target phi"),
        ("cos_phi", "f4", "cos of target phi"),
        ("e", "f4", "target energy [GeV]"),
    ),
    "MLPF targets, element-aligned: slot i is element i of [tracks..., clusters...]",
)

GENJET = Collection(
    "genjet",
    _fields(
        ("pt", "f4", "jet pT [GeV]"),
        ("eta", "f4", "jet eta"),
        ("phi", "f4", "jet phi"),
        ("m", "f4", "jet mass [GeV]"),
        ("n_const", "i4", "number of constituents"),
    ),
    "anti-kt R=0.4 jets of visible hard-scatter generator particles",
)

RECOJET = Collection(
    "recojet",
    GENJET.fields,
    "anti-kt R=0.4 jets of rule-based PF candidates",
)

COLLECTIONS: dict[str, Collection] = {c.prefix: c for c in (GEN, TRK, CLU, PF, TGT, GENJET, RECOJET)}

EVENT_SCALARS: dict[str, np.dtype] = {
    "event_id": np.dtype("i8"),
    "process": np.dtype("i4"),
    "n_pileup": np.dtype("i4"),
    "weight": np.dtype("f4"),
    "seed": np.dtype("i8"),
}

# ---- model input / target feature order (MLPF) -------------------------------------------------------
# Elements are tracks followed by clusters; each gets one row of ELEMENT_FEATURES. Features that do not
# apply to an element type are zero.


class ElementFeature(enum.IntEnum):
    TYPE = 0  # ElementType
    PT = 1  # track pT, or cluster ET
    ETA = 2
    SIN_PHI = 3
    COS_PHI = 4
    E = 5  # track p, or cluster energy
    CHARGE = 6
    ETA_CALO = 7  # track only
    SIN_PHI_CALO = 8
    COS_PHI_CALO = 9
    PT_ERR = 10
    D0 = 11
    Z0 = 12
    N_HITS = 13
    MUON_STATIONS = 14
    E_ECAL = 15  # cluster only
    E_HCAL = 16
    SIGMA_ETA = 17
    SIGMA_PHI = 18
    N_CELLS = 19


ELEMENT_FEATURE_NAMES: tuple[str, ...] = tuple(f.name.lower() for f in ElementFeature)


class TargetFeature(enum.IntEnum):
    """Order of the regression targets (after the class) in MLPF target tensors."""

    CHARGE = 0
    PT = 1
    ETA = 2
    SIN_PHI = 3
    COS_PHI = 4
    E = 5


TARGET_FEATURE_NAMES: tuple[str, ...] = tuple(f.name.lower() for f in TargetFeature)

# Neutrinos and other particles that never interact with the detector.
INVISIBLE_PDGIDS = frozenset({12, 14, 16, 1000022, 1000039})


def all_branches() -> dict[str, np.dtype]:
    """Every data branch of the schema (counters excluded) with its dtype."""
    out = dict(EVENT_SCALARS)
    for coll in COLLECTIONS.values():
        out.update(coll.branches)
    return out


# ---- value policy: the physical range of every input feature ---------------------------------------------------
# Declared once, here; enforced by the runtime checks (MLPF element rows and the collections a model reads, before
# any selection cut), by ``hepzoo run`` (``--on-bad-event error|skip``) and by the reader with ``check_values=True``.
# Every value must be finite and within ``MAX_ABS_VALUE`` (GeV, mm; PDG ids excepted): beyond any collider measurement, so such
# a value is corrupt or mis-mapped. Fields a rule below names have a tighter range on top.

MAX_ABS_VALUE = 1e6
MAX_ABS_ETA = 10.0  # detector objects (tracks reach |eta| 2.5, their calorimeter impact and HF clusters ~9.5)
MAX_ABS_ETA_GEN = 30.0  # generator objects: a 7 TeV particle with pT 1e-9 GeV has |eta| ~ 30
# a track's helix at the ECAL front face: a soft track curling along the beam reaches the face's plane far
# forward (|eta_calo| up to ~12 in our ttbar samples, 8 of 481 711 tracks above 10), so it gets the generator bound
MAX_ABS_ETA_CALO = MAX_ABS_ETA_GEN
ANGLE_TOLERANCE = 1e-6  # float32 rounding of pi and of sin/cos at the edges of their ranges


@dataclass(frozen=True)
class ValueRule:
    """The physical range of one feature (on top of finite and ``|x| <= MAX_ABS_VALUE``): ``low``/``high``
    bounds (``positive``: ``> 0`` rather than ``>= low``), ``integer`` values, ``allowed`` values only, or
    ``pdg``: a valid PDG id (integer; checked with the ``particle`` package where it is installed)."""

    low: float | None = None
    high: float | None = None
    positive: bool = False
    integer: bool = False
    allowed: tuple[int, ...] | None = None
    pdg: bool = False
    what: str = ""  # how the messages name the rule, e.g. "phi in [-pi, pi]"

    def tests(self, values: np.ndarray):
        """Yield ``(bad mask, reason)`` for each part of the rule, in order (finite and magnitude first)."""
        values = np.asarray(values)
        if values.dtype.kind == "b" or values.size == 0:
            return
        x = values.astype(np.float64, copy=False)
        finite = np.isfinite(x)
        yield ~finite, "not a finite value"
        if not self.pdg:  # PDG ids run past 1e6 (SUSY 1000022, nuclei 10LZZZAAAI): their validity bounds them
            yield finite & (np.abs(x) > MAX_ABS_VALUE), f"|value| above {MAX_ABS_VALUE:g}, not a physical value"
        if self.positive:
            yield x <= 0, "must be > 0"
        elif self.low == 0 and self.high is None:
            yield x < 0, "negative, must be >= 0"
        elif self.low is not None or self.high is not None:
            lo = -np.inf if self.low is None else self.low
            hi = np.inf if self.high is None else self.high
            yield (x < lo) | (x > hi), f"outside the physical range ({self.what or f'[{lo:g}, {hi:g}]'})"
        if self.integer or self.pdg or self.allowed is not None:
            yield finite & (x != np.round(x)), "not an integer"
        if self.allowed is not None:
            yield finite & ~np.isin(x, np.array(self.allowed, dtype=np.float64)), (
                f"not one of {self.what or ', '.join(map(str, self.allowed))}")
        if self.pdg:
            yield finite & (x == np.round(x)) & ~_valid_pdgids(x), "not a PDG particle id (particle package)"


def _valid_pdgids(x: np.ndarray) -> np.ndarray:
    """Per value: a valid PDG id (``particle.pdgid.is_valid``, one call per distinct value; True for every
    integer when the ``particle`` package is not installed)."""
    try:
        from particle.pdgid import is_valid
    except ImportError:  # pragma: no cover - particle is a dependency of the foreign layouts
        return np.ones(x.shape, dtype=bool)
    unique, inverse = np.unique(x, return_inverse=True)
    ok = np.array([abs(u) < 2**31 and bool(is_valid(int(u))) for u in unique], dtype=bool)
    return ok[inverse].reshape(x.shape)


NON_NEGATIVE = ValueRule(low=0.0)
POSITIVE = ValueRule(low=0.0, positive=True)
COUNT = ValueRule(low=0.0, integer=True, what="a count, >= 0")
COUNT_OR_UNKNOWN = ValueRule(low=-1.0, integer=True, what="a count >= 0, or -1: not stored by the producer")
INDEX = ValueRule(low=-1.0, integer=True, what="an index, >= -1")
ETA = ValueRule(low=-MAX_ABS_ETA, high=MAX_ABS_ETA, what=f"|eta| <= {MAX_ABS_ETA:g}")
ETA_GEN = ValueRule(low=-MAX_ABS_ETA_GEN, high=MAX_ABS_ETA_GEN, what=f"|eta| <= {MAX_ABS_ETA_GEN:g}")
ETA_CALO = ValueRule(low=-MAX_ABS_ETA_CALO, high=MAX_ABS_ETA_CALO, what=f"|eta| <= {MAX_ABS_ETA_CALO:g}")
PHI = ValueRule(low=-np.pi - ANGLE_TOLERANCE, high=np.pi + ANGLE_TOLERANCE, what="phi in [-pi, pi]")
UNIT = ValueRule(low=-1 - ANGLE_TOLERANCE, high=1 + ANGLE_TOLERANCE, what="[-1, 1]")
CHARGE = ValueRule(allowed=(-1, 0, 1), what="-1, 0, +1")
TRACK_CHARGE = ValueRule(allowed=(-1, 1), what="-1, +1 (a track charge)")
PDGID = ValueRule(pdg=True)
FINITE = ValueRule()  # every other number: finite and |x| <= MAX_ABS_VALUE


def _enum_rule(e: type[enum.IntEnum], exclude: tuple[int, ...] = ()) -> ValueRule:
    values = tuple(int(v) for v in e if int(v) not in exclude)
    return ValueRule(allowed=values, what=f"{e.__name__} {', '.join(map(str, values))}")


_KINEMATICS_GEN = {"pt": NON_NEGATIVE, "eta": ETA_GEN, "phi": PHI, "e": NON_NEGATIVE, "m": NON_NEGATIVE}
_JET = {"pt": POSITIVE, "phi": PHI, "m": NON_NEGATIVE, "n_const": COUNT}

# collection prefix -> field -> rule (fields not named here: FINITE; bool fields: no rule)
VALUE_POLICY: dict[str, dict[str, ValueRule]] = {
    "gen": {"pid": PDGID, "charge": CHARGE, **_KINEMATICS_GEN, "elem_idx": INDEX},
    "trk": {"pt": POSITIVE, "pt_err": NON_NEGATIVE, "eta": ETA, "phi": PHI, "p": POSITIVE, "charge": TRACK_CHARGE,
            "eta_calo": ETA_CALO, "phi_calo": PHI, "n_hits": COUNT_OR_UNKNOWN, "muon_stations": COUNT, "gen_idx": INDEX},
    "clu": {"layer": _enum_rule(ClusterLayer), "e": NON_NEGATIVE, "et": NON_NEGATIVE, "eta": ETA, "phi": PHI,
            "e_ecal": NON_NEGATIVE, "e_hcal": NON_NEGATIVE, "sigma_eta": NON_NEGATIVE, "sigma_phi": NON_NEGATIVE,
            "n_cells": COUNT, "gen_idx": INDEX},
    "pf": {"pid": PDGID, "cls": _enum_rule(TargetClass, exclude=(int(TargetClass.NONE),)), "charge": CHARGE,
           "pt": NON_NEGATIVE, "eta": ETA, "phi": PHI, "e": NON_NEGATIVE, "trk_idx": INDEX, "clu_idx": INDEX},
    "tgt": {"cls": _enum_rule(TargetClass), "charge": CHARGE, "pt": NON_NEGATIVE, "eta": ETA_GEN, "sin_phi": UNIT,
            "cos_phi": UNIT, "e": NON_NEGATIVE},
    "genjet": {**_JET, "eta": ETA_GEN},
    "recojet": {**_JET, "eta": ETA},
}

# event scalar -> rule (scalars not named here are not checked: identifiers, not features)
SCALAR_POLICY: dict[str, ValueRule] = {
    "n_pileup": COUNT_OR_UNKNOWN,  # foreign layouts without pile-up information: -1
    "weight": FINITE,
}

# MLPF element row column -> rule (the columns are computed from trk_/clu_ fields, see ``ElementFeature``); tracks
# also need charge -1 or +1 (TRACK_CHARGE), checked with the element type.
ELEMENT_POLICY: dict[ElementFeature, ValueRule] = {
    ElementFeature.TYPE: _enum_rule(ElementType),
    ElementFeature.PT: NON_NEGATIVE,
    ElementFeature.ETA: ETA,
    ElementFeature.SIN_PHI: UNIT,
    ElementFeature.COS_PHI: UNIT,
    ElementFeature.E: NON_NEGATIVE,
    ElementFeature.CHARGE: CHARGE,
    ElementFeature.ETA_CALO: ETA_CALO,
    ElementFeature.SIN_PHI_CALO: UNIT,
    ElementFeature.COS_PHI_CALO: UNIT,
    ElementFeature.PT_ERR: NON_NEGATIVE,
    ElementFeature.N_HITS: COUNT_OR_UNKNOWN,  # Delphes tracks: -1
    ElementFeature.MUON_STATIONS: COUNT,
    ElementFeature.E_ECAL: NON_NEGATIVE,
    ElementFeature.E_HCAL: NON_NEGATIVE,
    ElementFeature.SIGMA_ETA: NON_NEGATIVE,
    ElementFeature.SIGMA_PHI: NON_NEGATIVE,
    ElementFeature.N_CELLS: COUNT,
}


def value_rule(prefix: str, field: str) -> ValueRule:
    """The rule of field ``field`` of collection ``prefix`` (``FINITE`` where the policy names none)."""
    return VALUE_POLICY.get(prefix, {}).get(field, FINITE)
