"""The ``hepzoo validate`` job: run a released model through the runtime on ROOT files, measure its physics,
check the card's thresholds, write ``metrics.json``, plots and the report; and derive those thresholds.

The deployed artifact is validated (``model.onnx`` through :class:`hepzoo.runtime.Session`, its sha256 checked
against the card), never the PyTorch model. MLPF: every metric next to the rule-based PF baseline (``pf_``) of
the same events. Flash-sim: against the full chain of the same files, next to the noise floor of an independent
full chain, which is the other half of the events (see :func:`hepzoo.validation.flashsim.split_halves`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak

from hepzoo.datasets.atomic import write_text_atomic

from .gate import N_SIGMA, Check, Thresholds, check, derive_thresholds

__all__ = ["ValidationResult", "measure", "set_thresholds", "validate"]

DEFAULT_SEED = 1


@dataclass
class ValidationResult:
    metrics: dict[str, Any]  # what metrics.json holds
    checks: list[Check]  # empty when the card has no thresholds
    out: Path | None

    @property
    def passed(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]


def load_data(data: Sequence[str | os.PathLike], max_events: int = 0) -> tuple[ak.Array, dict[str, str]]:
    """Events of the files (globs allowed), at most ``max_events`` (0: all), and ``{path: sha256}``."""
    from hepzoo.datasets.io import expand_paths, read_events
    from hepzoo.export.zoo import sha256_of

    files = expand_paths(list(data))
    if max_events < 0:
        raise ValueError(f"max_events must be >= 0, got {max_events}")
    events = read_events(files)
    if max_events:
        events = events[:max_events]
    if len(events) == 0:
        raise ValueError(f"no events in {[str(f) for f in files]}")
    return events, {str(f): sha256_of(f) for f in files}


def measure(session: Any, events: ak.Array, seed: int = DEFAULT_SEED) -> tuple[dict, dict]:
    """JSON-able metrics (the caller adds the sample description) and the arrays the plots need."""
    from .fidelity import plain_json

    family = session.family
    result, arrays = family.validation.measure(session, events, seed=seed)  # hepzoo.validation.families
    card = session.card
    metrics = {
        "family": family.name,
        "model": {
            "name": card.name,
            "version": card.version,
            "folder": str(session.folder),
            "onnx": card.onnx.file,
            "sha256": card.onnx.sha256,
            "backend": session.backend_name,
        },
        "seed": seed,
        family.name: result,
    }
    return plain_json(metrics), arrays


def _write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_outputs(metrics: dict[str, Any], arrays: dict, out: Path) -> None:
    """``metrics.json``, the PNG plots, ``report.md`` and the self-contained ``report.html`` into ``out``."""
    from hepzoo.models.families import get_family

    from . import report

    out.mkdir(parents=True, exist_ok=True)
    rlabel = f"{metrics['model']['name']} {metrics['model']['version']}, {metrics['data']['n_events']} events"
    family = get_family(metrics["family"])
    checks = (metrics.get("gate") or {}).get("checks") or []
    limits = {c["metric"]: c["limit"] for c in checks if c["limit"] is not None}
    images = family.validation.plots(metrics[family.name], arrays, out, rlabel, limits)
    sections = report.build_sections(metrics, images)
    report.write_markdown(metrics, sections, out / "report.md")
    report.write_html(metrics, sections, out, out / "report.html")
    _write_json(out / "metrics.json", metrics)


def _load_session(model: str | os.PathLike, backend: str, threads: int) -> Any:
    from hepzoo.runtime import Session

    return Session.load(model, backend=backend, intra_op_threads=threads)


def validate(
    model: str | os.PathLike,
    data: Sequence[str | os.PathLike],
    out: Path | None = None,
    *,
    max_events: int = 0,
    seed: int = DEFAULT_SEED,
    backend: str = "auto",
    threads: int = 1,
    require_thresholds: bool = True,
    gate: bool = True,
) -> ValidationResult:
    """Validate a released model (zoo name, release folder or card) on ROOT files; see the module docstring.

    Raises ``ValueError`` when the card has no thresholds, unless ``require_thresholds`` is False (then the
    metrics are measured and reported without a gate). ``gate=False`` (``hepzoo validate --no-gate``) measures and
    reports only, even where the card has thresholds (e.g. a sample unlike the one they were measured on).
    ``out``: folder for metrics.json, plots and reports (nothing written when None).
    """
    session = _load_session(model, backend, threads)
    with_thresholds = gate and (require_thresholds or bool(session.card.thresholds))
    thresholds = Thresholds.from_card(session.card) if with_thresholds else None
    events, files = load_data(data, max_events)
    metrics, arrays = measure(session, events, seed=seed)
    metrics["data"] = {"files": files, "n_events": len(events)}
    checks: list[Check] = []
    if thresholds is not None:
        checks = check(metrics, thresholds)
        metrics["gate"] = {
            "passed": all(c.status != "fail" for c in checks),
            "n_sigma": thresholds.n_sigma,
            "min_n": thresholds.min_n,
            "rule": thresholds.rule,
            "thresholds_measured_on": thresholds.measured_on,
            "checks": [c.as_dict() for c in checks],
        }
    elif not gate:
        metrics["gate"] = {"message": f"{session.card.name} {session.card.version}: not gated (asked for measurements only)."}
    else:
        metrics["gate"] = {"message": f"{session.card.name} {session.card.version} has no thresholds: not gated."}
    from .fidelity import plain_json

    metrics = plain_json(metrics)
    if out is not None:
        write_outputs(metrics, arrays, Path(out))
    return ValidationResult(metrics, checks, Path(out) if out is not None else None)


def set_thresholds(
    model: str | os.PathLike,
    data: Sequence[str | os.PathLike],
    *,
    max_events: int = 0,
    seed: int = DEFAULT_SEED,
    n_sigma: float = N_SIGMA,
    backend: str = "auto",
    threads: int = 1,
    out: Path | None = None,
) -> Thresholds:
    """Measure the release on held-out files and write the derived thresholds into its ``card.json``
    (atomically; ``model.onnx`` and its sha256 are untouched). ``out``: also write the release report there."""
    from hepzoo.export.card import CARD, ModelCard, write_card

    session = _load_session(model, backend, threads)
    events, files = load_data(data, max_events)
    metrics, arrays = measure(session, events, seed=seed)
    metrics["data"] = {"files": files, "n_events": len(events)}
    measured_on = {
        "files": {Path(p).name: sha for p, sha in files.items()},
        "n_events": len(events),
        "seed": seed,
        "backend": session.backend_name,
    }
    thresholds = derive_thresholds(metrics, measured_on, n_sigma=n_sigma)
    card = session.card
    updated = ModelCard.model_validate(
        {**card.model_dump(), "thresholds": thresholds.model_dump()}, context={"folder": session.folder}
    )
    write_card(updated, session.folder / CARD)
    if out is not None:
        metrics["gate"] = {"message": "release measurement: the thresholds were derived from these metrics."}
        write_outputs(metrics, arrays, Path(out))
    return thresholds
