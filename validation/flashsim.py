"""Sample a flash-sim model on generator objects and compare it with the full chain it replaces.

The flash sample is drawn from seeded noise (the exported graph takes its noise as an input), so a report is
reproducible from its seed. The noise floor is the same comparison between two independent full-chain
samples of the same process.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

import awkward as ak
import numpy as np

from hepzoo.models.families import FLASHSIM, ObjectKind

from .fidelity import fidelity_report

if TYPE_CHECKING:  # torch: the flash sampler of a torch model and the classifier test (fidelity_report)
    import torch


def _kind(kind: str) -> ObjectKind:
    """The flash-sim object kind ``kind`` (:data:`hepzoo.models.families.FLASHSIM`'s kinds)."""
    if kind not in FLASHSIM.kinds:
        raise ValueError(f"unknown flash-sim kind {kind!r}; choose one of {sorted(FLASHSIM.kinds)}")
    return FLASHSIM.kinds[kind]


def flash_sample(model: torch.nn.Module, context: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Efficiency decision and reconstructed-object sample for each generator object (seeded)."""
    import torch

    model.eval()
    generator = torch.Generator().manual_seed(seed)
    n = len(context)
    noise = torch.randn(n, int(model.n_target), generator=generator)
    uniform = torch.rand(n, generator=generator)
    with torch.no_grad():
        efficiency, sample = model(torch.from_numpy(np.ascontiguousarray(context, dtype=np.float32)), noise)
    return {"context": context, "matched": (uniform < efficiency).numpy(), "target": sample.numpy()}


def evaluate(
    model: torch.nn.Module, kind: str, full: ak.Array, full_b: ak.Array, seed: int = 0
) -> dict:
    """Fidelity of ``model`` (flash) against the full chain ``full``, next to ``full_b`` vs ``full``."""
    object_kind = _kind(kind)
    truth: Mapping[str, np.ndarray] = object_kind.encode(full)
    truth_b: Mapping[str, np.ndarray] = object_kind.encode(full_b)
    flash = flash_sample(model, truth["context"], seed)
    flash["event_index"] = truth["event_index"]  # the classifier splits train/test by event (no leakage)
    columns = ("context", "matched", "target", "event_index")
    report = fidelity_report(
        flash,
        {k: truth[k] for k in columns},
        {k: truth_b[k] for k in columns},
        object_kind.target_names,
        context_names=object_kind.context_names,
        seed=seed,
    )
    report["seed"] = seed
    report["kind"] = kind
    return report


def release_metrics(
    model: torch.nn.Module, config: dict, events: ak.Array, *, noise_floor=None, max_events: int = 0, seed: int = 1,
    **_: object,
) -> dict:
    """``hepzoo zoo release``: fidelity of the trained model (kind: the config's ``data.kind``) against the
    held-out full chain ``events``, next to the noise floor of the files ``noise_floor`` (required; at most
    ``max_events`` of them, 0: all), whose sha256 are recorded."""
    from hepzoo.datasets.io import expand_paths, read_events
    from hepzoo.export.zoo import sha256_of

    if not noise_floor:
        raise ValueError("a flash-sim release needs --noise-floor: an independent full-chain sample")
    floor_files = expand_paths(noise_floor)
    floor = read_events(floor_files)
    floor = floor[:max_events] if max_events else floor
    metrics = evaluate(model, config["data"]["kind"], events, floor, seed=seed)
    metrics["noise_floor_files"] = {str(p): sha256_of(p) for p in floor_files}
    return metrics


def format_report(report: dict) -> str:
    """Plain-text table: each metric for flash vs full next to the noise floor (full vs independent full)."""
    lines = [f"{report['kind']} flash-sim vs full chain (noise floor: full vs independent full), seed {report['seed']}"]
    n = report["n"]
    lines.append(
        f"  objects: flash {n['flash']['rows']} ({n['flash']['matched']} matched), full {n['full']['rows']} "
        f"({n['full']['matched']}), full-b {n['full_b']['rows']} ({n['full_b']['matched']})"
    )
    lines.append(f"  {'variable':14s} {'W1 flash':>10s} {'W1 floor':>10s} {'KS flash':>9s} {'KS floor':>9s}")
    for name, v in report["variables"].items():
        lines.append(
            f"  {name:14s} {v['w1']['flash_vs_full']:10.4f} {v['w1']['noise_floor']:10.4f} "
            f"{v['ks']['flash_vs_full']:9.4f} {v['ks']['noise_floor']:9.4f}"
        )
    auc = report["auc"]
    lines.append(f"  classifier AUC: flash vs full {auc['flash_vs_full']:.3f}, floor {auc['noise_floor']:.3f}")
    for var, entry in report.get("efficiency", {}).items():
        flash = np.asarray(entry["flash"]["efficiency"])
        full = np.asarray(entry["full"]["efficiency"])
        lines.append(f"  efficiency vs {var}: max |flash - full| = {np.nanmax(np.abs(flash - full)):.3f}")
    return "\n".join(lines)


# ---- deployed-artifact validation (hepzoo validate) --------------------------------------------------------

W1_N_BOOT = 100  # bootstrap replicas of the W1 values and of their ratio


def _std(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.std(finite, ddof=1)) if finite.size > 1 else float("nan")


def kind_of(card) -> str:
    """The flash-sim kind of a model card, from the feature names of its context input."""
    noise = {n.name for n in card.noise_inputs}
    context = next(t for t in card.inputs if t.name not in noise)
    for kind in FLASHSIM.kinds.values():
        names = kind.context_names
        if tuple(context.feature_names or ())[: len(names)] == names:
            return kind.name
    raise ValueError(
        f"{card.name}: context input {context.name!r} features {context.feature_names} match no flash-sim kind "
        f"({sorted(FLASHSIM.kinds)})"
    )


def split_halves(events: ak.Array) -> tuple[ak.Array, ak.Array]:
    """Even-numbered and odd-numbered events: two independent full-chain samples of the same process.

    The even half is the full chain the flash-sim is compared with (and conditioned on); the odd half is the
    'independent full chain' of the noise floor. Alternating (not first/second half) keeps both halves alike
    when the input concatenates files of different conditions.
    """
    if len(events) < 2:
        raise ValueError(f"the noise floor needs at least 2 events to split in halves, got {len(events)}")
    return events[0::2], events[1::2]


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Pin torch's intra-op threads to one for the block (restored after). The classifier test is a tiny MLP on
    small batches: one thread is fastest, and several threads competing for busy cores are many times slower."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def evaluate_runtime(session, events: ak.Array, seed: int = 0) -> tuple[dict, dict]:
    """:func:`runtime_fidelity` with torch pinned to one thread (:func:`one_torch_thread`)."""
    with one_torch_thread():
        return runtime_fidelity(session, events, seed)


def runtime_fidelity(session, events: ak.Array, seed: int = 0) -> tuple[dict, dict]:
    """Fidelity of the deployed flash-sim model (a :class:`hepzoo.runtime.Session`) against the full chain.

    ``events`` are split by :func:`split_halves`; the model is sampled (seeded) on the generator objects of the
    even half and compared with their full-chain reconstruction, next to the noise floor (odd half vs even
    half); the classifier splits train/test by event. Adds to :func:`~hepzoo.validation.fidelity.fidelity_report`:
    bootstrap uncertainties of each W1 and of W1(flash) / W1(floor) (``ratio``), the AUC excess over the floor (``excess`` = AUC(flash) - max(AUC(floor), 0.5)), and the
    inclusive efficiency of flash vs full. Returns ``(report, arrays)``; ``arrays`` holds the matched target
    rows of the three samples for plots.
    """
    from .uncertainty import binomial_uncertainty, bootstrap_w1

    kind = kind_of(session.card)
    object_kind = _kind(kind)
    full_events, floor_events = split_halves(events)
    truth, truth_b = object_kind.encode(full_events), object_kind.encode(floor_events)
    if min(int(truth["matched"].sum()), int(truth_b["matched"].sum())) < 4:
        raise ValueError(f"{len(events)} events hold too few reconstructed {kind}s for a fidelity comparison")
    drawn = session.sample(truth["context"], seed)
    flash = {"context": truth["context"], "matched": drawn["matched"], "target": drawn["sample"],
             "event_index": truth["event_index"]}  # fmt: skip
    names = object_kind.target_names
    columns = ("context", "matched", "target", "event_index")
    report = fidelity_report(
        flash,
        {k: truth[k] for k in columns},
        {k: truth_b[k] for k in columns},
        names,
        context_names=object_kind.context_names,
        seed=seed,
    )
    tf = np.asarray(flash["target"], np.float64)[flash["matched"]]
    ta = np.asarray(truth["target"], np.float64)[truth["matched"]]
    tb = np.asarray(truth_b["target"], np.float64)[truth_b["matched"]]
    for j, name in enumerate(names):
        w1 = report["variables"][name]["w1"]
        replicas = bootstrap_w1([tf[:, j], ta[:, j], tb[:, j]], [(0, 1), (2, 1)], W1_N_BOOT, seed)
        floor = w1["noise_floor"]
        w1["flash_vs_full_unc"] = _std(replicas[:, 0])
        w1["noise_floor_unc"] = _std(replicas[:, 1])
        w1["ratio"] = w1["flash_vs_full"] / floor if floor else float("nan")
        with np.errstate(divide="ignore", invalid="ignore"):
            w1["ratio_unc"] = _std(replicas[:, 0] / replicas[:, 1])
    auc = report["auc"]  # with bootstrap uncertainties over the classifier's test events
    auc["excess"] = auc["flash_vs_full"] - max(auc["noise_floor"], 0.5)
    auc["excess_unc"] = float(np.hypot(auc["flash_vs_full_unc"], auc["noise_floor_unc"]))
    eff: dict[str, float] = {}
    for key, matched in (("flash", flash["matched"]), ("full", truth["matched"]), ("full_b", truth_b["matched"])):
        k, n = int(np.sum(matched)), len(matched)
        eff[key] = k / n
        eff[f"{key}_unc"] = binomial_uncertainty(k, n)
    eff["difference"] = eff["flash"] - eff["full"]
    eff["difference_unc"] = float(np.hypot(eff["flash_unc"], eff["full_unc"]))
    report["efficiency_inclusive"] = eff
    report.update(kind=kind, seed=seed, split="even events: full chain (flash conditioned on it); odd events: noise floor")
    report["n_events"] = {"full": len(full_events), "noise_floor": len(floor_events)}
    arrays = {"names": names, "flash": tf, "full": ta, "full_b": tb}
    return report, arrays
