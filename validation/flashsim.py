"""Sample a flash-sim model on generator objects and compare it with the full chain it replaces.

The flash sample is drawn from seeded noise (the exported graph takes its noise as an input), so a report is
reproducible from its seed. The noise floor is the same comparison between two independent full-chain
samples of the same process.
"""

from __future__ import annotations

from collections.abc import Mapping

import awkward as ak
import numpy as np
import torch

from hepzoo.datasets import flashsim_data

from .fidelity import fidelity_report

_TABLES = {"jet": flashsim_data.jet_table, "track": flashsim_data.track_table}
_NAMES = {
    "jet": (flashsim_data.JetContext, flashsim_data.JetTarget),
    "track": (flashsim_data.TrackContext, flashsim_data.TrackTarget),
}


def _names(enum_type) -> tuple[str, ...]:
    return tuple(member.name.lower() for member in enum_type)


@torch.no_grad()
def flash_sample(model: torch.nn.Module, context: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Efficiency decision and reconstructed-object sample for each generator object (seeded)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    n = len(context)
    noise = torch.randn(n, int(model.n_target), generator=generator)
    uniform = torch.rand(n, generator=generator)
    efficiency, sample = model(torch.from_numpy(np.ascontiguousarray(context, dtype=np.float32)), noise)
    return {"context": context, "matched": (uniform < efficiency).numpy(), "target": sample.numpy()}


def evaluate(
    model: torch.nn.Module, kind: str, full: ak.Array, full_b: ak.Array, seed: int = 0
) -> dict:
    """Fidelity of ``model`` (flash) against the full chain ``full``, next to ``full_b`` vs ``full``."""
    if kind not in _TABLES:
        raise ValueError(f"unknown flash-sim kind {kind!r}; choose one of {sorted(_TABLES)}")
    table = _TABLES[kind]
    truth: Mapping[str, np.ndarray] = table(full)
    truth_b: Mapping[str, np.ndarray] = table(full_b)
    flash = flash_sample(model, truth["context"], seed)
    context_enum, target_enum = _NAMES[kind]
    report = fidelity_report(
        flash,
        {k: truth[k] for k in ("context", "matched", "target")},
        {k: truth_b[k] for k in ("context", "matched", "target")},
        _names(target_enum),
        context_names=_names(context_enum),
        seed=seed,
    )
    report["seed"] = seed
    report["kind"] = kind
    return report


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
