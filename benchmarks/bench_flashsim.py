"""Flash-sim vs the full chain it replaces, in one run on one machine: objects per second.

Full chain (per event, from generator particles): detector simulation + clustering + rule-based PF + anti-kt
jet clustering of the PF candidates. Flash-sim: the released model on the generator objects of the same
events (PyTorch eager, one thread, warm-up excluded). Writes the "Flash-sim speed" section of BENCHMARKS.md.

    python benchmarks/bench_flashsim.py --events 200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import awkward as ak
import numpy as np
import torch

from hepzoo.benchmarks.bench_generation import machine_description
from hepzoo.benchmarks.report import replace_section
from hepzoo.datasets.detector import simulate_event
from hepzoo.datasets.io import read_events
from hepzoo.datasets.jets import antikt_jets
from hepzoo.datasets.pf_baseline import run_pf
from hepzoo.export.zoo import find_release
from hepzoo.models.families import FLASHSIM

BEGIN = "<!-- flashsim-benchmark:begin -->"
END = "<!-- flashsim-benchmark:end -->"
_GEN_FIELDS = ("pid", "charge", "pt", "eta", "phi", "e", "m", "vx", "vy", "vz", "is_pu")


def _gen_arrays(events: ak.Array) -> list[dict[str, np.ndarray]]:
    return [{f"gen_{f}": ak.to_numpy(ev.gen[f]) for f in _GEN_FIELDS} for ev in events]


def time_full_chain(events: ak.Array) -> float:
    """Seconds for detector simulation + PF + PF-jet clustering of all events."""
    gens = _gen_arrays(events)
    simulate_event(gens[0], 0)  # warm-up (Numba)
    start = time.perf_counter()
    pf = []
    for i, gen in enumerate(gens):
        pf.append(run_pf(simulate_event(gen, i)))
    counts = [len(p["pf_pt"]) for p in pf]
    cat = {k: ak.unflatten(np.concatenate([p[f"pf_{k}"] for p in pf]), counts) for k in ("pt", "eta", "phi", "e")}
    antikt_jets(cat["pt"], cat["eta"], cat["phi"], cat["e"])
    return time.perf_counter() - start


def time_flash(model: torch.nn.Module, context: np.ndarray, repeats: int = 5) -> float:
    """Best-of-``repeats`` seconds for one batched flash-sim pass over all objects."""
    x = torch.from_numpy(np.ascontiguousarray(context, dtype=np.float32))
    noise = torch.randn(len(x), int(model.n_target), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(x[:8], noise[:8])  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            model(x, noise)
            best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/ttbar_test.root")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results_flashsim.json"))
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    events = read_events(args.data)[: args.events]
    full_s = time_full_chain(events)
    rows = []
    for kind in FLASHSIM.kinds:  # the released model of each object kind: flashsim-jet, flashsim-track
        model = find_release(f"flashsim-{kind}").build_model()
        context = FLASHSIM.kinds[kind].encode(events)["context"]
        flash_s = time_flash(model, context)
        rows.append(
            {
                "model": f"flashsim-{kind}",
                "objects": len(context),
                "full_chain_objects_per_s": len(context) / full_s,
                "flash_objects_per_s": len(context) / flash_s,
                "speed_up": full_s / flash_s,
            }
        )
    result = {
        "machine": machine_description(),
        "date": time.strftime("%Y-%m-%d"),
        "events": len(events),
        "full_chain_s": full_s,
        "rows": rows,
    }
    args.json.write_text(json.dumps(result, indent=2))
    lines = [
        "## Flash-sim speed",
        "",
        f"Machine: {result['machine']}; {result['date']}; `benchmarks/bench_flashsim.py` on {len(events)} ttbar events "
        f"({args.data}). Full chain = detector simulation + clustering + PF + PF-jet clustering "
        f"({full_s:.2f} s for all events, which produces every object type at once); flash-sim = the released model, "
        "PyTorch eager, 1 thread, all objects in one batch, best of 5.",
        "",
        "| model | objects | full chain objects/s | flash-sim objects/s | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['model']} | {r['objects']} | {r['full_chain_objects_per_s']:.0f} | {r['flash_objects_per_s']:.0f} | "
        f"{r['speed_up']:.0f}x |"
        for r in rows
    ]
    replace_section(args.out, BEGIN, END, "\n".join(lines))
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
