"""Missing transverse momentum (MET): reconstructed from candidates, true from the generator's neutrinos.

Reconstructed MET is the magnitude of minus the vector pT sum of all candidates of an event (MLPF or the
rule-based PF alike). The generator-level MET is the vector pT sum of the stable invisible particles
(neutrinos, |PDG id| 12, 14, 16) of ``gen_``. The response ``reco / gen`` is only meaningful when there is
real MET, so it is measured for events with gen MET above :data:`MIN_GEN_MET` (semi- and di-leptonic ttbar).
"""

from __future__ import annotations

import awkward as ak
import numpy as np

INVISIBLE_PIDS = (12, 14, 16)
MIN_GEN_MET = 20.0  # GeV
MET_EDGES = np.array([20.0, 40.0, 70.0, 120.0, 500.0])  # GeV, bins of gen MET


def missing_et(pt: ak.Array, phi: ak.Array) -> np.ndarray:
    """Per event: |-(sum of candidate pT vectors)| in GeV (0 for an event without candidates)."""
    mx = ak.to_numpy(ak.sum(pt * np.cos(phi), axis=1)).astype(np.float64)
    my = ak.to_numpy(ak.sum(pt * np.sin(phi), axis=1)).astype(np.float64)
    return np.hypot(mx, my)


def gen_missing_et(events: ak.Array) -> np.ndarray:
    """Per event: the pT of the vector sum of the generator neutrinos (the true MET) in GeV."""
    gen = events.gen
    apid = np.abs(gen.pid)
    invisible = apid < 0  # all False, same structure
    for pid in INVISIBLE_PIDS:
        invisible = invisible | (apid == pid)
    nu = gen[invisible]
    return missing_et(nu.pt, nu.phi)


def met_response(reco_met: np.ndarray, gen_met: np.ndarray, min_gen_met: float = MIN_GEN_MET) -> tuple[np.ndarray, np.ndarray]:
    """(gen MET, reco/gen MET) of the events with gen MET above ``min_gen_met``."""
    reco_met, gen_met = np.asarray(reco_met, np.float64), np.asarray(gen_met, np.float64)
    if reco_met.shape != gen_met.shape:
        raise ValueError(f"met_response: {reco_met.size} reconstructed but {gen_met.size} generator MET values")
    sel = gen_met > min_gen_met
    return gen_met[sel], reco_met[sel] / gen_met[sel]
