"""Rule-based particle-flow (PF) baseline: the reference our MLPF models must beat.

In the spirit of CMS particle flow (CMS-PRF-14-001, JINST 12 (2017) P10003), reduced to the elements of the
hepzoo schema (tracks with their helix position at the calorimeter, ECAL/HCAL/HF clusters):

1. **Links.** A track is linked to an ECAL (HCAL) cluster when its extrapolated position at the calorimeter
   (``trk_eta_calo``, ``trk_phi_calo``) lies within the cluster's extent,
   ``dR < max(k * width, dR_min(layer))``. Every such link joins the block (so calorimeter energy shared by
   several tracks is compared with all of them); for per-track bookkeeping (electron/muon clusters, the
   candidate's main cluster) each cluster remembers only its *closest* linked track. ECAL clusters
   without a track link are linked to their closest HCAL cluster within ``ecal_hcal_link_dr``. Blocks are the
   connected components of these links (union-find).
2. **Muons**: tracks with ``muon_stations >= muon_min_stations``; a MIP deposit is removed from their clusters.
3. **Electrons**: a track whose linked ECAL energy has E/p compatible with 1, small H/E, and a narrow shower;
   energy = resolution-weighted mean of ECAL energy and track momentum; its clusters are consumed.
4. **Charged hadrons**: all remaining tracks, momentum from the track; when the hadron-calibrated block
   calorimeter energy is compatible with the summed track momenta, the momenta are rescaled to the
   resolution-weighted mean of both (matters only at high p, where the calorimeter is the more precise).
5. **Neutrals**: the block's calibrated calorimeter excess over the summed track momenta, when larger than
   ``neutral_nsigma`` times the expected calorimeter resolution, becomes a photon (ECAL part, first) and a
   neutral hadron (the rest). Blocks without tracks: each HCAL cluster (with the ECAL clusters linked to it)
   becomes a hadron-calibrated neutral hadron; ECAL clusters alone become photons; HF clusters become photons
   when EM-like, neutral hadrons otherwise.

No truth (``*_gen_idx``) information is read.

Where things are: this module runs the PF on an event (:func:`run_pf`); ``pf_links`` makes the links and
blocks (step 1, a Numba kernel), ``pf_kernel`` the candidates of each block (steps 2-5, a Numba kernel),
``pf_config`` holds :class:`PFConfig`, ``pf_calibration`` fits its calibration constants. The public names of
all of them are importable from here.

Calibration: cluster energies (``clu_e``) are at the electromagnetic scale. Hadron showers need the
non-compensation (e/h) correction ``E = a_e(E_raw) * E_ecal + a_h(E_raw) * E_hcal`` whose knots live in
:class:`PFConfig` (see :func:`fit_calibration` for how they are obtained).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping

import numpy as np

from .pf_calibration import fit_calibration, single_particle_gen
from .pf_config import DEFAULT_PF_CONFIG, PFConfig, hadron_energy
from .pf_kernel import pf_candidates
from .pf_links import link_blocks
from .schema import CLASS_PDGID, CLU, PF, TRK, TargetClass

__all__ = ["PFConfig", "DEFAULT_PF_CONFIG", "run_pf", "empty_pf", "hadron_energy", "fit_calibration",
           "single_particle_gen"]

_F32_MINUS_PI = np.nextafter(np.float32(-np.pi), np.float32(0.0))  # smallest float32 >= -pi

# the event branches the PF reads (schema field -> dtype handed to the kernels); never *_gen_idx
_TRK_INPUTS = {"pt": np.float64, "pt_err": np.float64, "eta": np.float64, "phi": np.float64, "p": np.float64,
               "charge": np.int64, "eta_calo": np.float64, "phi_calo": np.float64, "muon_stations": np.int64}
_CLU_INPUTS = {"layer": np.int64, "e": np.float64, "eta": np.float64, "phi": np.float64, "e_ecal": np.float64,
               "sigma_eta": np.float64, "sigma_phi": np.float64, "n_cells": np.int64}

# |PDG id| of each TargetClass value
_PDG_ABS = np.zeros(max(TargetClass) + 1, np.int64)
_PDG_ABS[[int(c) for c in CLASS_PDGID]] = list(CLASS_PDGID.values())


@functools.cache
def _arg_names(kernel) -> tuple[str, ...]:
    return tuple(inspect.signature(kernel.py_func).parameters)


def _call(kernel, args: Mapping[str, object]):
    """Call a Numba kernel with each argument taken from ``args`` by its name (passed by position: Numba's
    keyword-argument path costs tens of microseconds per call)."""
    return kernel(*[args[name] for name in _arg_names(kernel)])


def empty_pf() -> dict[str, np.ndarray]:
    """An event without PF candidates: every ``pf_*`` branch, empty, with the schema dtype."""
    return {name: np.zeros(0, dtype=dt) for name, dt in PF.branches.items()}


def _get(det: Mapping[str, np.ndarray], coll, field: str, dtype) -> np.ndarray:
    name = coll.branch(field)
    if name not in det:
        raise KeyError(f"run_pf: input branch {name!r} is missing")
    return np.ascontiguousarray(np.asarray(det[name]), dtype=dtype)


def run_pf(det: Mapping[str, np.ndarray], config: PFConfig = DEFAULT_PF_CONFIG) -> dict[str, np.ndarray]:
    """Run the rule-based PF on one event.

    ``det`` holds the event's ``trk_*`` and ``clu_*`` branches as flat arrays (``*_gen_idx`` are ignored).
    Returns every ``pf_*`` branch of :data:`hepzoo.datasets.schema.PF` as flat arrays with the schema dtypes.
    """
    trk = {TRK.branch(f): _get(det, TRK, f, dt) for f, dt in _TRK_INPUTS.items()}
    clu = {CLU.branch(f): _get(det, CLU, f, dt) for f, dt in _CLU_INPUTS.items()}
    nt, nc = trk["trk_pt"].size, clu["clu_e"].size
    if any(a.size != nt for a in trk.values()) or any(a.size != nc for a in clu.values()):
        raise ValueError("run_pf: trk_* (or clu_*) branches of one event have different lengths")
    if nt + nc == 0:
        return empty_pf()
    args = {**trk, **clu, **config.kernel_args()}
    links = _call(link_blocks, args)
    cand = _call(pf_candidates, {**args, **links._asdict()})
    cls, q = cand.cls, cand.charge
    sign = np.ones_like(cls)
    lep = (cls == TargetClass.ELECTRON) | (cls == TargetClass.MUON)
    sign[lep] = -q[lep]
    charged_hadron = cls == TargetClass.CHARGED_HADRON
    sign[charged_hadron] = q[charged_hadron]
    pid = _PDG_ABS[cls] * sign
    # phi in [-pi, pi) also after rounding to float32
    phi32 = cand.phi.astype(np.float32)
    phi32[phi32.astype(np.float64) >= np.pi] = _F32_MINUS_PI
    phi32[phi32.astype(np.float64) < -np.pi] = _F32_MINUS_PI
    out = {
        "pf_pid": pid,
        "pf_cls": cls,
        "pf_charge": q,
        "pf_pt": cand.pt,
        "pf_eta": cand.eta,
        "pf_phi": phi32,
        "pf_e": cand.e,
        "pf_trk_idx": cand.trk_idx,
        "pf_clu_idx": cand.clu_idx,
    }
    dt = PF.branches
    return {name: np.ascontiguousarray(out[name], dtype=dt[name]) for name in dt}
