"""Training configuration: a validated pydantic model read from YAML, with ``--set a.b=c`` overrides.

Every section forbids unknown keys, so a typo is an error that names the key. ``model.kwargs`` is free-form
(it is passed to the model builder, which validates it).

Example (``configs/mlpf-gnnlsh.yaml``)::

    model: {name: mlpf-gnnlsh, kwargs: {}}
    data: {train: ["data/train/*.root"], val: ["data/val/*.root"], batch_size: 16}
    optim: {lr: 1.0e-3, epochs: 10}
    output_dir: runs/mlpf-gnnlsh

Flash-sim models (family ``flashsim``) train on object tables: ``data.kind: jet|track`` is required there,
``data.batch_size`` counts table rows, ``data.buckets`` is not used (see ``hepzoo.training.tasks``). The valid
families and kinds are the registered ones (:mod:`hepzoo.models.families`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hepzoo.datasets import schema
from hepzoo.datasets.ragged import DEFAULT_BUCKETS
from hepzoo.models.families import family_names, get_family, kind_names


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = Field(description="registry name (hepzoo.models.list_models()) or 'package.module:factory'")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model builder")
    family: Literal[family_names()] | None = Field(
        None,
        description="model family, which picks the training task (data, loss); null = the registry spec's "
        "family (hepzoo.models.get_spec(name).family), or 'mlpf' for a 'package.module:factory' model",
    )
    init_weights: str | None = Field(
        None,
        description="start from these weights (a training checkpoint or a state-dict file such as a zoo "
        "release's weights.pt) with a fresh optimizer and schedule: fine-tuning. Ignored when resuming.",
    )


class DataConfig(_Section):
    train: list[str] = Field(min_length=1, description="ROOT files or glob patterns for training")
    val: list[str] = Field(default_factory=list, description="ROOT files or glob patterns for validation")
    step_size: int = Field(1000, gt=0, description="events per work unit (entry range of one file)")
    batch_size: int = Field(32, gt=0, description="events per batch on each process")
    buckets: list[int] = Field(default_factory=lambda: list(DEFAULT_BUCKETS), min_length=1)
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per training process")
    shuffle: bool = Field(True, description="shuffle work units, events and batches (seeded, per epoch)")
    kind: Literal[kind_names()] | None = Field(
        None, description="flash-sim only (required there): which object table to train on (an object kind of "
        "the model's family)"
    )
    norm_rows: int = Field(
        100_000, gt=0, description="flash-sim only: training rows (per process) read for the normalisation stats"
    )
    dataset: str | None = Field(
        None,
        description="flash-sim only: 'package.module:factory' building the training/validation dataset with "
        "FlashSimDataset's signature (paths, kind=, step_size=, batch_size=, shuffle=, seed=); "
        "null = hepzoo.datasets.flashsim_loader.FlashSimDataset",
    )

    @field_validator("train", "val", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("buckets")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(b <= 0 for b in v) or any(b >= c for b, c in zip(v, v[1:])):
            raise ValueError("buckets must be positive and strictly increasing")
        return v


class OptimConfig(_Section):
    lr: float = Field(1e-3, gt=0, description="peak AdamW learning rate")
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    epochs: int = Field(10, gt=0)
    warmup_steps: int = Field(100, ge=0, description="linear warm-up steps before the cosine decay")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine floor as a fraction of lr")
    total_steps: int | None = Field(
        None, gt=0, description="length of the schedule; null = epochs x batches per epoch (counted once)"
    )
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimiser steps in total")
    grad_clip: float | None = Field(1.0, gt=0, description="max global gradient norm; null = no clipping")


class LossConfig(_Section):
    focal_gamma: float = Field(2.0, ge=0)
    class_weights: list[float] | None = Field(None, description=f"one per TargetClass ({len(schema.TargetClass)})")
    huber_delta: float = Field(1.0, gt=0)
    cls_weight: float = Field(1.0, ge=0)
    charge_weight: float = Field(1.0, ge=0)
    reg_weight: float = Field(1.0, ge=0)
    energy_weight_power: float = Field(
        0.0, ge=0, le=2, description="MLPF: weight each element's cls and regression terms by max(E, 1 GeV)^p; "
        "0 = unweighted"
    )
    energy_weight_source: Literal["element", "element_or_target"] = Field(
        "element", description="MLPF energy weighting: E = the element's measured energy (unbiased), or the larger "
        "of measured and target energy (biases energies up; kept to reproduce release-2 stage 1)"
    )
    jet_weight: float = Field(
        0.0, ge=0, description="MLPF: weight of the jet-level term (predicted vs target pT of each generator jet's "
        "slots, hepzoo.training.jet_loss); 0 = off (the batches then carry no jets)"
    )
    jet_scale: float = Field(0.1, gt=0, description="MLPF jet term: log pT ratios are divided by this before the Huber")
    jet_vector: bool = Field(
        False, description="MLPF jet term: compare the jets' axes too (parallel, perpendicular and eta parts of the "
        "sum), not only the magnitude of the pT sum"
    )
    jet_class_gradient: bool = Field(
        True, description="MLPF jet term: also train the class decision (straight-through gradient of 1 - p_NONE)"
    )
    jet_pt_power: float = Field(
        0.0, ge=0, le=3, description="MLPF jet term: weight each jet by (target pT / 20 GeV)^p (a weighted mean over "
        "jets); 0 = every jet counts once"
    )
    nll_weight: float = Field(1.0, ge=0, description="flash-sim: weight of the mean NLL over matched rows")
    eff_weight: float = Field(1.0, ge=0, description="flash-sim: weight of the efficiency BCE over all rows")

    @field_validator("class_weights")
    @classmethod
    def _one_per_class(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and len(v) != len(schema.TargetClass):
            names = [c.name for c in schema.TargetClass]
            raise ValueError(f"needs {len(names)} weights, one per TargetClass {names}, got {len(v)}")
        if v is not None and any(w < 0 for w in v):
            raise ValueError("class weights must be >= 0")
        return v


class TrainConfig(_Section):
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    precision: Literal["fp32", "bf16", "fp16", "auto"] = Field(
        "fp32", description="autocast dtype; auto = bf16 (or fp16) on CUDA, fp32 on CPU; fp16 needs CUDA"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    output_dir: Path = Path("runs/default")
    checkpoint_every_steps: int = Field(0, ge=0, description="also write last.pt every N steps (0: epoch ends only)")
    log_every_steps: int = Field(10, gt=0)
    snapshot_every_steps: int = Field(
        0, ge=0, description="every N steps: validate, log it with the events seen, and keep a weights-only "
        "snapshot (output_dir/snapshots/step_N.pt) for learning curves; 0 = off"
    )
    progress: bool = True
    resume: str | None = Field(None, description="checkpoint to resume from, or 'auto' (output_dir/last.pt if any)")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.optim.total_steps is not None and self.optim.warmup_steps > self.optim.total_steps:
            raise ValueError("optim.warmup_steps is larger than optim.total_steps")
        family = get_family(self.model.family) if self.model.family is not None else None
        if family is not None and family.kinds and self.data.kind is None:
            kinds = " or ".join(repr(k) for k in family.kinds)
            raise ValueError(f"data.kind is required for {family.label} models: {kinds}")
        return self


def _format_error(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"{key}: {e['msg']}")
    return f"{origin}: invalid training config:\n  " + "\n  ".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``'optim.lr=3e-4'`` -> (['optim', 'lr'], 3e-4). The value is parsed as YAML (lists, null, numbers)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not p for p in key.split(".")):
        raise ValueError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. optim.lr=3e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ValueError(f"--set {key}: cannot parse value {raw!r}: {err}") from None
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of the raw config dict with every ``key=value`` applied (intermediate sections are created)."""
    out = yaml.safe_load(yaml.safe_dump(raw))  # deep copy of plain data
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for i, p in enumerate(parts[:-1]):
            child = node.setdefault(p, {})
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise ValueError(f"--set {'.'.join(parts)}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return out


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """The YAML document of ``path`` (safe loading; a key given twice is an error). Errors name the file."""
    p = Path(path)
    try:
        return yaml.load(p.read_text(), Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ValueError(f"{p}: not valid YAML: {err}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *, raw: dict | None = None) -> TrainConfig:
    """Read a YAML config (or take ``raw``), apply ``overrides`` and validate. Errors name the key at fault."""
    if raw is None:
        if path is None:
            raise ValueError("load_config needs a path or raw=")
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"training config {str(p)!r} does not exist")
        raw = read_yaml(p) or {}
        origin = str(p)
    else:
        origin = "config"
    if not isinstance(raw, dict):
        raise ValueError(f"{origin}: the top level must be a mapping of sections")
    raw = apply_overrides(raw, list(overrides or []))
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as err:
        suffix = " (after --set overrides)" if overrides else ""
        raise ValueError(_format_error(err, origin + suffix)) from None


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain JSON-able dict (stored in checkpoints and next to the run)."""
    return cfg.model_dump(mode="json")
