"""Fidelity of a flash simulation against full simulation: 1-D distances, a two-sample classifier test and
efficiency curves, each next to a **noise floor** (full simulation vs an independent full-simulation sample).

* :func:`wasserstein_1`, :func:`ks_statistic` — per variable (1-D, unweighted);
* :func:`roc_auc` — ROC AUC from rank statistics (Mann-Whitney U; ties count 1/2);
* :func:`classifier_auc` — train a small seeded torch MLP to tell sample ``a`` from sample ``b`` (optionally
  with each row's context concatenated to its features, which tests the *conditional* distributions) and
  return the AUC on a held-out half: 0.5 = indistinguishable, 1 = fully separated (CaloChallenge's headline);
* :func:`classifier_test` — the same, with a bootstrap uncertainty of the AUC (over test events when rows
  carry an event index);
* :func:`efficiency_curve` — per-bin efficiency with its binomial uncertainty ``sqrt(eff (1 - eff) / n)``;
* :func:`fidelity_report` — all of the above for flash vs full and full vs full-b, as a plain JSON-able dict.

Samples are dicts ``{"target": [N, D], "matched": [N], "context": [N, C]}`` (the ``flashsim_data`` tables;
for a flash-sim sample ``matched`` may be the sampled acceptance or the efficiency probability in [0, 1]).
With an ``"event_index": [N]`` in every sample, the classifier splits train/test by event (see
:func:`classifier_auc`).
Distances and classifiers use matched rows only; efficiencies use all rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "classifier_auc",
    "classifier_test",
    "efficiency_curve",
    "fidelity_report",
    "ks_statistic",
    "roc_auc",
    "wasserstein_1",
]


def _1d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    return a


def wasserstein_1(a: Any, b: Any) -> float:
    """Earth mover's distance between the empirical 1-D distributions of ``a`` and ``b`` (units of the data)."""
    return float(stats.wasserstein_distance(_1d(a, "a"), _1d(b, "b")))


def ks_statistic(a: Any, b: Any) -> float:
    """Two-sample Kolmogorov-Smirnov statistic ``max_x |F_a(x) - F_b(x)|`` (empirical CDFs)."""
    a, b = np.sort(_1d(a, "a")), np.sort(_1d(b, "b"))
    x = np.concatenate([a, b])
    fa = np.searchsorted(a, x, side="right") / a.size
    fb = np.searchsorted(b, x, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties 1/2.

    Computed from average ranks (Mann-Whitney U): ``(sum of positive ranks - n_pos (n_pos + 1) / 2) /
    (n_pos n_neg)``. Raises ``ValueError`` unless both classes are present.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"roc_auc: {s.size} scores but {y.size} labels")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs both positive and negative labels")
    ranks = stats.rankdata(s, method="average")
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _features(x: Any, context: Any | None, name: str) -> np.ndarray:
    f = np.asarray(x, dtype=np.float64)
    f = f.reshape(len(f), -1)
    if context is not None:
        c = np.asarray(context, dtype=np.float64).reshape(len(f) if len(f) else 0, -1)
        if len(c) != len(f):
            raise ValueError(f"classifier_auc: {name} has {len(f)} rows but its context {len(c)}")
        f = np.concatenate([f, c], axis=1)
    return f


def classifier_auc(*args: Any, **kwargs: Any) -> float:
    """Two-sample classifier test AUC: :func:`classifier_test` (same arguments) without its uncertainty."""
    return classifier_test(*args, n_boot=0, **kwargs)["auc"]


