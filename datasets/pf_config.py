"""Configuration of the rule-based PF baseline: thresholds, link sizes, resolutions, calibration constants.

:class:`PFConfig` holds every number of the PF (see pf_baseline for the algorithm); ``params()`` packs the
scalars the candidate kernel reads (field list ``pf_kernel.PFParam``), ``calib_arrays()`` the calibration
knots. :func:`hadron_energy` applies the hadron calibration outside the kernel; the constants themselves are
fitted by ``pf_calibration.fit_calibration``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .kernel_fields import from_config, pack
from .pf_kernel import PFParam

__all__ = ["PFConfig", "DEFAULT_PF_CONFIG", "hadron_energy"]

# the PFConfig fields that are arguments of pf_links.link_blocks (same names)
LINK_SIZES = ("link_k_width", "link_dr_min_ecal", "link_dr_min_hcal", "ecal_hcal_link_dr")


@dataclass(frozen=True)
class PFConfig:
    """Thresholds, link sizes, resolutions and calibration constants of the PF baseline."""

    # ---- links -----------------------------------------------------------------------------------------
    # track-cluster link: dR(track at calo, cluster) < max(link_k_width * sqrt(sigma_eta^2 + sigma_phi^2),
    # link_dr_min_<layer>). The minima are about 1.5 cells of the calorimeter (ECAL cell 0.0174, HCAL 0.087).
    link_k_width: float = 2.0
    link_dr_min_ecal: float = 0.04
    link_dr_min_hcal: float = 0.15
    # ECAL cluster (without a track) <-> HCAL cluster link radius (about 1.5 HCAL cells).
    ecal_hcal_link_dr: float = 0.15

    # ---- muons -------------------------------------------------------------------------------------------
    muon_min_stations: int = 2  # matched muon-station segments to call a track a muon
    muon_min_p: float = 2.5  # GeV, a muon below this cannot reach the muon stations
    muon_mip_ecal: float = 0.3  # GeV removed from the muon's ECAL cluster(s) (MIP deposit)
    muon_mip_hcal: float = 2.0  # GeV removed from the muon's HCAL cluster(s)

    # ---- electrons ---------------------------------------------------------------------------------------
    ele_min_pt: float = 2.0  # GeV
    ele_ep_min: float = 0.8  # window on E_ecal / p
    ele_ep_max: float = 1.25
    ele_hoe_max: float = 0.10  # H/E of the clusters linked to the track
    ele_max_sigma_eta: float = 0.03  # shower width (energy-weighted RMS in eta) of the main ECAL cluster

    # ---- charged hadrons / neutrals ----------------------------------------------------------------------
    # a neutral excess must exceed neutral_nsigma * sigma_calo(sum p) (expected hadron resolution)
    neutral_nsigma: float = 1.0
    # calorimeter and tracks are combined when |E_calo - sum p| < combine_nsigma * sqrt(sigma_p^2+sigma_c^2)
    combine_nsigma: float = 2.0
    combine_tracks_calo: bool = True
    photon_min_e: float = 0.5  # GeV, smallest photon candidate (excess or isolated ECAL cluster)
    neutral_hadron_min_e: float = 1.0  # GeV, smallest neutral-hadron candidate
    # noise: an HCAL cluster of one tower without a track must exceed this raw (EM-scale) energy to make a
    # neutral hadron. The simulation's HCAL tower noise (0.25 GeV, gathering threshold 0.8 GeV) makes ~3.5
    # one-tower clusters per event with raw E in 0.8-1.6 GeV (99.9% quantile 1.6 GeV, measured).
    hcal_single_tower_min_e: float = 1.7
    hf_min_e: float = 2.0  # GeV, smallest HF candidate
    hf_em_min_frac: float = 0.7  # HF cluster with e_ecal / e >= this is a photon

    # ---- expected resolutions (sigma/E = stoch/sqrt(E) (+) const (+) noise/E) -------------------------------
    # from detector_config: ECAL barrel 2.8%/sqrt(E) (+) 0.7% (+) ~0.12 GeV (cell noise x ~9 cells);
    # hadrons 110%/sqrt(E) (+) 5% (+) ~0.8 GeV (HCAL tower noise 0.25 GeV x ~10 towers).
    ecal_res_stoch: float = 0.028
    ecal_res_const: float = 0.007
    ecal_res_noise: float = 0.12
    had_res_stoch: float = 1.1
    had_res_const: float = 0.05
    had_res_noise: float = 0.8

    # ---- calibration --------------------------------------------------------------------------------------
    # Fitted with fit_calibration() (n_events=1000, seed=12345; single photons and K0L through
    # detector.simulate_event with DEFAULT_CONFIG; ~11 s). Regenerate after any detector response change.
    # EM scale of ECAL clusters (photons/electrons): E_true = ecal_em_scale * clu_e
    ecal_em_scale: float = 1.0004
    # hadron calibration, E = a_e(E_raw) * E_ecal + a_h(E_raw) * E_hcal, with E_raw = E_ecal + E_hcal of the
    # block (EM scale); knots interpolated linearly in log(E_raw), flat outside. a_e = a_h: the simulation has
    # one non-compensated response for the whole shower. Knots below 4 GeV: the response model's inverse.
    had_calib_e: tuple[float, ...] = (
        0.5, 1.0, 2.0, 4.1517, 5.7359, 8.0307, 12.1558, 16.6734, 25.2522, 42.4388, 87.2675, 177.9762, 454.6091,
    )
    had_calib_ecal: tuple[float, ...] = (
        1.4, 1.3698, 1.3159, 1.2043, 1.2204, 1.2452, 1.234, 1.1995, 1.188, 1.1782, 1.1459, 1.1237, 1.0998,
    )
    had_calib_hcal: tuple[float, ...] = had_calib_ecal
    # HF (one layer, EM and hadronic showers indistinguishable by e_ecal in this simulation):
    # EM-like clusters E = hf_em_scale * clu_e; hadron-like E = f_hf(clu_e) * clu_e on the had_calib_e knots
    hf_em_scale: float = 0.9948
    hf_had_calib: tuple[float, ...] = (
        3.5777, 2.9335, 2.4941, 2.1728, 1.7856, 1.6608, 1.7015, 1.6993, 1.6412, 1.5737, 1.5013, 1.4361, 1.3651,
    )
    # provenance of the calibration numbers (free text)
    calib_source: str = "fit_calibration(n_events=1000, seed=12345) on single photons and K0L"

    # kernel arguments computed once per instance (see kernel_args)
    _derived: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def params(self) -> np.ndarray:
        """Scalar parameters packed for the candidate kernel: the fields of ``pf_kernel.PFParam``, as float."""
        return pack(PFParam, {name: float(value) for name, value in from_config(PFParam, self).items()})

    def calib_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(log of the energy knots, a_e, a_h, HF hadron factors) for the kernel."""
        x = np.log(np.asarray(self.had_calib_e, dtype=np.float64))
        ae = np.asarray(self.had_calib_ecal, dtype=np.float64)
        ah = np.asarray(self.had_calib_hcal, dtype=np.float64)
        hf = np.asarray(self.hf_had_calib, dtype=np.float64)
        if not (x.shape == ae.shape == ah.shape == hf.shape) or x.size < 1 or np.any(np.diff(x) <= 0):
            raise ValueError("PFConfig: had_calib_*/hf_had_calib must have equal lengths, increasing energies")
        return x, ae, ah, hf

    def kernel_args(self) -> dict[str, object]:
        """The configuration arguments of the PF kernels by name, computed once per instance: the link sizes
        of ``pf_links.link_blocks``, and ``par`` (:meth:`params`), ``cx``, ``cae``, ``cah``, ``chf``
        (:meth:`calib_arrays`) of ``pf_kernel.pf_candidates``. Shared arrays: do not modify them."""
        if "kernel_args" not in self._derived:
            cx, cae, cah, chf = self.calib_arrays()
            self._derived["kernel_args"] = {**{name: float(getattr(self, name)) for name in LINK_SIZES},
                                            "par": self.params(), "cx": cx, "cae": cae, "cah": cah, "chf": chf}
        return self._derived["kernel_args"]


DEFAULT_PF_CONFIG = PFConfig()


def hadron_energy(e_ecal, e_hcal, config: PFConfig = DEFAULT_PF_CONFIG) -> np.ndarray:
    """Hadron-calibrated energy ``a_e(E_raw) * e_ecal + a_h(E_raw) * e_hcal`` (EM-scale inputs, vectorised)."""
    e_ecal = np.asarray(e_ecal, dtype=np.float64)
    e_hcal = np.asarray(e_hcal, dtype=np.float64)
    x, ae, ah, _ = config.calib_arrays()
    lg = np.log(np.maximum(e_ecal + e_hcal, 1e-3))
    return np.interp(lg, x, ae) * e_ecal + np.interp(lg, x, ah) * e_hcal
