"""The CMS NanoAOD layout (tree ``Events``, flat ``<Collection>_<field>`` branches with ``n<Collection>``
counters) mapped to the hepzoo schema: generator jets for flash-sim and generator particles.

* ``genjet`` <- ``GenJet_pt/eta/phi/mass`` (counter ``nGenJet``); ``n_const`` <- ``GenJet_nConstituents``
  (required: the flash-sim jet model takes the constituent count, and there is no honest default).
* ``gen`` <- ``GenPart_*`` with ``GenPart_status == 1`` (counter ``nGenPart``): ``pid`` <- ``pdgId``, ``charge``
  from the PDG id (``particle`` package; it must be an exact integer: a quark's 2/3 is an error naming the
  entry), ``e`` from pT, eta and mass. NanoAOD prunes ``GenPart`` (it keeps the hard process, leptons, photons
  and their ancestry, not every hadron), so quantities computed from it (the flash-sim jet content fractions)
  see the stored particles only. Fields NanoAOD lacks take defaults: vertex 0, ``is_pu`` False (pile-up is not
  stored), ``elem_idx`` -1.
* event scalars: ``event_id`` <- ``event``, ``n_pileup`` <- ``Pileup_nPU``, ``weight`` <- ``genWeight``.
"""

from __future__ import annotations

import functools

import awkward as ak
import numpy as np

from hepzoo.datasets.mapping import BranchMapping, CollectionMapping, Derived

__all__ = ["NANOAOD_MAPPING", "pdg_charge"]


@functools.lru_cache(maxsize=4096)
def _charge(pdgid: int) -> float:
    from particle import Particle
    from particle.particle.particle import InvalidParticle, ParticleNotFound

    try:
        charge = Particle.from_pdgid(pdgid).charge
    except (ParticleNotFound, InvalidParticle):
        return float("nan")  # unknown PDG id: refused by the reader (not an integer charge)
    return float("nan") if charge is None else float(charge)


def pdg_charge(pdgid: ak.Array) -> ak.Array:
    """Electric charge (units of e, float) of each PDG id; NaN for ids the PDG table does not know."""
    flat = ak.to_numpy(ak.flatten(pdgid)).astype(np.int64)
    unique, inverse = np.unique(flat, return_inverse=True)
    charges = np.array([_charge(int(p)) for p in unique], dtype=np.float64)[inverse] if flat.size else np.zeros(0)
    return ak.unflatten(charges, ak.num(pdgid))


def _energy(pt: ak.Array, eta: ak.Array, mass: ak.Array) -> ak.Array:
    """E = sqrt((pT cosh eta)^2 + m^2) in float64."""
    pt, eta, mass = (ak.values_astype(x, np.float64) for x in (pt, eta, mass))
    p = pt * np.cosh(eta)
    return np.sqrt(p * p + mass * mass)


NANOAOD_MAPPING = BranchMapping(
    tree="Events",
    name="nanoaod",
    collections={
        "gen": CollectionMapping(
            counter="nGenPart",
            fields={
                "pid": "GenPart_pdgId",
                "charge": Derived(("GenPart_pdgId",), pdg_charge, "charge of the PDG id (particle package)"),
                "pt": "GenPart_pt",
                "eta": "GenPart_eta",
                "phi": "GenPart_phi",
                "m": "GenPart_mass",
                "e": Derived(("GenPart_pt", "GenPart_eta", "GenPart_mass"), _energy, _energy.__doc__ or ""),
            },
            defaults={"vx": 0.0, "vy": 0.0, "vz": 0.0, "is_pu": False, "elem_idx": -1},
            selection=Derived(("GenPart_status",), lambda s: s == 1, "stable particles: status == 1"),
        ),
        "genjet": CollectionMapping(
            counter="nGenJet",
            fields={
                "pt": "GenJet_pt",
                "eta": "GenJet_eta",
                "phi": "GenJet_phi",
                "m": "GenJet_mass",
                "n_const": "GenJet_nConstituents",
            },
        ),
    },
    scalars={"event_id": "event", "n_pileup": "Pileup_nPU", "weight": "genWeight"},
)
