"""The model card (``card.json`` next to ``model.onnx``): a pydantic schema, and atomic load/write.

Contract 3 of DESIGN.md. The card is the deployed artifact's description: interface (names, dtypes,
symbolic shapes, feature names in order, read from the :class:`~hepzoo.models.registry.ModelSpec`), what
the graph does before and after the network, noise inputs of generative models, size buckets, training
provenance, the sha256 of ``model.onnx``, the export tolerance with the parity measured at export, and the
physics metrics of the release (with the thresholds CI enforces).

Every model rejects unknown keys. ``load_card(path)`` also checks that the ``model.onnx`` next to the card
has the sha256 the card records (pass ``verify_onnx=False`` to skip).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

__all__ = [
    "CARD",
    "ModelCard",
    "NoiseInput",
    "OnnxFile",
    "ParityResult",
    "Provenance",
    "TensorCard",
    "Tolerance",
    "load_card",
    "write_card",
]

CARD = "card.json"
SCHEMA_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorCard(_Strict):
    """One graph input or output: strings in ``shape`` are symbolic (dynamic) axes."""

    name: str
    dtype: str
    shape: list[str | int]
    feature_names: list[str] | None = None
    doc: str = ""

    @model_validator(mode="after")
    def _features_match_last_axis(self) -> TensorCard:
        if self.feature_names is not None and self.shape[-1] != len(self.feature_names):
            raise ValueError(
                f"tensor {self.name!r}: last axis {self.shape[-1]!r} does not match {len(self.feature_names)} feature names"
            )
        return self


class NoiseInput(_Strict):
    """A graph input that the caller fills with random numbers (generative models): seed it to reproduce."""

    name: str
    distribution: Literal["standard normal"] = "standard normal"
    shape: list[str | int]


class Tolerance(_Strict):
    atol: float = Field(ge=0)
    rtol: float = Field(ge=0)


class ParityResult(_Strict):
    """ONNX Runtime (CPU) vs torch on one input size, one output, real (unmasked) positions only.

    ``max_abs_diff``: the largest |ort - torch|; ``max_violation``: the largest
    ``|ort - torch| - (atol + rtol * |torch|)`` (<= 0 means within tolerance).
    """

    output: str
    batch: int = Field(ge=1)
    n_elements: int | None = None
    max_abs_diff: float = Field(ge=0)
    max_violation: float
    passed: bool


class OnnxFile(_Strict):
    file: str = "model.onnx"
    sha256: str
    opset: int | None = None
    exporter: str = "torch.onnx.export(dynamo=True)"
    torch_version: str | None = None

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {value!r}")
        return value


class Provenance(_Strict):
    model: str  # registered model name
    config: dict[str, Any]  # the exact training config (config.yaml)
    dataset: dict[str, Any]  # dataset recipe (dataset.json): commands with seeds, file hashes
    git_commit: str | None = None
    export_date: str  # ISO 8601, UTC


class ModelCard(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    name: str
    version: str
    family: Literal["mlpf", "flashsim"]
    task: str
    inputs: list[TensorCard] = Field(min_length=1)
    outputs: list[TensorCard] = Field(min_length=1)
    preprocessing: str
    postprocessing: str
    noise_inputs: list[NoiseInput] = []
    element_granularity: int = Field(1, ge=1)
    size_buckets: list[int] = []  # element-count buckets (empty: batch axis only)
    provenance: Provenance
    onnx: OnnxFile
    tolerance: Tolerance
    parity: list[ParityResult] = Field(min_length=1)
    metrics: dict[str, Any] = {}
    thresholds: dict[str, Any] = {}

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> ModelCard:
        names = [t.name for t in (*self.inputs, *self.outputs)]
        if len(set(names)) != len(names):
            raise ValueError(f"tensor names are not unique: {names}")
        inputs = {t.name: t for t in self.inputs}
        for noise in self.noise_inputs:
            if noise.name not in inputs:
                raise ValueError(f"noise input {noise.name!r} is not a graph input ({sorted(inputs)})")
        if self.family == "flashsim" and not self.noise_inputs:
            raise ValueError("a flash-sim (generative) card must list its noise inputs")
        for bucket in self.size_buckets:
            if bucket % self.element_granularity:
                raise ValueError(f"size bucket {bucket} is not a multiple of the element granularity {self.element_granularity}")
        outputs = {t.name for t in self.outputs}
        for result in self.parity:
            if result.output not in outputs:
                raise ValueError(f"parity result for unknown output {result.output!r}")
        # with a folder in the validation context, the model.onnx there must be the one the card describes
        folder = (info.context or {}).get("folder")
        if folder is not None:
            from hepzoo.export.zoo import sha256_of

            onnx_path = Path(folder) / self.onnx.file
            if not onnx_path.exists():
                raise ValueError(f"{onnx_path} (described by the card) does not exist")
            actual = sha256_of(onnx_path)
            if actual != self.onnx.sha256:
                raise ValueError(
                    f"sha256 mismatch: the card records {self.onnx.sha256} but {onnx_path} has {actual}"
                )
        return self


def load_card(path: str | os.PathLike, verify_onnx: bool = True) -> ModelCard:
    """Read and validate ``card.json`` (a file, or the release folder holding it).

    ``verify_onnx``: also check the sha256 of the ``model.onnx`` next to it. Raises
    ``pydantic.ValidationError`` (a ``ValueError``) naming the file and the offending field.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CARD
    data = json.loads(path.read_text())
    context = {"folder": path.parent} if verify_onnx else None
    try:
        return ModelCard.model_validate(data, context=context)
    except ValueError as error:
        raise ValueError(f"{path}: invalid model card: {error}") from error


def write_card(card: ModelCard, path: str | os.PathLike) -> Path:
    """Write ``card`` as JSON atomically (temporary file in the same folder, then rename). Returns the path."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(card.model_dump_json(indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
