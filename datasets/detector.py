"""Parametrised CMS-like detector simulation: generator particles -> tracks and calorimeter clusters.

Why parametrised: the zoo needs millions of events with realistic tracks/clusters and exact truth links
(which particle fed which cluster, with how much energy) at a few ms per event; Geant4 is out of scope.

This module assembles the event; each heavy step is an ``@njit(cache=True)`` kernel on flat arrays in its own
module, all constants in DetectorConfig:
  1.-2. ``detector_tracks``: helix propagation to the calorimeter surfaces, reconstructed tracks.
  3.    ``detector_deposits``: the calorimeter table (keyed by ClusterLayer) and the energy deposits.
  4.-5. ``detector_cells``: cells with noise per calorimeter, topological clusters and their exact truth.

Output conventions: clusters are ECAL, then HCAL, then HF, each ordered by seed energy; ``clu_e`` is at the
EM scale (see detector_config); ECAL clusters have e_ecal = e, HCAL and HF clusters e_hcal = e (HF has
one layer). Tracks of loopers keep eta_calo/phi_calo = their vertex eta/phi. Electrons: no bremsstrahlung.

Random numbers: each kernel seeds Numba's generator with a child of ``np.random.SeedSequence(seed)``, so
(gen, seed, config) -> bit-identical output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from .detector_cells import cluster_calorimeter
from .detector_config import DEFAULT_CONFIG, DetectorConfig
from .detector_deposits import DepositTables, classify, deposit_energy, deposit_tables
from .detector_tracks import TrackTables, propagate, reconstruct_tracks, track_tables
from .schema import CLU, TRK

__all__ = ["simulate_event", "simulate_chunk", "GEN_INPUTS"]

GEN_INPUTS = ("gen_pid", "gen_charge", "gen_pt", "gen_eta", "gen_phi", "gen_e", "gen_m",
              "gen_vx", "gen_vy", "gen_vz")


class _Tables(NamedTuple):
    tracks: TrackTables
    deposits: DepositTables


def _tables(config: DetectorConfig) -> _Tables:
    """The kernels' tables for ``config`` (cached on the config instance)."""
    key = "kernel_tables"
    if key not in config._derived:
        config._derived[key] = _Tables(tracks=track_tables(config), deposits=deposit_tables(config))
    return config._derived[key]


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
    calos = t.deposits.calos
    # one child seed for the tracks, one for the deposits, one per calorimeter (in ClusterLayer order)
    s_trk, s_dep, *s_cal = (int(x) for x in np.random.SeedSequence(int(seed)).generate_state(2 + len(calos)))

    face_eta, face_phi, dep_eta, dep_phi, reach = propagate(
        charge, f8["gen_pt"], f8["gen_eta"], f8["gen_phi"], f8["gen_vx"], f8["gen_vy"], f8["gen_vz"],
        config.b_field, config.r_calo, config.z_calo, config.z_hf, config.max_turning_angle)
    out = _empty_output()
    out.update(reconstruct_tracks(s_trk, pid, charge, f8, face_eta, face_phi, reach, t.tracks))

    cls, e_vis = classify(pid, f8["gen_e"], f8["gen_m"])
    dep = deposit_energy(s_dep, cls, e_vis, dep_eta, dep_phi, reach, t.deposits)

    clu_parts: list[dict[str, np.ndarray]] = []
    contrib: list[dict[str, np.ndarray]] = []
    n_before = 0
    for (layer, calo), s in zip(calos.items(), s_cal):
        sel = dep.layer == layer
        clusters, c = cluster_calorimeter(calo, s, dep.cell[sel], dep.part[sel], dep.e[sel], n)
        clu_parts.append(clusters)
        contrib.append({"gen": c["gen"], "clu": c["clu"] + n_before, "e": c["e"]})
        n_before += clusters["clu_e"].shape[0]
    for name, dt in CLU.branches.items():
        out[name] = np.concatenate([p[name] for p in clu_parts]).astype(dt)
    out["contrib_gen"] = np.concatenate([c["gen"] for c in contrib]).astype(np.int32)
    out["contrib_clu"] = np.concatenate([c["clu"] for c in contrib]).astype(np.int32)
    out["contrib_e"] = np.concatenate([c["e"] for c in contrib]).astype(np.float32)
    return out


def simulate_chunk(gens: Sequence[Mapping[str, np.ndarray]], seeds: Sequence[int],
                   config: DetectorConfig = DEFAULT_CONFIG) -> list[dict[str, np.ndarray]]:
    """Simulate several events (one seed each); a convenience loop over ``simulate_event``."""
    if len(gens) != len(seeds):
        raise ValueError(f"simulate_chunk: {len(gens)} events but {len(seeds)} seeds")
    return [simulate_event(g, s, config) for g, s in zip(gens, seeds)]
