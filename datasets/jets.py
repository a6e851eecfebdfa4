"""Anti-kt jet clustering of many events at once with fastjet's awkward interface."""

from __future__ import annotations

import awkward as ak
import fastjet
import numpy as np
import vector

vector.register_awkward()

JET_RADIUS = 0.4
JET_MIN_PT = 5.0  # GeV; both generator and reconstructed jets are stored above this


def antikt_jets(
    pt: ak.Array, eta: ak.Array, phi: ak.Array, energy: ak.Array, radius: float = JET_RADIUS, min_pt: float = JET_MIN_PT
) -> ak.Array:
    """Jets (fields pt, eta, phi, m, n_const; float32/int32) of jagged per-event inputs, sorted by pT.

    Returns a jagged array of records with one list per input event, empty lists for events without jets.
    """
    n_events = len(pt)
    counts = ak.to_numpy(ak.num(pt, axis=1))
    pt_f = ak.to_numpy(ak.flatten(pt)).astype(np.float64)
    eta_f = ak.to_numpy(ak.flatten(eta)).astype(np.float64)
    phi_f = ak.to_numpy(ak.flatten(phi)).astype(np.float64)
    e_f = ak.to_numpy(ak.flatten(energy)).astype(np.float64)
    px, py, pz = pt_f * np.cos(phi_f), pt_f * np.sin(phi_f), pt_f * np.sinh(eta_f)
    # massless inputs may carry E slightly below |p| after float32 storage: keep E >= |p|
    e_f = np.maximum(e_f, np.sqrt(px**2 + py**2 + pz**2))
    particles = ak.zip(
        {
            "px": ak.unflatten(px, counts),
            "py": ak.unflatten(py, counts),
            "pz": ak.unflatten(pz, counts),
            "E": ak.unflatten(e_f, counts),
        },
        with_name="Momentum4D",
    )
    if n_events == 0 or counts.sum() == 0:
        return _empty_jets(n_events)
    sequence = fastjet.ClusterSequence(particles, fastjet.JetDefinition(fastjet.antikt_algorithm, radius))
    jets = sequence.inclusive_jets(min_pt=min_pt)
    n_const = ak.num(sequence.constituents(min_pt=min_pt), axis=2)
    jets = ak.zip({"px": jets.px, "py": jets.py, "pz": jets.pz, "E": jets.E}, with_name="Momentum4D")
    order = ak.argsort(jets.pt, axis=1, ascending=False)
    jets, n_const = jets[order], n_const[order]
    jet_counts = ak.to_numpy(ak.num(jets, axis=1))
    fields = {
        "pt": jets.pt,
        "eta": jets.eta,
        "phi": jets.phi,
        "m": jets.tau,
        "n_const": n_const,
    }
    out = {}
    for name, values in fields.items():
        flat = ak.to_numpy(ak.flatten(values))
        dtype = np.int32 if name == "n_const" else np.float32
        if name == "m":  # tiny negative m^2 from rounding: report zero mass
            flat = np.maximum(np.nan_to_num(flat, nan=0.0), 0.0)
        out[name] = ak.unflatten(flat.astype(dtype), jet_counts)
    return ak.zip(out)


def _empty_jets(n_events: int) -> ak.Array:
    counts = np.zeros(n_events, dtype=np.int64)
    fields = {name: ak.unflatten(np.zeros(0, dtype=np.float32), counts) for name in ("pt", "eta", "phi", "m")}
    fields["n_const"] = ak.unflatten(np.zeros(0, dtype=np.int32), counts)
    return ak.zip(fields)
