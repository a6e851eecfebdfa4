"""Statistical uncertainties of the validation metrics: what lets the CI gate scale with the sample size.

* :func:`binomial_uncertainty` — efficiencies and fake rates (Agresti-Coull at one sigma, so a measured 0 or 1
  on a few entries still gets a non-zero uncertainty);
* :func:`median_iqr_uncertainty` — seeded bootstrap of the median and of IQR/median (jet, particle and MET
  response: their distributions have non-Gaussian tails, so no closed formula fits);
* :func:`bootstrap_std` — seeded bootstrap of any statistic of independent samples;
* :func:`bootstrap_w1` — seeded bootstrap replicas of several Wasserstein-1 distances at once (W1 of flash vs
  full and of the noise floor share the full sample, so their ratio needs the same replicas), vectorised:
  a resample with replacement is a vector of integer weights on the original points;
* :func:`auc_uncertainty` — Hanley & McNeil (1982) standard error of a ROC AUC.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["auc_uncertainty", "binomial_uncertainty", "bootstrap_std", "bootstrap_w1", "median_iqr_uncertainty"]

N_BOOT = 200  # bootstrap replicas: the standard error of a bootstrap sigma is about 1 / sqrt(2 N_BOOT) = 5 %
_CHUNK_VALUES = 4_000_000  # resampled values held at once by the vectorised bootstrap


def binomial_uncertainty(k: float, n: float) -> float:
    """One-sigma uncertainty of an efficiency ``k / n``: ``sqrt(p~ (1 - p~) / (n + 1))``, ``p~ = (k + 1/2) / (n + 1)``.

    That is the Agresti-Coull interval at z = 1; unlike ``sqrt(p (1 - p) / n)`` it does not vanish at p = 0 or 1,
    which would make a gate infinitely strict on a small sample. NaN when ``n == 0``.
    """
    if n <= 0:
        return float("nan")
    p = (k + 0.5) / (n + 1.0)
    return math.sqrt(p * (1.0 - p) / (n + 1.0))


def median_iqr_uncertainty(values: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Bootstrap standard deviations of ``median(values)`` and of ``IQR / median`` (NaN for fewer than 2 values)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK_VALUES // x.size)
    medians, widths = [], []
    for start in range(0, n_boot, per_chunk):
        resampled = x[rng.integers(0, x.size, size=(min(per_chunk, n_boot - start), x.size))]
        q25, q50, q75 = np.percentile(resampled, [25, 50, 75], axis=1)
        medians.append(q50)
        with np.errstate(divide="ignore", invalid="ignore"):
            widths.append((q75 - q25) / q50)
    m, w = np.concatenate(medians), np.concatenate(widths)
    return float(np.std(m, ddof=1)), float(np.nanstd(w[np.isfinite(w)], ddof=1)) if np.isfinite(w).sum() > 1 else float("nan")


def bootstrap_std(
    statistic: Callable[..., float], samples: Sequence[np.ndarray], n_boot: int = N_BOOT, seed: int = 0
) -> float:
    """Bootstrap standard deviation of ``statistic(*samples)``: each sample (rows of an array) is resampled
    independently with replacement, ``n_boot`` times, from a seeded generator. Non-finite replicas are dropped."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(s) for s in samples]
    if any(len(a) == 0 for a in arrays):
        return float("nan")
    values = np.array(
        [statistic(*(a[rng.integers(0, len(a), size=len(a))] for a in arrays)) for _ in range(n_boot)], dtype=np.float64
    )
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if values.size > 1 else float("nan")


def auc_uncertainty(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of a ROC AUC measured on ``n_pos`` positives and ``n_neg`` negatives (Hanley & McNeil 1982).

    At AUC = 0.5 it is close to the exact null value ``sqrt((n_pos + n_neg + 1) / (12 n_pos n_neg))``.
    """
    if n_pos < 1 or n_neg < 1 or not math.isfinite(auc):
        return float("nan")
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def _resample_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """``[n_boot, n]`` multiplicities of the points in ``n_boot`` resamples of ``n`` points with replacement."""
    draws = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n)


def weighted_w1(u: np.ndarray, v: np.ndarray, wu: np.ndarray, wv: np.ndarray) -> np.ndarray:
    """W1 between weighted 1-D samples, for a stack of weight vectors: ``wu [B, len(u)]``, ``wv [B, len(v)]``
    -> ``[B]``. W1 = integral of |F_u - F_v| over the merged support (what ``scipy.stats.wasserstein_distance``
    computes for one weight vector)."""
    x = np.concatenate([u, v])
    order = np.argsort(x, kind="stable")
    dx = np.diff(x[order])
    w = np.concatenate([wu / wu.sum(1, keepdims=True), -wv / wv.sum(1, keepdims=True)], axis=1)[:, order]
    return np.sum(np.abs(np.cumsum(w, axis=1)[:, :-1]) * dx, axis=1)


def bootstrap_w1(
    samples: Sequence[np.ndarray], pairs: Sequence[tuple[int, int]], n_boot: int = N_BOOT, seed: int = 0
) -> np.ndarray:
    """``[n_boot, len(pairs)]`` bootstrap replicas of ``W1(samples[i], samples[j])`` for each pair ``(i, j)``.

    Each sample is resampled once per replica (shared by every pair that uses it), from a seeded generator.
    """
    arrays = [np.asarray(s, dtype=np.float64).reshape(-1) for s in samples]
    if any(a.size == 0 for a in arrays):
        raise ValueError(f"bootstrap_w1: empty sample among sizes {[a.size for a in arrays]}")
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(pairs)))
    per_chunk = max(1, _CHUNK_VALUES // (2 * max(a.size for a in arrays)))
    for start in range(0, n_boot, per_chunk):
        b = min(per_chunk, n_boot - start)
        counts = [_resample_counts(rng, a.size, b) for a in arrays]
        for k, (i, j) in enumerate(pairs):
            out[start : start + b, k] = weighted_w1(arrays[i], arrays[j], counts[i], counts[j])
    return out
