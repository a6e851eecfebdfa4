"""Generator-level event sources: Pythia8 processes, a single-particle gun, pile-up, and HepMC3 files.

A source yields one event's stable generator particles as flat NumPy arrays keyed by schema branch name
(``gen_pid``, ``gen_pt``, ...). Everything downstream (detector simulation, PF, targets) reads only that.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .schema import GEN, Process

GenParticles = dict[str, np.ndarray]

# Pythia's random seed must lie in [0, 900000000].
_PYTHIA_MAX_SEED = 900_000_000

# CMS-like luminous region (mm): sigma_z about 3.5-4.5 cm in Run 2/3, transverse spread of order 10 um.
BEAMSPOT_SIGMA_XY_MM = 0.01
BEAMSPOT_SIGMA_Z_MM = 40.0

_COMMON_SETTINGS = (
    "Print:quiet = on",
    "Next:numberCount = 0",
    "Beams:eCM = {ecm}",
    "Beams:allowVertexSpread = on",
    f"Beams:sigmaVertexX = {BEAMSPOT_SIGMA_XY_MM}",
    f"Beams:sigmaVertexY = {BEAMSPOT_SIGMA_XY_MM}",
    f"Beams:sigmaVertexZ = {BEAMSPOT_SIGMA_Z_MM}",
    # Particles with c*tau > 10 mm are stable at generator level (K0S, Lambda, ...), the usual LHC convention;
    # the detector simulation treats them by charge.
    "ParticleDecays:limitTau0 = on",
    "ParticleDecays:tau0Max = 10",
)

_PROCESS_SETTINGS: dict[str, tuple[str, ...]] = {
    "ttbar": ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on"),
    "qcd": ("HardQCD:all = on", "PhaseSpace:pTHatMin = {pthat_min}"),
    "zll": (
        "WeakSingleBoson:ffbar2gmZ = on",
        "WeakZ0:gmZmode = 2",  # pure Z, no gamma* interference
        "23:onMode = off",
        "23:onIfAny = 11 13",
    ),
    "minbias": ("SoftQCD:nonDiffractive = on",),
    "gun": ("ProcessLevel:all = off",),
    "hepmc": (),  # particles come from a HepMC file; no Pythia process is initialised
}

PROCESS_CODES = {
    "ttbar": Process.TTBAR,
    "qcd": Process.QCD,
    "zll": Process.ZLL,
    "gun": Process.GUN,
    "minbias": Process.MINBIAS,
    "hepmc": Process.HEPMC,
}


@dataclass(frozen=True)
class SourceSpec:
    """What to generate. Ranges are inclusive-exclusive uniform ranges."""

    process: str
    ecm: float = 14000.0
    pthat_min: float = 20.0  # qcd only
    gun_pid: int = 211  # gun only; sign chosen at random for charged particles when gun_both_signs
    gun_both_signs: bool = True
    gun_pt: tuple[float, float] = (1.0, 100.0)
    gun_eta: tuple[float, float] = (-2.5, 2.5)
    extra_settings: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.process not in _PROCESS_SETTINGS:
            raise ValueError(f"unknown process {self.process!r}; choose one of {sorted(_PROCESS_SETTINGS)}")
        if self.gun_pt[0] <= 0 or self.gun_pt[1] < self.gun_pt[0]:
            raise ValueError(f"gun pT range {self.gun_pt} must be positive and ordered")
        if self.gun_eta[1] < self.gun_eta[0]:
            raise ValueError(f"gun eta range {self.gun_eta} must be ordered")

    @property
    def code(self) -> Process:
        return PROCESS_CODES[self.process]


def pythia_seed(*keys: int) -> int:
    """A Pythia seed derived from integer keys (run seed, chunk index, ...), independent of worker layout."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint32)[0]
    return int(state) % _PYTHIA_MAX_SEED + 1


def empty_gen() -> GenParticles:
    return {GEN.branch(f.name): np.zeros(0, dtype=f.dtype) for f in GEN.fields}


