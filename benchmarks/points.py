"""What ``hepzoo bench`` measures: the axes of the matrix and how hard each point is measured.

A :class:`Point` is one cell of the matrix: a zoo release x an implementation (hepzoo's model, or
jpata/particleflow's MLPF) x a backend (``torch-eager`` or a runtime backend) x a size (batch for flash-sim,
elements of one event, or several events, for MLPF). :class:`BenchSettings` holds the budgets and limits
that :mod:`hepzoo.benchmarks.timing` and :mod:`hepzoo.benchmarks.matrix` apply to every point.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "FLASHSIM_BATCHES",
    "HEPZOO",
    "MLPF_BATCHED",
    "MLPF_ELEMENTS",
    "PARTICLEFLOW",
    "QUICK_MLPF_ELEMENTS",
    "TORCH_EAGER",
    "BenchSettings",
    "Point",
]

TORCH_EAGER = "torch-eager"  # the release's registry model in PyTorch eager
PARTICLEFLOW = "particleflow"  # jpata/particleflow's MLPF (implementation name; it runs in torch-eager)
HEPZOO = "hepzoo"
FLASHSIM_BATCHES: tuple[int, ...] = (1, 100, 10_000)
MLPF_ELEMENTS: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
MLPF_BATCHED: tuple[int, int] = (32, 512)  # (events, elements) of the batched MLPF point
QUICK_MLPF_ELEMENTS: tuple[int, ...] = (256, 1024, 4096)


@dataclass(frozen=True)
class BenchSettings:
    """How hard each point is measured (see :mod:`hepzoo.benchmarks`)."""

    threads: int = 1
    budget_s: float = 2.0  # timed calls stop once this much time is spent (and >= 3 calls)
    warmup_s: float = 0.3  # warm-up: at least one call, until this much time
    target_rel_ci: float = 0.05  # stop early when the 95% CI half-width is within this fraction of the mean
    min_reps: int = 5
    max_reps: int = 100_000
    max_call_s: float = 8.0  # skip points predicted to take longer than this per call
    memory_fraction: float = 0.5  # skip points predicted to need more than this fraction of MemAvailable
    timeout_s: float = 600.0  # a point's process is killed after this long
    seed: int = 0
    quick: bool = False

    @classmethod
    def create(cls, quick: bool = False, **overrides: Any) -> BenchSettings:
        """Defaults for a full run, or for ``quick`` (a check that everything works: tiny budgets)."""
        base = cls(budget_s=0.3, warmup_s=0.05, min_reps=3, max_call_s=3.0, timeout_s=300.0, quick=True) if quick else cls()
        settings = replace(base, **{k: v for k, v in overrides.items() if v is not None})
        if settings.threads < 1 or settings.budget_s <= 0 or settings.warmup_s < 0 or settings.target_rel_ci <= 0:
            raise ValueError(f"invalid bench settings: {settings}")
        return settings


@dataclass(frozen=True)
class Point:
    """One cell of the matrix."""

    model: str  # zoo release name
    version: str
    family: str  # "mlpf" | "flashsim"
    implementation: str  # HEPZOO | PARTICLEFLOW
    backend: str  # TORCH_EAGER or a runtime backend name
    kind: str  # "batch" (flash-sim), "elements" (MLPF, one event), "batched" (MLPF, several events)
    batch: int
    n_elements: int | None = None

    @property
    def label(self) -> str:
        return f"{PARTICLEFLOW} ({self.backend})" if self.implementation == PARTICLEFLOW else self.backend

    @property
    def size(self) -> int:
        """The axis a series grows along: elements for MLPF, batch for flash-sim."""
        return int(self.n_elements if self.kind == "elements" else self.batch)
