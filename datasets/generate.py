"""The generation pipeline: source -> (pile-up) -> detector simulation -> PF baseline -> targets -> jets -> ROOT.

Work is cut into chunks of ``chunk_size`` events. Chunk ``k`` is generated with seeds derived from
(run seed, k) only, so the output does not depend on how many worker processes ran it. Worker processes each
own one Pythia instance per process type (initialised once, reseeded per chunk); the parent writes chunks in
order through an atomic writer, so memory stays flat and a failed run leaves no output file.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

from .atomic import remove_stale_temporaries
from .detector import simulate_event
from .detector_config import DEFAULT_CONFIG, DetectorConfig
from .io import EventWriter, events_to_awkward
from .jets import antikt_jets
from .pf_baseline import run_pf
from .schema import CLU, GENJET, RECOJET, TRK
from .sources import GenParticles, PileupOverlay, PythiaSource, SourceSpec, empty_gen, read_hepmc
from .targets import build_targets, visible_mask

Event = dict[str, np.ndarray]

# Events buffered in the parent before one write (one ROOT basket per write: fewer, larger writes are faster).
_WRITE_BUFFER_EVENTS = 1000


@dataclass(frozen=True)
class GenerationConfig:
    """Everything that determines the generated events (written to the output for provenance)."""

    source: SourceSpec
    n_events: int
    seed: int = 42
    pileup_mu: float = 0.0
    chunk_size: int = 100
    detector: DetectorConfig = field(default_factory=lambda: DEFAULT_CONFIG)

    def __post_init__(self) -> None:
        if self.n_events < 0:
            raise ValueError(f"n_events must be >= 0, got {self.n_events}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")


def reconstruct_event(gen: GenParticles, detector_seed: int, detector: DetectorConfig = DEFAULT_CONFIG) -> Event:
    """Detector simulation, PF baseline and targets for one event's generator particles."""
    det = simulate_event(gen, detector_seed, detector)
    event: Event = dict(gen)
    event.update({k: v for k, v in det.items() if k.startswith((TRK.prefix + "_", CLU.prefix + "_"))})
    event.update(run_pf(det))
    event.update(build_targets(gen, det))
    return event


def add_jets(events: list[Event]) -> None:
    """Attach generator jets (visible hard-scatter particles) and PF jets to each event, in place."""
    if not events:
        return
    gen_sel = [visible_mask(ev) & ~ev["gen_is_pu"] for ev in events]

    def jagged(key: str, masks: list[np.ndarray] | None) -> ak.Array:
        parts = [ev[key] if masks is None else ev[key][m] for ev, m in zip(events, masks or [None] * len(events))]
        return ak.unflatten(np.concatenate(parts), np.array([len(p) for p in parts]))

    gen_jets = antikt_jets(*(jagged(f"gen_{v}", gen_sel) for v in ("pt", "eta", "phi", "e")))
    pf_jets = antikt_jets(*(jagged(f"pf_{v}", None) for v in ("pt", "eta", "phi", "e")))
    for jets, coll in ((gen_jets, GENJET), (pf_jets, RECOJET)):
        counts = ak.to_numpy(ak.num(jets, axis=1))
        offsets = np.concatenate([[0], np.cumsum(counts)])
        for name in coll.field_names:
            flat = ak.to_numpy(ak.flatten(jets[name]))
            for i, ev in enumerate(events):
                ev[coll.branch(name)] = flat[offsets[i] : offsets[i + 1]]


def _detector_seed(run_seed: int, event_id: int) -> int:
    return int(np.random.SeedSequence([run_seed, event_id, 7]).generate_state(1, dtype=np.uint32)[0])


# ---- worker side --------------------------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(config: GenerationConfig) -> None:
    """Build this process's Pythia instances once (0.3 s each) and keep them for all its chunks."""
    _WORKER.clear()
    _WORKER["config"] = config
    if config.source.process != "hepmc":
        _WORKER["source"] = PythiaSource(config.source, config.seed)
    _WORKER["pileup"] = PileupOverlay(config.pileup_mu, config.source.ecm, config.seed + 1)


