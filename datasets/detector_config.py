"""Every constant of the parametrised CMS-like detector simulation, in one frozen dataclass.

Why one place: the detector simulation (``detector.py``), the clustering (``clustering.py``), the rule-based
PF baseline (which must undo the hadronic response) and the tests all read the same numbers from here.

Sources (numbers are taken from, or rounded to, these):
  [D]   Delphes 3, ``cards/delphes_card_CMS.tcl`` (ParticlePropagator, tracking efficiency and momentum
        smearing formulas, HCAL/HF resolution formulas, tower sizes).
  [E07] CMS ECAL test beam, "Energy resolution of the barrel of the CMS ECAL", JINST 2 (2007) P04004:
        sigma/E = 2.8%/sqrt(E) (+) 0.12 GeV/E (+) 0.3%; in-situ constant term 0.5-0.7% (JINST 8 (2013) P09009).
  [H09] CMS HCAL/ECAL combined test beam, Eur. Phys. J. C 60 (2009) 359: pions ~ 100-120%/sqrt(E) (+) 5-8%,
        non-compensating, e/h ~ 1.4 for the brass/scintillator HCAL (PbWO4 ECAL e/h higher).
  [T14] CMS tracker performance, JINST 9 (2014) P10009: impact-parameter resolution ~20 um at high pT,
        ~100 um at 1 GeV; hits per track ~ 13-18; Phase-1 pixel radii from CMS-TDR-011.
  [PF17] CMS particle flow, JINST 12 (2017) P10003: PF clustering thresholds (ECAL barrel seed 0.23 GeV,
        gathering 0.08 GeV; ECAL endcap seed 0.6 GeV, gathering 0.3 GeV; HCAL 0.8 GeV; HF seed 1.4 GeV).
  [G90] Groom / Wigmans parametrisation of the EM fraction of hadron showers: f_em = 1 - (E/E0)^(k-1),
        E0 ~ 1 GeV, k ~ 0.82 (R. Wigmans, "Calorimetry", 2nd ed., ch. 2).

Energy scale (read this before calibrating): all calorimeter cells are at the **EM scale** (an electron or
photon has response 1). Hadrons have the non-compensated response ``hadron_response(E)`` < 1; ``clu_e`` is
EM-scale energy and a consumer calibrates hadronic clusters with ``calibrate_hadron`` (the inverse).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DetectorConfig:
    """Constants of the CMS-like parametrised detector. Units: GeV, mm, rad, Tesla."""

    # ---- geometry and field ---------------------------------------------------------------------------
    b_field: float = 3.8  # solenoid field [T] [D]
    r_calo: float = 1290.0  # radius of the ECAL barrel front face [mm] [D: Radius 1.29 m]
    z_calo: float = 3150.0  # |z| of the ECAL endcap front face [mm] (CMS EE ~3.15 m; [D] uses 3.0 m)
    z_hf: float = 11150.0  # |z| of the HF front face [mm]; propagation beyond z_calo is a straight line
    # A charged particle that needs more than this turning angle to reach the endcap face is treated as a
    # looper (stopped by material, no calorimeter deposit). Material losses are otherwise not modelled.
    max_turning_angle: float = 2.0 * math.pi

    # ---- tracker -----------------------------------------------------------------------------------
    tracker_eta_max: float = 2.5  # [D]
    track_pt_min: float = 0.1  # below: efficiency 0 [D]
    # Efficiency table [D]: rows = (hadron, electron, muon); columns = (|eta|<=1.5, 1.5<|eta|<=2.5);
    # pT bins: (0.1, 1], (1, 100], > 100 GeV.
    trk_eff_pt_edges: tuple[float, ...] = (1.0, 100.0)
    trk_eff_hadron: tuple[tuple[float, ...], ...] = ((0.70, 0.95, 0.95), (0.60, 0.85, 0.85))
    trk_eff_electron: tuple[tuple[float, ...], ...] = ((0.73, 0.95, 0.99), (0.50, 0.83, 0.90))
    trk_eff_muon: tuple[tuple[float, ...], ...] = ((0.75, 0.99, 0.99), (0.70, 0.98, 0.98))
    # Relative pT resolution sigma(pT)/pT = sqrt(a^2 + (b pT)^2) in |eta| bins [D, from arXiv:1405.6569].
    trk_res_eta_edges: tuple[float, ...] = (0.5, 1.5, 2.5)
    trk_res_hadron_a: tuple[float, ...] = (0.010, 0.015, 0.025)  # also used for electrons (no brem model)
    trk_res_hadron_b: tuple[float, ...] = (1.5e-4, 2.5e-4, 5.5e-4)  # [1/GeV]
    trk_res_muon_a: tuple[float, ...] = (0.010, 0.015, 0.025)  # tracker + muon system [D]
    trk_res_muon_b: tuple[float, ...] = (1.0e-4, 1.5e-4, 3.5e-4)  # [1/GeV]
    # Angular resolution sigma = sqrt(a^2 + (b/pT)^2) (multiple scattering term b) [T14, rounded].
    trk_phi_res_a: float = 1.0e-4  # [rad]
    trk_phi_res_b: float = 2.0e-3  # [rad GeV]
    trk_eta_res_a: float = 2.0e-4
    trk_eta_res_b: float = 2.0e-3  # [GeV]
    # Impact-parameter resolution sigma = sqrt(a^2 + (b/pT)^2) [T14].
    trk_d0_res_a: float = 0.020  # [mm]
    trk_d0_res_b: float = 0.090  # [mm GeV]
    trk_z0_res_a: float = 0.030  # [mm]
    trk_z0_res_b: float = 0.120  # [mm GeV]
    # Tracker layers (Phase-1 pixel + TIB/TOB radii [mm], pixel forward + TID/TEC disk |z| [mm]) [T14].
    trk_barrel_radii: tuple[float, ...] = (
        29.0, 68.0, 109.0, 160.0, 255.0, 339.0, 418.0, 498.0, 608.0, 692.0, 780.0, 868.0, 965.0, 1080.0,
    )
    trk_barrel_half_length: float = 1100.0  # [mm] (TOB ~ 1.1 m)
    trk_disk_z: tuple[float, ...] = (
        291.0, 396.0, 516.0, 775.0, 900.0, 1020.0, 1240.0, 1400.0, 1550.0, 1700.0, 1900.0, 2100.0, 2300.0,
        2500.0, 2700.0,
    )
    trk_disk_r_min: float = 45.0  # [mm]
    trk_disk_r_max: float = 1100.0  # [mm]
    trk_hit_eff: float = 0.98  # per crossed layer

    # ---- muon system ---------------------------------------------------------------------------------
    muon_eta_max: float = 2.4  # [D]
    # Momentum needed to reach muon station k (1..4): energy loss in calorimeters + iron yoke (~2-3 GeV).
    muon_station_p_min: tuple[float, ...] = (3.0, 4.0, 5.0, 6.0)  # [GeV]
    muon_station_eff: float = 0.95  # per station
    punch_through_prob: float = 0.005  # hadron with p >> 10 GeV leaving >=1 segment (x (1-exp(-p/20 GeV)))

    # ---- calorimeter grids: uniform eta x phi grids (phi from -pi to pi) ------------------------------
    # ECAL: barrel crystal size 0.0174 x 0.0174 [D]; a uniform grid over |eta|<3 (the real endcap is coarser).
    ecal_eta_max: float = 3.0
    ecal_n_eta: int = 344  # 6.0 / 344 = 0.01744
    ecal_n_phi: int = 360
    # HCAL towers 0.087 x 0.087 [D], |eta| < 3.0.
    hcal_eta_max: float = 3.0
    hcal_n_eta: int = 69  # 6.0 / 69 = 0.0870
    hcal_n_phi: int = 72
    # HF, 3 < |eta| < 5, ~0.175 x 0.175 [D]: a grid over |eta|<5 of which only |eta|>=3 rows are active.
    hf_eta_min: float = 3.0
    hf_eta_max: float = 5.0
    hf_n_eta: int = 60  # 10 / 60 = 0.1667; the rows at |eta| < 3 are inactive
    hf_n_phi: int = 36  # 0.1745
    ecal_barrel_eta_max: float = 1.479  # EB / EE boundary for noise and thresholds

    # ---- EM showers ----------------------------------------------------------------------------------
    # sigma/E = sqrt(a^2/E + c^2) applied to the deposit; the noise term b emerges from cell noise.
    ecal_a_barrel: float = 0.028  # [E07]
    ecal_c_barrel: float = 0.007  # in-situ constant term [E07]
    ecal_a_endcap: float = 0.057  # EE ~ 2x the stochastic term (preshower + larger crystals), rounded
    ecal_c_endcap: float = 0.010
    hf_em_a: float = 2.08  # [D]
    hf_em_c: float = 0.107  # [D]
    # Lateral profile: Gaussian in (eta, phi) with this sigma; ~ Moliere radius 2.2 cm / 2.15 at 1.29 m.
    em_lateral_sigma: float = 0.008
    em_footprint: int = 2  # half-width in cells of the deposited window (5x5)

    # ---- hadron showers ------------------------------------------------------------------------------
    # Combined ECAL+HCAL resolution of the (response-corrected) deposit: sqrt(a^2/E + c^2) [H09].
    had_a: float = 1.1
    had_c: float = 0.05
    hf_had_a: float = 2.70  # [D]
    hf_had_c: float = 0.13  # [D]
    # Non-compensation: response R(E) = 1 - (1 - h/e) (E/E0)^(k-1), cells at EM scale [G90, H09].
    e_over_h: float = 1.4
    hf_e_over_h: float = 5.0  # quartz-fibre HF is strongly non-compensating
    had_e0: float = 1.0  # [GeV]
    had_k: float = 0.82
    # Probability to start showering in the ECAL = 1 - exp(-ecal_lambda_int) (PbWO4 ECAL ~ 1.1 lambda_I);
    # if it does, the ECAL fraction of the visible energy is uniform in [ecal_frac_min, ecal_frac_max].
    ecal_lambda_int: float = 1.1
    ecal_frac_min: float = 0.1
    ecal_frac_max: float = 0.7
    had_ecal_lateral_sigma: float = 0.02
    had_ecal_footprint: int = 3  # 7x7 ECAL cells
    had_hcal_lateral_sigma: float = 0.06
    had_hcal_footprint: int = 2  # 5x5 HCAL towers
    hf_em_lateral_sigma: float = 0.05
    hf_had_lateral_sigma: float = 0.08
    hf_footprint: int = 1  # 3x3 HF towers

    # ---- MIPs (muons, and non-showering hadrons in the ECAL) ----------------------------------------
    mip_ecal: float = 0.3  # [GeV] (~ 23 cm PbWO4 x 11 MeV/cm, rounded)
    mip_hcal: float = 2.0  # [GeV]
    mip_rel_width: float = 0.15  # Gaussian relative width (Landau tail not modelled)

    # ---- noise and clustering thresholds [PF17, rounded]; per region (EB, EE, HCAL, HF) -------------
    ecal_noise_barrel: float = 0.04  # [GeV / crystal]
    ecal_noise_endcap: float = 0.15
    hcal_noise: float = 0.25  # [GeV / tower]
    hf_noise: float = 0.25
    ecal_gather_barrel: float = 0.10  # PF gathering (topological) threshold [GeV]
    ecal_seed_barrel: float = 0.25
    ecal_gather_endcap: float = 0.45
    ecal_seed_endcap: float = 0.75
    hcal_gather: float = 0.8
    hcal_seed: float = 0.8
    hf_gather: float = 0.8
    hf_seed: float = 1.4

    _derived: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    # ---- response model (public: the PF baseline calibrates with these) -----------------------------
    def hadron_response(self, e: np.ndarray | float, hf: bool = False) -> np.ndarray | float:
        """Mean EM-scale response of a hadron shower of (available) energy ``e``: R(E) <= 1."""
        eh = self.hf_e_over_h if hf else self.e_over_h
        e = np.maximum(np.asarray(e, dtype=np.float64), self.had_e0)
        out = 1.0 - (1.0 - 1.0 / eh) * (e / self.had_e0) ** (self.had_k - 1.0)
        return out if out.ndim else float(out)

    def calibrate_hadron(self, e_raw: np.ndarray | float, hf: bool = False) -> np.ndarray | float:
        """Invert ``hadron_response``: true hadron energy from an EM-scale measured energy (bisection)."""
        e_raw = np.asarray(e_raw, dtype=np.float64)
        lo = np.maximum(e_raw, 0.0)
        hi = lo / (1.0 / (self.hf_e_over_h if hf else self.e_over_h)) + 1.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            too_low = mid * self.hadron_response(mid, hf) < e_raw
            lo = np.where(too_low, mid, lo)
            hi = np.where(too_low, hi, mid)
        out = 0.5 * (lo + hi)
        return out if out.ndim else float(out)

    def em_resolution(self, e: np.ndarray | float, eta: np.ndarray | float = 0.0) -> np.ndarray | float:
        """Relative EM resolution of the deposit (stochastic (+) constant; cell noise comes on top); ``e`` and
        ``eta`` broadcast (barrel or endcap terms by |eta|)."""
        barrel = np.abs(np.asarray(eta, dtype=np.float64)) < self.ecal_barrel_eta_max
        a = np.where(barrel, self.ecal_a_barrel, self.ecal_a_endcap)
        c = np.where(barrel, self.ecal_c_barrel, self.ecal_c_endcap)
        return np.sqrt(a * a / np.asarray(e, dtype=np.float64) + c * c)

    def had_resolution(self, e: np.ndarray | float) -> np.ndarray | float:
        """Relative ECAL+HCAL hadron resolution (w.r.t. the mean response; cell noise comes on top)."""
        return np.sqrt(self.had_a**2 / np.asarray(e, dtype=np.float64) + self.had_c**2)

    def hf_had_resolution(self, e: np.ndarray | float) -> np.ndarray | float:
        """Relative HF hadron resolution."""
        return np.sqrt(self.hf_had_a**2 / np.asarray(e, dtype=np.float64) + self.hf_had_c**2)

    def track_pt_resolution(self, pt: np.ndarray | float, eta: np.ndarray | float, muon: bool = False):
        """Relative track pT resolution sigma(pT)/pT of the Delphes CMS card."""
        a_tab = np.asarray(self.trk_res_muon_a if muon else self.trk_res_hadron_a)
        b_tab = np.asarray(self.trk_res_muon_b if muon else self.trk_res_hadron_b)
        i = np.minimum(np.searchsorted(np.asarray(self.trk_res_eta_edges), np.abs(eta)), len(a_tab) - 1)
        return np.sqrt(a_tab[i] ** 2 + (b_tab[i] * np.asarray(pt)) ** 2)

    def tracking_efficiency(self, pt: float, eta: float, kind: str = "hadron") -> float:
        """Delphes CMS tracking efficiency; kind is 'hadron', 'electron' or 'muon'."""
        if pt <= self.track_pt_min or abs(eta) > self.tracker_eta_max:
            return 0.0
        tab = {"hadron": self.trk_eff_hadron, "electron": self.trk_eff_electron, "muon": self.trk_eff_muon}[kind]
        row = 0 if abs(eta) <= 1.5 else 1
        col = int(np.searchsorted(np.asarray(self.trk_eff_pt_edges), pt, side="left"))
        return tab[row][col]

    # ---- grids --------------------------------------------------------------------------------------
    def grid(self, layer: int) -> tuple[float, float, int, int]:
        """(eta_min, eta_max, n_eta, n_phi) of calorimeter ``layer`` (1 ECAL, 2 HCAL, 3 HF)."""
        if layer == 1:
            return -self.ecal_eta_max, self.ecal_eta_max, self.ecal_n_eta, self.ecal_n_phi
        if layer == 2:
            return -self.hcal_eta_max, self.hcal_eta_max, self.hcal_n_eta, self.hcal_n_phi
        if layer == 3:
            return -self.hf_eta_max, self.hf_eta_max, self.hf_n_eta, self.hf_n_phi
        raise ValueError(f"unknown calorimeter layer {layer}")

    def row_tables(self, layer: int) -> dict[str, np.ndarray]:
        """Per-eta-row noise, thresholds, activity and expected noise cells above the gathering threshold.

        Why per row: noise and thresholds depend on the region (EB/EE), and the noise-only cells are
        sampled row by row from the Gaussian tail above the gathering threshold (see detector_cells.py).
        """
        key = ("rows", layer)
        if key in self._derived:
            return self._derived[key]
        eta_min, eta_max, n_eta, n_phi = self.grid(layer)
        centers = eta_min + (np.arange(n_eta) + 0.5) * (eta_max - eta_min) / n_eta
        a = np.abs(centers)
        if layer == 1:
            barrel = a < self.ecal_barrel_eta_max
            noise = np.where(barrel, self.ecal_noise_barrel, self.ecal_noise_endcap)
            gather = np.where(barrel, self.ecal_gather_barrel, self.ecal_gather_endcap)
            seed = np.where(barrel, self.ecal_seed_barrel, self.ecal_seed_endcap)
            active = np.ones(n_eta, dtype=np.bool_)
        elif layer == 2:
            noise = np.full(n_eta, self.hcal_noise)
            gather = np.full(n_eta, self.hcal_gather)
            seed = np.full(n_eta, self.hcal_seed)
            active = np.ones(n_eta, dtype=np.bool_)
        else:
            noise = np.full(n_eta, self.hf_noise)
            gather = np.full(n_eta, self.hf_gather)
            seed = np.full(n_eta, self.hf_seed)
            active = a > self.hf_eta_min
        tail = np.array([0.5 * math.erfc(g / (s * math.sqrt(2.0))) if s > 0 else 0.0
                         for g, s in zip(gather, noise)])
        out = {
            "noise": noise.astype(np.float64),
            "gather": gather.astype(np.float64),
            "seed": seed.astype(np.float64),
            "active": active,
            "lam": np.where(active, n_phi * tail, 0.0).astype(np.float64),
        }
        self._derived[key] = out
        return out


DEFAULT_CONFIG = DetectorConfig()
