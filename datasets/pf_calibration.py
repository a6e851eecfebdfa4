"""Calibration of the PF baseline: fitting the PFConfig calibration constants on single particles.

:func:`fit_calibration` runs single photons and K0L through the detector simulation and returns the
``ecal_em_scale``, ``had_calib_*``, ``hf_em_scale`` and ``hf_had_calib`` fields of :class:`PFConfig`;
:func:`single_particle_gen` makes the one-particle ``gen_*`` events (also used by the tests).
"""

from __future__ import annotations

import math

import numpy as np

from .schema import ClusterLayer

__all__ = ["fit_calibration", "single_particle_gen"]

_ECAL = int(ClusterLayer.ECAL)
_HCAL = int(ClusterLayer.HCAL)
_HF = int(ClusterLayer.HF)


def single_particle_gen(pid: int, energy: float, eta: float, phi: float) -> dict[str, np.ndarray]:
    """Flat ``gen_*`` arrays of one particle from the origin (for single-particle calibration and tests)."""
    masses = {22: 0.0, 11: 0.000511, 13: 0.10566, 211: 0.13957, 130: 0.497611, 2112: 0.939565, 321: 0.493677}
    m = masses.get(abs(pid), 0.0)
    charge = 0 if abs(pid) in (22, 130, 2112) else (1 if pid > 0 else -1)
    if abs(pid) in (11, 13):
        charge = -charge
    p = math.sqrt(max(energy * energy - m * m, 0.0))
    pt = p / math.cosh(eta)
    f4 = np.float32
    return {
        "gen_pid": np.array([pid], np.int32), "gen_charge": np.array([charge], np.int32),
        "gen_pt": np.array([pt], f4), "gen_eta": np.array([eta], f4), "gen_phi": np.array([phi], f4),
        "gen_e": np.array([energy], f4), "gen_m": np.array([m], f4),
        "gen_vx": np.zeros(1, f4), "gen_vy": np.zeros(1, f4), "gen_vz": np.zeros(1, f4),
        "gen_is_pu": np.zeros(1, np.bool_),
    }  # fmt: skip


def _raw_energy_near(det, eta, phi, layers, dr_max) -> float:
    """Summed (EM-scale) energy of the clusters of ``layers`` within ``dr_max`` of (eta, phi)."""
    lay = np.asarray(det["clu_layer"])
    d_eta = np.asarray(det["clu_eta"], np.float64) - eta
    d_phi = (np.asarray(det["clu_phi"], np.float64) - phi + np.pi) % (2 * np.pi) - np.pi
    sel = np.isin(lay, layers) & (d_eta**2 + d_phi**2 < dr_max**2)
    return float(np.asarray(det["clu_e"], np.float64)[sel].sum())


def fit_calibration(
    n_events: int = 1000,
    energies: tuple[float, ...] = (5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 200.0, 500.0),
    seed: int = 12345,
    det_config=None,
) -> dict[str, object]:
    """Fit the PF calibration constants on single-particle samples of the detector simulation.

    Uses truth, which is legitimate here: this is the calibration procedure, not the reconstruction.
    - EM scale: single photons, |eta| < 1.3: mean true energy / mean summed ECAL cluster energy in dR < 0.15.
    - hadrons: single K0L, |eta| < 2.5, at each true energy E: raw = mean summed ECAL+HCAL cluster energy in
      dR < 0.4 (events with some energy); knot (raw, E / raw). a_e = a_h: the simulation has one response for the whole shower.
    - HF: single K0L (E >= 10 GeV) and photons at 3.2 < |eta| < 4.8 likewise.
    - below the lowest fitted energy the clustering thresholds bias any fit (only up-fluctuations survive),
      so knots at raw 0.5, 1, 2 GeV come from the simulation's response model
      (``DetectorConfig.calibrate_hadron``), the same for HF.
    Returns PFConfig field values: ``dataclasses.replace(DEFAULT_PF_CONFIG, **fit_calibration())``.
    """
    from hepzoo.datasets.detector import simulate_event
    from hepzoo.datasets.detector_config import DEFAULT_CONFIG

    det_config = DEFAULT_CONFIG if det_config is None else det_config
    rng = np.random.default_rng(seed)
    ev_seed = [int(seed) * 1000003]

    def sample(pid, energy, eta_lo, eta_hi, layers, dr):
        raws = np.empty(n_events)
        for i in range(n_events):
            eta = rng.uniform(eta_lo, eta_hi) * rng.choice([-1.0, 1.0])
            phi = rng.uniform(-np.pi, np.pi)
            ev_seed[0] += 1
            det = simulate_event(single_particle_gen(pid, energy, eta, phi), ev_seed[0], det_config)
            raws[i] = _raw_energy_near(det, eta, phi, layers, dr)
        return raws[raws > 0.0]  # a particle below the clustering thresholds makes no candidate anyway

    em = [e / sample(22, e, 0.0, 1.3, (_ECAL,), 0.15).mean() for e in (5.0, 20.0, 100.0)]
    had_raw, had_fac, hf_raw, hf_fac = [], [], [], []
    for e in energies:
        r = sample(130, e, 0.0, 2.5, (_ECAL, _HCAL), 0.4).mean()
        had_raw.append(r)
        had_fac.append(e / max(r, 1e-6))
        if e >= 10.0:
            r = sample(130, e, 3.2, 4.8, (_HF,), 0.4).mean()
            hf_raw.append(r)
            hf_fac.append(e / max(r, 1e-6))
    hf_em = [e / sample(22, e, 3.2, 4.8, (_HF,), 0.4).mean() for e in (20.0, 100.0)]
    low = [x for x in (0.5, 1.0, 2.0) if x < min(had_raw)]
    had_raw = low + had_raw
    had_fac = [det_config.calibrate_hadron(x) / x for x in low] + had_fac
    low = [x for x in (0.5, 1.0, 2.0, 3.0, 5.0) if x < min(hf_raw)]
    hf_raw = low + hf_raw
    hf_fac = [det_config.calibrate_hadron(x, hf=True) / x for x in low] + hf_fac
    # knots must increase: keep the hadron knots on the ECAL+HCAL raw energies; map the HF factors onto them
    order = np.argsort(had_raw)
    knots = np.asarray(had_raw)[order]
    keep = np.concatenate([[True], np.diff(knots) > 0])
    knots = knots[keep]
    fac = np.asarray(had_fac)[order][keep]
    hf_o = np.argsort(hf_raw)
    hf_on_knots = np.interp(np.log(knots), np.log(np.asarray(hf_raw)[hf_o]), np.asarray(hf_fac)[hf_o])
    r4 = lambda a: tuple(round(float(x), 4) for x in a)  # noqa: E731
    return {
        "ecal_em_scale": round(float(np.mean(em)), 4),
        "had_calib_e": r4(knots),
        "had_calib_ecal": r4(fac),
        "had_calib_hcal": r4(fac),
        "hf_em_scale": round(float(np.mean(hf_em)), 4),
        "hf_had_calib": r4(hf_on_knots),
        "calib_source": f"fit_calibration(n_events={n_events}, seed={seed}) on single photons and K0L",
    }
