"""Branch mappings: read another producer's ROOT files (e.g. Delphes) into the hepzoo in-memory layout.

A :class:`BranchMapping` says, for each schema collection, where its fields come from in a foreign tree:

* a source branch name (``"Particle.PT"``) — read as is and cast to the schema dtype;
* a :class:`Derived` — a small documented callable over one or more source branches (unit conversion,
  derived quantities, type codes);
* nothing — the field takes the collection's default (e.g. ``-1`` for ``gen_idx``; see ``defaults``).

A collection may also carry a ``selection`` (a :class:`Derived` returning a boolean mask per object), applied
to every field of that collection (e.g. Delphes ``Particle.Status == 1``). Event scalars map the same way;
``event_id`` defaults to the entry number in its file and ``process`` to ``Process.EXTERNAL``.

A collection may also have a fallback (``BranchMapping.fallbacks``): a :class:`ComputedCollection` built from
other branches (Delphes generator jets clustered from ``Particle`` when the file has no ``GenJet``), used
when the file lacks the primary collection's branches. Reading rules (dtypes, counters, exact integers):
:mod:`hepzoo.datasets.mapped`.

Collections not named in a mapping are absent from the chunks read through it (Delphes has no ``pf``/``tgt``).
Source branches are looked up by their ROOT branch name (``TBranch.GetName()``), so nested Delphes
branches (``Particle/Particle.PT``) and flat ones written by uproot (``Particle.PT``) both resolve.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import awkward as ak

from hepzoo.datasets import schema

Scalar = int | float | bool


@dataclass(frozen=True)
class Derived:
    """A field computed from source branches: ``fn(*[array of each input])`` -> array (same jagged shape)."""

    inputs: tuple[str, ...]
    fn: Callable[..., ak.Array]
    doc: str = ""


Source = str | Derived


@dataclass(frozen=True)
class CollectionMapping:
    """How one schema collection is built from a foreign jagged collection.

    ``counter``: the source counter branch (checked against the length of every source field), or None.
    ``fields``: schema field name -> source branch name or :class:`Derived`.
    ``defaults``: schema field name -> constant for fields the producer lacks.
    Every schema field of the collection must appear in exactly one of ``fields`` / ``defaults``.
    """

    counter: str | None
    fields: Mapping[str, Source]
    defaults: Mapping[str, Scalar] = field(default_factory=dict)
    selection: Derived | None = None

    def source_branches(self) -> list[str]:
        names: list[str] = []
        for src in list(self.fields.values()) + ([self.selection] if self.selection else []):
            names.extend([src] if isinstance(src, str) else src.inputs)
        if self.counter:
            names.append(self.counter)
        return list(dict.fromkeys(names))


@dataclass(frozen=True)
class ComputedCollection:
    """A whole schema collection computed from source branches: ``fn(*[array of each input])`` -> jagged
    records with every schema field of the collection (e.g. jets clustered from particles)."""

    inputs: tuple[str, ...]
    fn: Callable[..., ak.Array]
    doc: str = ""
    counter: str | None = None
    defaults: Mapping[str, Scalar] = field(default_factory=dict)

    def source_branches(self) -> list[str]:
        return list(dict.fromkeys(self.inputs + ((self.counter,) if self.counter else ())))


@dataclass(frozen=True)
class BranchMapping:
    """A foreign tree layout: tree name, collections and event scalars.

    ``scalars``: schema scalar -> source branch name, :class:`Derived` over flat (per-event) branches, or a
    constant. Scalars not listed: ``event_id`` = entry number in the file, ``process`` = EXTERNAL,
    ``n_pileup`` = -1, ``weight`` = 1, ``seed`` = -1.
    """

    tree: str
    collections: Mapping[str, CollectionMapping]
    scalars: Mapping[str, Source | Scalar] = field(default_factory=dict)
    fallbacks: Mapping[str, ComputedCollection] = field(default_factory=dict)
    name: str = ""  # layout name (hepzoo run --layout)

    def __post_init__(self) -> None:
        unknown_fallbacks = [p for p in self.fallbacks if p not in schema.COLLECTIONS]
        if unknown_fallbacks:
            raise ValueError(f"BranchMapping: unknown schema collections {unknown_fallbacks} in fallbacks")
        for prefix, cm in self.collections.items():
            if prefix not in schema.COLLECTIONS:
                raise ValueError(f"BranchMapping: unknown schema collection {prefix!r}")
            want = set(schema.COLLECTIONS[prefix].field_names)
            have = set(cm.fields) | set(cm.defaults)
            both = set(cm.fields) & set(cm.defaults)
            if want != have or both:
                raise ValueError(
                    f"BranchMapping for {prefix!r}: missing {sorted(want - have)}, unknown {sorted(have - want)},"
                    f" both mapped and defaulted {sorted(both)}"
                )
        unknown = set(self.scalars) - set(schema.EVENT_SCALARS)
        if unknown:
            raise ValueError(f"BranchMapping: unknown event scalars {sorted(unknown)}")

    def source_branches(self, collections: list[str] | None = None) -> list[str]:
        names: list[str] = []
        for prefix, cm in self.collections.items():
            if collections is None or prefix in collections:
                names.extend(cm.source_branches())
        for src in self.scalars.values():
            if isinstance(src, str):
                names.append(src)
            elif isinstance(src, Derived):
                names.extend(src.inputs)
        return list(dict.fromkeys(names))


SCALAR_DEFAULTS: dict[str, Scalar] = {
    "process": int(schema.Process.EXTERNAL),
    "n_pileup": -1,
    "weight": 1.0,
    "seed": -1,
}  # event_id: entry number in the file


def _tower_layer(eta: ak.Array, eem: ak.Array, ehad: ak.Array) -> ak.Array:
    """Delphes towers -> ClusterLayer: HF for |eta| > 3, else ECAL if Eem >= Ehad, else HCAL."""
    ecal_or_hcal = ak.where(eem >= ehad, int(schema.ClusterLayer.ECAL), int(schema.ClusterLayer.HCAL))
    return ak.where(abs(eta) > 3.0, int(schema.ClusterLayer.HF), ecal_or_hcal)


# Delphes (classes/DelphesClasses.h): GenParticle -> gen (stable only), Track -> trk, Tower -> clu.
# Units already match (GeV, mm, rad). Fields Delphes lacks take defaults: no truth links (-1), no hit counts,
# towers are single cells (n_cells = 1, zero widths), no pT error (older Delphes has no ErrorPT).
DELPHES_MAPPING = BranchMapping(
    tree="Delphes",
    collections={
        "gen": CollectionMapping(
            counter="Particle_size",
            fields={
                "pid": "Particle.PID",
                "charge": "Particle.Charge",
                "pt": "Particle.PT",
                "eta": "Particle.Eta",
                "phi": "Particle.Phi",
                "e": "Particle.E",
                "m": "Particle.Mass",
                "vx": "Particle.X",
                "vy": "Particle.Y",
                "vz": "Particle.Z",
                "is_pu": Derived(("Particle.IsPU",), lambda x: x != 0, "IsPU (Int_t) -> bool"),
            },
            defaults={"elem_idx": -1},
            selection=Derived(("Particle.Status",), lambda s: s == 1, "stable particles: Status == 1"),
        ),
        "trk": CollectionMapping(
            counter="Track_size",
            fields={
                "pt": "Track.PT",
                "eta": "Track.Eta",
                "phi": "Track.Phi",
                "p": "Track.P",
                "charge": "Track.Charge",
                "eta_calo": "Track.EtaOuter",
                "phi_calo": "Track.PhiOuter",
                "d0": "Track.D0",
                "z0": "Track.DZ",
            },
            defaults={"pt_err": 0.0, "n_hits": -1, "muon_stations": 0, "gen_idx": -1},
        ),
        "clu": CollectionMapping(
            counter="Tower_size",
            fields={
                "layer": Derived(("Tower.Eta", "Tower.Eem", "Tower.Ehad"), _tower_layer, _tower_layer.__doc__ or ""),
                "e": "Tower.E",
                "et": "Tower.ET",
                "eta": "Tower.Eta",
                "phi": "Tower.Phi",
                "e_ecal": "Tower.Eem",
                "e_hcal": "Tower.Ehad",
            },
            defaults={"sigma_eta": 0.0, "sigma_phi": 0.0, "n_cells": 1, "gen_idx": -1},
        ),
    },
)



def _sum(a: ak.Array, b: ak.Array) -> ak.Array:
    return a + b


def delphes_genjets(status: ak.Array, pid: ak.Array, is_pu: ak.Array, pt: ak.Array, eta: ak.Array, phi: ak.Array,
                    e: ak.Array) -> ak.Array:
    """Generator jets of a Delphes file without ``GenJet``: anti-kt R=0.4 (:func:`hepzoo.datasets.jets.antikt_jets`,
    pT > 5 GeV) of the stable (``Status == 1``) visible (no neutrinos/invisible PDG ids) hard-scatter
    (``IsPU == 0``) particles: the definition of our ``genjet`` collection."""
    import numpy as np

    from hepzoo.datasets.jets import antikt_jets

    invisible = ak.unflatten(np.isin(np.abs(ak.to_numpy(ak.flatten(pid))), list(schema.INVISIBLE_PDGIDS)), ak.num(pid))
    keep = (status == 1) & (is_pu == 0) & ~invisible
    return antikt_jets(pt[keep], eta[keep], phi[keep], e[keep])


# Delphes jets (GenJet branch, class Jet): n_const = NCharged + NNeutrals (the constituents are TRefs)
DELPHES_GENJET = CollectionMapping(
    counter="GenJet_size",
    fields={
        "pt": "GenJet.PT",
        "eta": "GenJet.Eta",
        "phi": "GenJet.Phi",
        "m": "GenJet.Mass",
        "n_const": Derived(("GenJet.NCharged", "GenJet.NNeutrals"), _sum, "NCharged + NNeutrals"),
    },
)

DELPHES_CLUSTERED_GENJET = ComputedCollection(
    inputs=("Particle.Status", "Particle.PID", "Particle.IsPU", "Particle.PT", "Particle.Eta", "Particle.Phi", "Particle.E"),
    fn=delphes_genjets,
    doc=delphes_genjets.__doc__ or "",
    counter="Particle_size",
)

DELPHES_MAPPING = BranchMapping(
    tree=DELPHES_MAPPING.tree,
    collections={**DELPHES_MAPPING.collections, "genjet": DELPHES_GENJET},
    scalars=DELPHES_MAPPING.scalars,
    fallbacks={"genjet": DELPHES_CLUSTERED_GENJET},
    name="delphes",
)