class PythiaSource:
    """One Pythia8 instance for one process. Initialised once; reseeded per chunk with ``reseed``.

    Reseeding the random engine (instead of re-initialising) keeps the 0.3 s start-up cost out of every chunk
    while making each chunk's events a function of (run seed, chunk index) only.
    """

    def __init__(self, spec: SourceSpec, init_seed: int) -> None:
        import pythia8mc  # imported here: worker processes build their own instance

        self.spec = spec
        self._pythia = pythia8mc.Pythia("", False)
        settings = [s.format(ecm=spec.ecm, pthat_min=spec.pthat_min) for s in _COMMON_SETTINGS]
        settings += [s.format(ecm=spec.ecm, pthat_min=spec.pthat_min) for s in _PROCESS_SETTINGS[spec.process]]
        settings += ["Random:setSeed = on", f"Random:seed = {pythia_seed(init_seed)}", *spec.extra_settings]
        for line in settings:
            if not self._pythia.readString(line):
                raise ValueError(f"Pythia rejected the setting {line!r}")
        if not self._pythia.init():
            raise RuntimeError(f"Pythia failed to initialise for process {spec.process!r}")
        self._gun_rng = np.random.default_rng(init_seed)

    def reseed(self, seed: int) -> None:
        self._pythia.rndm.init(pythia_seed(seed))
        self._gun_rng = np.random.default_rng(seed)

    def next_event(self) -> GenParticles:
        """Generate one event; retries on Pythia's (rare) failures."""
        for _attempt in range(20):
            if self.spec.process == "gun":
                self._fill_gun()
            if self._pythia.next():
                return _final_particles(self._pythia.event)
        raise RuntimeError(f"Pythia failed 20 times in a row for process {self.spec.process!r}")

    def _fill_gun(self) -> None:
        spec, rng, event = self.spec, self._gun_rng, self._pythia.event
        pid = spec.gun_pid
        pdata = self._pythia.particleData
        if spec.gun_both_signs and pdata.isParticle(-pid) and rng.random() < 0.5:
            pid = -pid
        mass = pdata.m0(pid)
        pt = rng.uniform(*spec.gun_pt)
        eta = rng.uniform(*spec.gun_eta)
        phi = rng.uniform(-math.pi, math.pi)
        px, py, pz = pt * math.cos(phi), pt * math.sin(phi), pt * math.sinh(eta)
        energy = math.sqrt(px * px + py * py + pz * pz + mass * mass)
        event.reset()
        index = event.append(pid, 1, 0, 0, px, py, pz, energy, mass)
        vx, vy = rng.normal(0.0, BEAMSPOT_SIGMA_XY_MM, 2)
        vz = rng.normal(0.0, BEAMSPOT_SIGMA_Z_MM)
        event[index].vProd(vx, vy, vz, 0.0)


def _final_particles(event) -> GenParticles:
    """Stable particles of a Pythia event as schema arrays (one pass over the record)."""
    rows = [
        (p.id(), p.charge(), p.px(), p.py(), p.pz(), p.e(), p.m(), p.xProd(), p.yProd(), p.zProd())
        for p in event.particles()
        if p.isFinal()
    ]
    return _rows_to_gen(rows)


def _rows_to_gen(rows: list[tuple]) -> GenParticles:
    if not rows:
        return empty_gen()
    table = np.asarray(rows, dtype=np.float64)
    pid, charge, px, py, pz, e, m, vx, vy, vz = table.T
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, pz / np.where(pt > 0, pt, 1.0), np.sign(pz) * 1e4))
    eta = np.clip(eta, -20.0, 20.0)
    phi = np.arctan2(py, px)
    n = len(rows)
    return {
        "gen_pid": pid.astype(np.int32),
        "gen_charge": np.rint(charge).astype(np.int32),
        "gen_pt": pt.astype(np.float32),
        "gen_eta": eta.astype(np.float32),
        "gen_phi": phi.astype(np.float32),
        "gen_e": e.astype(np.float32),
        "gen_m": m.astype(np.float32),
        "gen_vx": vx.astype(np.float32),
        "gen_vy": vy.astype(np.float32),
        "gen_vz": vz.astype(np.float32),
        "gen_is_pu": np.zeros(n, dtype=bool),
        "gen_elem_idx": np.full(n, -1, dtype=np.int32),
    }


