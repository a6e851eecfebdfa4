"""Statistics of ``hepzoo bench``: the timing loop, its stopping rule, and the summary of the timed calls.

``time.perf_counter`` around each call; warm-up calls (at least one, until ``warmup_s``) are excluded;
repetitions stop when the 95% confidence interval of the mean (Student t) is within ``target_rel_ci`` of the
mean, or when the time budget is spent (at least 3 calls), or at ``max_reps`` (:class:`BenchSettings`).
The summary of the per-call seconds is the mean with its confidence interval, p50, p99 and the minimum.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hepzoo.benchmarks.points import BenchSettings

__all__ = ["Timing", "mean_ci", "summarize", "time_calls"]


@functools.lru_cache(maxsize=512)
def _t_quantile(confidence: float, dof: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2.0, dof))


def mean_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its ``confidence`` interval (Student t); ``inf`` half-width for one sample."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci needs at least one sample")
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.inf
    return mean, _t_quantile(confidence, int(x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)


def summarize(samples: Sequence[float]) -> dict[str, float | int]:
    """Per-call seconds -> mean, 95% CI half-width (absolute and relative), p50, p99, min, count."""
    x = np.asarray(samples, dtype=np.float64)
    mean, half = mean_ci(x)
    return {
        "reps": int(x.size),
        "mean_s": mean,
        "ci95_s": half if math.isfinite(half) else None,
        "rel_ci95": half / mean if math.isfinite(half) and mean > 0 else None,
        "p50_s": float(np.percentile(x, 50)),
        "p99_s": float(np.percentile(x, 99)),
        "min_s": float(x.min()),
    }


@dataclass
class Timing:
    """What :func:`time_calls` measured: wall seconds per timed call, and the process CPU seconds over them."""

    samples: list[float]
    warmup_calls: int
    stop: str  # "ci" | "budget" | "max_reps"
    cpu_s: float  # process CPU time of all timed calls (wall >> CPU with one thread: the machine was busy)


def time_calls(
    call: Callable[[], Any],
    settings: BenchSettings,
    clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.process_time,
) -> Timing:
    """Warm up, then time ``call`` until the stopping rule of the module docstring."""
    _t_quantile(0.95, 1)  # imports scipy now, not inside the timed loop
    start = clock()
    warm = 0
    while True:
        call()
        warm += 1
        if clock() - start >= settings.warmup_s or warm >= 1000:
            break
    samples: list[float] = []
    n, mean, m2 = 0, 0.0, 0.0  # Welford running mean and sum of squared deviations
    cpu0 = cpu_clock()
    t0 = clock()
    stop = ""
    while not stop:
        s = clock()
        call()
        e = clock()
        dt = e - s
        samples.append(dt)
        n += 1
        delta = dt - mean
        mean += delta / n
        m2 += delta * (dt - mean)
        elapsed = e - t0
        if n >= settings.max_reps:
            stop = "max_reps"
        elif n >= settings.min_reps and mean > 0 and elapsed >= 0.25 * settings.budget_s and (
            _t_quantile(0.95, n - 1) * math.sqrt(max(m2, 0.0) / (n - 1) / n) <= settings.target_rel_ci * mean
        ):
            stop = "ci"
        elif (elapsed >= settings.budget_s and n >= 3) or elapsed >= 3 * settings.budget_s:
            stop = "budget"
    return Timing(samples, warm, stop, cpu_clock() - cpu0)