def classifier_test(
    sample_a: Any,
    sample_b: Any,
    context_a: Any | None = None,
    context_b: Any | None = None,
    *,
    seed: int = 0,
    test_fraction: float = 0.5,
    hidden: int = 64,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 3e-3,
    max_rows: int | None = 100_000,
    groups_a: Any | None = None,
    groups_b: Any | None = None,
    n_boot: int = 200,
) -> dict[str, float]:
    """Two-sample classifier test: ROC AUC of an MLP trained to tell ``a`` (label 1) from ``b`` (label 0),
    measured on a held-out ``test_fraction`` of each sample (split per sample, so both are in both parts).

    ``sample_*``: ``[N, D]`` (or ``[N]``); ``context_*``: optional ``[N, C]`` concatenated to the features (give
    both or neither). Features are standardised with the training part's mean and std; the classes are
    weighted to equal total weight. Seeded (``seed``: subsampling to ``max_rows`` per sample, split, weights,
    batches) and run under ``torch.random.fork_rng``, so the caller's RNG streams are left untouched.

    ``groups_*`` (optional, both or neither): an integer group id per row, e.g. the event index. Rows are then
    split by group: a seeded random ``test_fraction`` of the group ids (the same ids in both samples) forms the
    test part. Rows of one event share event-level context (vertex z, pile-up), and a flash sample shares its
    context rows with the full sample it was conditioned on; a row-wise split lets the classifier recognise
    memorised training events in the test part (AUC biased above 0.5 for independent samples, below 0.5 for
    paired ones). Splitting by event removes that leakage.

    Returns ``{"auc", "auc_unc", "n_test_a", "n_test_b"}``: ``auc_unc`` is the standard deviation of the AUC
    over ``n_boot`` seeded bootstrap resamples of the test part, resampling whole groups (the same group ids
    in both samples together) when groups are given, rows otherwise (NaN when ``n_boot`` is 0).
    """
    if (context_a is None) != (context_b is None):
        raise ValueError("classifier_auc: give context for both samples or for neither")
    if (groups_a is None) != (groups_b is None):
        raise ValueError("classifier_auc: give groups for both samples or for neither")
    fa, fb = _features(sample_a, context_a, "sample_a"), _features(sample_b, context_b, "sample_b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"classifier_auc: samples have {fa.shape[1]} and {fb.shape[1]} feature columns")
    rng = np.random.default_rng(seed)
    group_list = None
    if groups_a is not None:
        group_list = [np.asarray(groups_a).reshape(-1), np.asarray(groups_b).reshape(-1)]
        for g, f, name in zip(group_list, (fa, fb), ("a", "b")):
            if len(g) != len(f):
                raise ValueError(f"classifier_auc: sample_{name} has {len(f)} rows but groups_{name} {len(g)}")
        ids = np.unique(np.concatenate(group_list))
        test_ids = ids[rng.permutation(len(ids))[: int(round(test_fraction * len(ids)))]]
    parts, test_groups = [], []
    for i, f in enumerate((fa, fb)):
        g = group_list[i] if group_list is not None else None
        if max_rows is not None and len(f) > max_rows:
            keep = rng.choice(len(f), max_rows, replace=False)
            f, g = f[keep], (g[keep] if g is not None else None)
        if g is not None:
            is_test = np.isin(g, test_ids)
            train, test = f[~is_test], f[is_test]
            test_groups.append(g[is_test])
        else:
            idx = rng.permutation(len(f))
            n_test = int(round(test_fraction * len(f)))
            train, test = f[idx[n_test:]], f[idx[:n_test]]
        if len(test) < 1 or len(train) < 1:
            raise ValueError(f"classifier_auc: {len(f)} rows are too few to split into train and test parts")
        parts.append((train, test))
    (tr_a, te_a), (tr_b, te_b) = parts
    x_tr = np.concatenate([tr_a, tr_b])
    y_tr = np.concatenate([np.ones(len(tr_a)), np.zeros(len(tr_b))])
    w_tr = np.concatenate([np.full(len(tr_a), 0.5 / len(tr_a)), np.full(len(tr_b), 0.5 / len(tr_b))]) * len(x_tr)
    mean, std = x_tr.mean(0), x_tr.std(0)
    std = np.where(std > 0, std, 1.0)
    x_te = np.concatenate([te_a, te_b])
    y_te = np.concatenate([np.ones(len(te_a)), np.zeros(len(te_b))])
    g_te = np.concatenate(test_groups) if test_groups else None

    import torch  # the classifier only: the rest of this module (and hepzoo validate of MLPF) runs without torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x = torch.as_tensor((x_tr - mean) / std, dtype=torch.float32)
        y = torch.as_tensor(y_tr, dtype=torch.float32)
        w = torch.as_tensor(w_tr, dtype=torch.float32)
        net = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1),
        )  # fmt: skip
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for _ in range(epochs):
            for idx in torch.randperm(len(x)).split(batch_size):
                logit = net(x[idx]).squeeze(-1)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y[idx], weight=w[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            scores = net(torch.as_tensor((x_te - mean) / std, dtype=torch.float32)).squeeze(-1).numpy()
    return {
        "auc": roc_auc(scores, y_te),
        "auc_unc": _bootstrap_auc_std(scores, y_te.astype(bool), g_te, n_boot, seed),
        "n_test_a": len(te_a),
        "n_test_b": len(te_b),
    }


def _bootstrap_auc_std(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, n_boot: int, seed: int) -> float:
    """Standard deviation of the AUC over bootstrap resamples of rows, or of whole groups when given."""
    if n_boot < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    if groups is not None:
        ids, inverse = np.unique(groups, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        rows_of = np.split(order, np.searchsorted(inverse[order], np.arange(1, len(ids))))
    values = []
    for _ in range(n_boot):
        if groups is None:
            rows = rng.integers(0, len(scores), len(scores))
        else:
            rows = np.concatenate([rows_of[i] for i in rng.integers(0, len(ids), len(ids))])
        y = labels[rows]
        if y.any() and not y.all():
            values.append(roc_auc(scores[rows], y))
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def efficiency_curve(values: Any, passed: Any, edges: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per bin of ``values`` (``edges``, numpy histogram convention, values outside ignored): the efficiency
    ``k / n`` (``passed`` bool, or probabilities in [0, 1] summed) and its binomial uncertainty
    ``sqrt(eff (1 - eff) / n)``. Empty bins give NaN for both."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    p = np.asarray(passed, dtype=np.float64).reshape(-1)
    if v.shape != p.shape:
        raise ValueError(f"efficiency_curve: {v.size} values but {p.size} pass flags")
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0):
        raise ValueError("efficiency_curve: edges must be at least 2 strictly increasing values")
    n, _ = np.histogram(v, bins=e)
    k, _ = np.histogram(v, bins=e, weights=p)
    with np.errstate(invalid="ignore", divide="ignore"):
        eff = np.where(n > 0, k / np.maximum(n, 1), np.nan)
        err = np.where(n > 0, np.sqrt(np.clip(eff * (1.0 - eff), 0.0, None) / np.maximum(n, 1)), np.nan)
    return eff, err


# ---- report ---------------------------------------------------------------------------------------------------


def plain_json(x: Any) -> Any:
    """Plain JSON data: arrays to lists, numpy scalars to Python, NaN/inf to None."""
    if isinstance(x, Mapping):
        return {str(k): plain_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [plain_json(v) for v in np.asarray(x, dtype=object).tolist()] if isinstance(x, np.ndarray) else [
            plain_json(v) for v in x
        ]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x


def _check(sample: Mapping[str, Any], name: str) -> dict[str, np.ndarray]:
    missing = [k for k in ("target", "matched") if k not in sample]
    if missing:
        raise ValueError(f"fidelity_report: {name} lacks {missing}")
    out = {"target": np.asarray(sample["target"], dtype=np.float64), "matched": np.asarray(sample["matched"])}
    out["target"] = out["target"].reshape(len(out["target"]), -1)
    if sample.get("context") is not None:
        out["context"] = np.asarray(sample["context"], dtype=np.float64).reshape(len(out["target"]), -1)
    if sample.get("event_index") is not None:
        out["event_index"] = np.asarray(sample["event_index"]).reshape(-1)
        if len(out["event_index"]) != len(out["target"]):
            raise ValueError(f"fidelity_report: {name} has {len(out['target'])} target rows, {len(out['event_index'])} event indices")
    if len(out["matched"]) != len(out["target"]):
        raise ValueError(f"fidelity_report: {name} has {len(out['target'])} target rows, {len(out['matched'])} matched")
    return out


def _selected(s: dict[str, np.ndarray]) -> np.ndarray:
    m = s["matched"]
    return m.astype(bool) if m.dtype == bool else m >= 0.5


def _pt_eta(context: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    low = [n.lower() for n in names]
    out = {}
    if "pt" in low:
        out["pt"] = context[:, low.index("pt")]
    elif "log_pt" in low:
        out["pt"] = np.exp(context[:, low.index("log_pt")])
    if "eta" in low:
        out["eta"] = context[:, low.index("eta")]
    return out


def fidelity_report(
    flash: Mapping[str, Any],
    full: Mapping[str, Any],
    noise_floor_full_b: Mapping[str, Any],
    names: Sequence[str],
    *,
    context_names: Sequence[str] | None = None,
    pt_edges: Sequence[float] | None = None,
    eta_edges: Sequence[float] | None = None,
    seed: int = 0,
    classifier: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Flash vs full next to full vs full-b (the noise floor). Returns a JSON-able dict::

        {"n": {"flash": {"rows", "matched"}, "full": ..., "full_b": ...},
         "variables": {name: {"w1": {"flash_vs_full", "noise_floor"}, "ks": {...}}},
         "auc": {"flash_vs_full", "noise_floor"},                 # classifier on matched rows, with context
         "efficiency": {"pt"|"eta": {"edges", "flash"|"full"|"full_b": {"efficiency", "uncertainty"}}}}

    ``names``: the target column names (``D``). ``context_names`` (the context columns) locate pT (``pt`` or
    ``log_pt``, exponentiated) and ``eta`` for the efficiency curves (skipped when absent). Default edges:
    pT deciles of the full sample, 10 equal eta bins over its range. ``classifier``: keyword arguments for
    :func:`classifier_auc`. A full-b sample from an independent full-simulation run of the same generator
    events gives the floor that thresholds should be set against.
    """
    f, a, b = _check(flash, "flash"), _check(full, "full"), _check(noise_floor_full_b, "noise_floor_full_b")
    d = a["target"].shape[1]
    if len(names) != d or f["target"].shape[1] != d or b["target"].shape[1] != d:
        raise ValueError(f"fidelity_report: {len(names)} names for targets of {d} columns (flash "
                         f"{f['target'].shape[1]}, full-b {b['target'].shape[1]})")  # fmt: skip
    sel = {k: _selected(s) for k, s in (("flash", f), ("full", a), ("full_b", b))}
    tf, ta, tb = f["target"][sel["flash"]], a["target"][sel["full"]], b["target"][sel["full_b"]]
    report: dict[str, Any] = {
        "n": {k: {"rows": len(s["target"]), "matched": int(sel[k].sum())} for k, s in (("flash", f), ("full", a), ("full_b", b))},
        "variables": {},
    }  # fmt: skip
    for j, name in enumerate(names):
        report["variables"][name] = {
            "w1": {"flash_vs_full": wasserstein_1(tf[:, j], ta[:, j]), "noise_floor": wasserstein_1(tb[:, j], ta[:, j])},
            "ks": {"flash_vs_full": ks_statistic(tf[:, j], ta[:, j]), "noise_floor": ks_statistic(tb[:, j], ta[:, j])},
        }  # fmt: skip

    ckw = dict(classifier or {})
    use_ctx = all("context" in s for s in (f, a, b))
    ctx = (lambda s, k: s["context"][sel[k]]) if use_ctx else (lambda s, k: None)
    by_event = all("event_index" in s for s in (f, a, b))
    grp = (lambda s, k: s["event_index"][sel[k]]) if by_event else (lambda s, k: None)
    g_f, g_a, g_b = grp(f, "flash"), grp(a, "full"), grp(b, "full_b")
    test_flash = classifier_test(tf, ta, ctx(f, "flash"), ctx(a, "full"), seed=seed, groups_a=g_f, groups_b=g_a, **ckw)
    test_floor = classifier_test(tb, ta, ctx(b, "full_b"), ctx(a, "full"), seed=seed, groups_a=g_b, groups_b=g_a, **ckw)
    report["auc"] = {
        "flash_vs_full": test_flash["auc"],
        "noise_floor": test_floor["auc"],
        "flash_vs_full_unc": test_flash["auc_unc"],
        "noise_floor_unc": test_floor["auc_unc"],
        "with_context": use_ctx,
        "split_by_event": by_event,
    }

    report["efficiency"] = {}
    if context_names is not None and "context" in a:
        per = {k: _pt_eta(s["context"], context_names) for k, s in (("flash", f), ("full", a), ("full_b", b)) if "context" in s}
        default_edges = {
            "pt": lambda v: np.unique(np.quantile(v, np.linspace(0, 1, 11))),
            "eta": lambda v: np.linspace(v.min(), v.max() + 1e-9, 11),
        }
        given = {"pt": pt_edges, "eta": eta_edges}
        for var in ("pt", "eta"):
            if var not in per["full"]:
                continue
            edges = np.asarray(given[var], np.float64) if given[var] is not None else default_edges[var](per["full"][var])
            entry: dict[str, Any] = {"edges": edges}
            for k, s in (("flash", f), ("full", a), ("full_b", b)):
                if k in per and var in per[k]:
                    eff, err = efficiency_curve(per[k][var], s["matched"].astype(np.float64), edges)
                    entry[k] = {"efficiency": eff, "uncertainty": err}
            report["efficiency"][var] = entry
    return plain_json(report)