def concatenate_gen(parts: list[GenParticles]) -> GenParticles:
    """Concatenate several interactions (hard scatter first, then pile-up) into one event."""
    if not parts:
        return empty_gen()
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


class PileupOverlay:
    """Poisson(mu) minimum-bias (SoftQCD:nonDiffractive) interactions added to each event."""

    def __init__(self, mu: float, ecm: float, init_seed: int) -> None:
        if mu < 0:
            raise ValueError(f"pile-up mu must be >= 0, got {mu}")
        self.mu = mu
        self._source = PythiaSource(SourceSpec("minbias", ecm=ecm), init_seed) if mu > 0 else None
        self._rng = np.random.default_rng(init_seed)

    def reseed(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        if self._source is not None:
            self._source.reseed(seed)

    def overlay(self, hard: GenParticles) -> tuple[GenParticles, int]:
        if self._source is None:
            return hard, 0
        n_pu = int(self._rng.poisson(self.mu))
        parts = [hard]
        for _ in range(n_pu):
            pu = self._source.next_event()
            pu["gen_is_pu"][:] = True
            parts.append(pu)
        return concatenate_gen(parts), n_pu


@functools.lru_cache(maxsize=None)
def _pdg_charge(pid: int) -> int:
    """Charge of a PDG id from the `particle` package; 0 (neutral) for ids it does not know."""
    from particle import Particle
    from particle.particle.particle import ParticleNotFound, InvalidParticle

    try:
        charge = Particle.from_pdgid(pid).charge
    except (ParticleNotFound, InvalidParticle):
        return 0
    return int(round(charge)) if charge is not None else 0


def read_hepmc(path: str | Path) -> Iterator[GenParticles]:
    """Stable (status 1) particles of each event of a HepMC3 (or HepMC2 / HEPEVT, auto-detected) file.

    Lengths are converted to mm and momenta to GeV from the file's declared units.
    """
    import pyhepmc

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HepMC file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"HepMC file {path} is empty")
    n_read = 0
    with pyhepmc.open(str(path)) as reader:
        for event in reader:
            if event is None:
                break
            if len(event.particles) == 0:  # pyhepmc turns a parse failure into an empty event
                raise ValueError(f"{path}: HepMC event {n_read} is empty or could not be parsed")
            yield _hepmc_event_to_gen(event, path, n_read)
            n_read += 1
    if n_read == 0:  # pyhepmc reads garbage as zero events instead of failing
        raise ValueError(f"no HepMC event could be read from {path}: not a HepMC3/HepMC2/HEPEVT file?")


def _hepmc_event_to_gen(event, path: Path, event_number: int) -> GenParticles:
    import pyhepmc

    momentum_scale = 1.0 if event.momentum_unit == pyhepmc.Units.GEV else 1e-3
    length_scale = 1.0 if event.length_unit == pyhepmc.Units.MM else 10.0
    rows = []
    for particle in event.particles:
        if particle.status != 1:
            continue
        mom = particle.momentum
        vertex = particle.production_vertex
        pos = vertex.position if vertex is not None else None
        x, y, z = (pos.x, pos.y, pos.z) if pos is not None else (0.0, 0.0, 0.0)
        m2 = mom.e**2 - mom.px**2 - mom.py**2 - mom.pz**2
        mass = math.sqrt(m2) if m2 > 0 else 0.0
        rows.append(
            (
                particle.pid,
                _pdg_charge(particle.pid),
                mom.px * momentum_scale,
                mom.py * momentum_scale,
                mom.pz * momentum_scale,
                mom.e * momentum_scale,
                mass * momentum_scale,
                x * length_scale,
                y * length_scale,
                z * length_scale,
            )
        )
    if not rows and len(event.particles) > 0:
        raise ValueError(f"{path}: event {event_number} has particles but none with status 1")
    return _rows_to_gen(rows)