def _run_chunk(task: tuple[int, int, list[GenParticles] | None]) -> list[Event]:
    chunk_index, first_event_id, given = task
    config: GenerationConfig = _WORKER["config"]
    source: PythiaSource | None = _WORKER.get("source")
    pileup: PileupOverlay = _WORKER["pileup"]
    chunk_seed = int(np.random.SeedSequence([config.seed, chunk_index]).generate_state(1, dtype=np.uint32)[0])
    if source is not None:
        source.reseed(chunk_seed)
    pileup.reseed(chunk_seed + 1)
    n = len(given) if given is not None else min(config.chunk_size, config.n_events - first_event_id)
    events = []
    for i in range(n):
        event_id = first_event_id + i
        hard = given[i] if given is not None else source.next_event()
        gen, n_pu = pileup.overlay(hard)
        event = reconstruct_event(gen, _detector_seed(config.seed, event_id), config.detector)
        event["event_id"] = np.int64(event_id)
        event["process"] = np.int32(config.source.code)
        event["n_pileup"] = np.int32(n_pu)
        event["weight"] = np.float32(1.0)
        event["seed"] = np.int64(config.seed)
        events.append(event)
    add_jets(events)
    return events


# ---- parent side --------------------------------------------------------------------------------------------
def _tasks(config: GenerationConfig, hepmc: Path | None) -> Iterator[tuple[int, int, list[GenParticles] | None]]:
    if hepmc is None:
        for chunk_index, first in enumerate(range(0, config.n_events, config.chunk_size)):
            yield chunk_index, first, None
        return
    buffer: list[GenParticles] = []
    chunk_index = first = 0
    for gen in read_hepmc(hepmc):
        if config.n_events and first + len(buffer) >= config.n_events:
            break
        buffer.append(gen)
        if len(buffer) == config.chunk_size:
            yield chunk_index, first, buffer
            chunk_index, first, buffer = chunk_index + 1, first + len(buffer), []
    if buffer:
        yield chunk_index, first, buffer


def generate(
    config: GenerationConfig,
    output: str | Path,
    *,
    workers: int = 1,
    hepmc: str | Path | None = None,
    progress: bool = True,
) -> int:
    """Generate events into the ROOT file ``output``; returns the number of events written.

    With ``hepmc`` set, generator particles come from that HepMC file (``config.n_events`` = 0 reads all).
    """
    output = Path(output)
    hepmc_path = Path(hepmc) if hepmc is not None else None
    if hepmc_path is not None and not hepmc_path.is_file():
        raise FileNotFoundError(f"HepMC input {hepmc_path} does not exist")
    total = None if (hepmc_path is not None and config.n_events == 0) else config.n_events
    remove_stale_temporaries(output.parent)  # left by killed runs (their writer process is gone)
    written = 0
    with EventWriter(output) as writer, _progress_bar(total, progress, output.name) as bar:
        buffer: list[Event] = []
        try:
            for events in _map_chunks(config, _tasks(config, hepmc_path), workers):
                buffer.extend(events)
                bar.update(len(events))
                if len(buffer) >= _WRITE_BUFFER_EVENTS:
                    writer.write(events_to_awkward(buffer))
                    written += len(buffer)
                    buffer = []
        except BrokenProcessPool as error:
            raise RuntimeError(f"a generation worker process died ({error}); its traceback is above") from error
        if buffer:
            writer.write(events_to_awkward(buffer))
            written += len(buffer)
        if written == 0:  # an empty file would be rejected by every reader: fail instead, writing nothing
            raise ValueError(f"no events were generated for {output}")
    return written


def _map_chunks(config: GenerationConfig, tasks: Iterable, workers: int) -> Iterator[list[Event]]:
    if workers <= 1:
        _init_worker(config)
        yield from map(_run_chunk, tasks)
        return
    # spawn, not fork: Numba and Pythia state are rebuilt cleanly in each worker. A ProcessPoolExecutor (not
    # multiprocessing.Pool) so that a worker that fails to start or dies raises instead of hanging the run.
    _init_worker(config)  # fail fast, with the real message, on settings a worker would reject
    _WORKER.clear()
    # compile the Numba kernels once here, so the workers load them from the on-disk cache instead of all
    # compiling at the same time
    reconstruct_event(empty_gen(), 0, config.detector)
    context = multiprocessing.get_context("spawn")
    window = 2 * workers  # chunks in flight: keeps workers busy while memory stays bounded
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(config,)) as pool:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.submit(_run_chunk, task))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()



def _progress_bar(total: int | None, enabled: bool, name: str):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="ev", desc=f"generate {name}", dynamic_ncols=True)

