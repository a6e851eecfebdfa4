"""The results file of ``hepzoo bench``: its schema, its validation, and atomic JSON writes.

The file holds ``schema`` (:data:`SCHEMA`), ``machine``, ``versions``, ``settings``, ``methods``,
``reference``, ``parity``, ``records`` (one per point: ``ok``, ``skipped`` or ``failed`` with a reason) and
``end_to_end``. It is rewritten atomically after every point, so a killed run leaves a valid file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hepzoo.datasets.atomic import write_text_atomic
from hepzoo.models.families import get_family

__all__ = ["SCHEMA", "load_results", "validate_results", "write_json_atomic"]

SCHEMA = "hepzoo-bench/1"


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """JSON to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path


_RECORD_KEYS = {
    "model": str,
    "version": str,
    "family": str,
    "implementation": str,
    "backend": str,
    "label": str,
    "kind": str,
    "batch": int,
    "status": str,
    "threads": int,
}
_OK_KEYS = {
    "reps": int,
    "mean_s": float,
    "p50_s": float,
    "p99_s": float,
    "events_per_s": float,
    "objects_per_s": float,
    "peak_delta_mb": float,
    "peak_rss_mb": float,
}


def validate_results(results: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first field that does not follow the results-file schema."""
    if results.get("schema") != SCHEMA:
        raise ValueError(f"results schema is {results.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("machine", "versions", "settings", "methods", "reference", "parity", "records"):
        if key not in results:
            raise ValueError(f"results have no {key!r}")
    for i, rec in enumerate(results["records"]):
        required = {**_RECORD_KEYS, **(_OK_KEYS if rec.get("status") == "ok" else {})}
        for key, typ in required.items():
            value = rec.get(key)
            if not isinstance(value, typ) and not (typ is float and isinstance(value, int)):
                raise ValueError(f"records[{i}] ({rec.get('model')}, {rec.get('label')}): {key!r} is {value!r}, expected {typ.__name__}")
        if rec["status"] not in ("ok", "skipped", "failed"):
            raise ValueError(f"records[{i}]: status {rec['status']!r}")
        if rec["status"] != "ok" and not rec.get("reason"):
            raise ValueError(f"records[{i}]: a {rec['status']} record needs a reason")
        if get_family(rec["family"]).elements and not isinstance(rec.get("n_elements"), int):
            raise ValueError(f"records[{i}]: a record of an element-input family ({rec['family']}) needs n_elements")
        if rec["status"] == "ok" and not rec["p50_s"] <= rec["p99_s"]:
            raise ValueError(f"records[{i}]: p50 {rec['p50_s']} > p99 {rec['p99_s']}")


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    results = json.loads(Path(path).read_text())
    try:
        validate_results(results)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return results

