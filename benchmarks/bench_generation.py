"""Generation throughput: Pythia8 + detector simulation + PF + targets, and the detector simulation alone.

Writes a results JSON and (re)writes the "Generation throughput" section of BENCHMARKS.md between markers, so
the numbers in that file always come from a run of this script.

    python benchmarks/bench_generation.py --events 200 --out BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from hepzoo.benchmarks.report import replace_section
from hepzoo.datasets.detector import simulate_event
from hepzoo.datasets.generate import GenerationConfig, generate
from hepzoo.datasets.sources import PileupOverlay, PythiaSource, SourceSpec

BEGIN = "<!-- generation-benchmark:begin -->"
END = "<!-- generation-benchmark:end -->"


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}, {platform.system()}"


def time_full_chain(process: str, mu: float, n_events: int, workers: int, seed: int) -> float:
    """Events per second of `hepzoo generate` (everything, including writing the ROOT file)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = GenerationConfig(SourceSpec(process), n_events=n_events, seed=seed, pileup_mu=mu, chunk_size=50)
        # warm-up: Numba compilation and Pythia initialisation are excluded from the timing
        generate(GenerationConfig(SourceSpec(process), n_events=5, seed=seed), Path(tmp) / "warm.root", progress=False)
        start = time.perf_counter()
        generate(config, Path(tmp) / "bench.root", workers=workers, progress=False)
        return n_events / (time.perf_counter() - start)


def time_detector_only(mu: float, n_events: int, seed: int) -> tuple[float, float]:
    """Events per second of simulate_event alone on pre-generated ttbar(+pile-up) particles; mean particles."""
    source = PythiaSource(SourceSpec("ttbar"), seed)
    overlay = PileupOverlay(mu, 14000.0, seed + 1)
    events = [overlay.overlay(source.next_event())[0] for _ in range(n_events)]
    simulate_event(events[0], 0)  # compile
    start = time.perf_counter()
    for i, gen in enumerate(events):
        simulate_event(gen, i)
    elapsed = time.perf_counter() - start
    return n_events / elapsed, float(np.mean([len(e["gen_pid"]) for e in events]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--pileup", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results_generation.json"))
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()

    rows = []
    for workers in (1, 2):
        for mu in (0.0, args.pileup):
            n = args.events if mu == 0 else max(args.events // 4, 20)
            rate = time_full_chain("ttbar", mu, n, workers, args.seed)
            rows.append({"what": f"full chain ttbar, mu={mu:g}", "workers": workers, "events": n, "events_per_s": rate})
    for mu in (0.0, args.pileup):
        n = args.events if mu == 0 else max(args.events // 4, 20)
        rate, particles = time_detector_only(mu, n, args.seed)
        rows.append(
            {
                "what": f"detector simulation alone, ttbar mu={mu:g} ({particles:.0f} particles/event)",
                "workers": 1,
                "events": n,
                "events_per_s": rate,
            }
        )
    result = {"machine": machine_description(), "date": time.strftime("%Y-%m-%d"), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    _write_markdown(result, args.out)
    for row in rows:
        print(f"{row['what']:70s} workers={row['workers']}  {row['events_per_s']:8.1f} events/s")


def _write_markdown(result: dict, path: Path) -> None:
    table = [
        "## Generation throughput",
        "",
        f"Machine: {result['machine']}; measured {result['date']} by `benchmarks/bench_generation.py` "
        "(warm-up excluded; full chain = Pythia8 + pile-up + detector simulation + PF baseline + targets + jets "
        "+ ROOT writing).",
        "",
        "| what | worker processes | events | events/s |",
        "|---|---:|---:|---:|",
    ]
    table += [f"| {r['what']} | {r['workers']} | {r['events']} | {r['events_per_s']:.1f} |" for r in result["rows"]]
    replace_section(path, BEGIN, END, "\n".join(table))


if __name__ == "__main__":
    main()
