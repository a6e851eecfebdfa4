"""Padding waste of size buckets on real events: sum of padded elements over sum of real elements (issue 20).

Arithmetic, not timing: it reads only the element counters (tracks + clusters, the collections of the family
with an element axis) of ROOT files in the hepzoo schema and compares the power-of-two ``DEFAULT_BUCKETS``
(cards exported before the policy) with :func:`hepzoo.export.buckets.export_buckets` (new exports) at a
granularity (64: GNN-LSH bins, 1: transformer). Besides the events as they are, it measures unions of
events (the element lists of k random events concatenated until a size drawn uniformly between
``--union-min`` and ``--union-max`` elements is reached), which stand in for the larger events of
high pile-up. Run: ``python -m hepzoo.benchmarks.padding_waste data/v2/ttbar_test.root``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hepzoo.datasets import schema
from hepzoo.datasets.ragged import DEFAULT_BUCKETS, padded_size, padding_waste
from hepzoo.export.buckets import export_buckets
from hepzoo.models.families import families

__all__ = ["element_counts", "unions", "waste_table"]


def element_counts(path: str | Path) -> np.ndarray:
    """Elements per event of a file: the sum of the counters of the element family's input collections."""
    import uproot

    family = next(f for f in families() if f.elements)
    with uproot.open(path) as file:
        tree = file["events"]
        counters = [schema.COLLECTIONS[p].counter for p in family.input_collections]
        return sum(np.asarray(tree[c].array(library="np"), dtype=np.int64) for c in counters)


def unions(counts: np.ndarray, low: int, high: int, n: int = 2000, seed: int = 0) -> np.ndarray:
    """Sizes of ``n`` unions of events: each draws a target size uniformly from [low, high] and takes events at
    random (seeded, with replacement across unions) until it reaches the target; one over ``high`` is redrawn."""
    rng = np.random.default_rng(seed)
    c = np.asarray(counts, dtype=np.int64)
    c = c[c > 0]
    out: list[int] = []
    while len(out) < n:
        target = int(rng.integers(low, high + 1))
        total = 0
        while total < target:
            total += int(c[rng.integers(c.size)])
        if total <= high:
            out.append(total)
    return np.asarray(out, dtype=np.int64)


def _worst(counts: np.ndarray, buckets: Sequence[int], g: int) -> float:
    c = counts[counts > 0]
    return max((padded_size(int(n), buckets, g) / n for n in c), default=float("nan"))


def waste_table(samples: dict[str, np.ndarray], granularities: Sequence[int] = (64, 1)) -> list[dict]:
    """One row per (sample, granularity): events, real elements, waste (sum padded / sum real) and the worst
    event's padded/real, for the old and the new bucket list."""
    rows = []
    for name, counts in samples.items():
        for g in granularities:
            old = [b for b in DEFAULT_BUCKETS if b % g == 0]
            new = export_buckets(g)
            rows.append({
                "sample": name, "granularity": g, "events": int(counts.size), "elements": int(counts.sum()),
                "old_waste": padding_waste(counts, old, g), "new_waste": padding_waste(counts, new, g),
                "old_worst": _worst(counts, old, g), "new_worst": _worst(counts, new, g),
                "old_buckets": len(old), "new_buckets": len(new),
            })
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hepzoo.benchmarks.padding_waste", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--union-min", type=int, default=5000)
    parser.add_argument("--union-max", type=int, default=20000)
    parser.add_argument("--unions", type=int, default=2000, help="number of unions per file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    samples: dict[str, np.ndarray] = {}
    for path in args.files:
        counts = element_counts(path)
        samples[path.name] = counts
        samples[f"{path.name} unions {args.union_min}-{args.union_max}"] = unions(
            counts, args.union_min, args.union_max, args.unions, args.seed)
    print("| sample | granularity | events | elements | waste old (2^k) | waste new (x1.25) | worst old | worst new "
          "| buckets old/new |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in waste_table(samples):
        print(f"| {r['sample']} | {r['granularity']} | {r['events']} | {r['elements']} | {r['old_waste']:.3f} | "
              f"{r['new_waste']:.3f} | {r['old_worst']:.2f} | {r['new_worst']:.2f} | "
              f"{r['old_buckets']}/{r['new_buckets']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
