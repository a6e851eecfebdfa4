"""The model card (``card.json`` next to ``model.onnx``): a pydantic schema, and atomic load/write.

Contract 3 of docs/ARCHITECTURE.md. The card is the deployed artifact's description: interface (names, dtypes,
symbolic shapes, feature names in order, read from the :class:`~hepzoo.models.registry.ModelSpec`), what
the graph does before and after the network, noise inputs of generative models, size buckets, training
provenance, the sha256 of ``model.onnx`` and of every other file a backend loads (``files``: the torch
backend's ``config.yaml`` and ``weights.pt``), the per-event element limit (``max_elements``), the export tolerance with the parity measured at export, and the
physics metrics of the release (with the thresholds CI enforces).

Every model rejects unknown keys; a file named without its sha256 is refused. ``load_card(path)`` also checks
that the ``model.onnx`` next to the card, and every other file the card names that is present, has the sha256
the card records (pass ``verify_onnx=False`` to skip); a mismatch is an :class:`IntegrityError` on one line.
A backend that loads a file checks it itself before loading (:func:`read_verified`): the torch backend refuses
a card that records no hash for ``config.yaml`` or ``weights.pt`` (cards of releases exported before hashes
covered them) and a ``weights.pt`` whose hash differs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hepzoo.datasets.atomic import write_text_atomic
from hepzoo.models.families import family_names, get_family

__all__ = [
    "CARD",
    "ArtifactFile",
    "IntegrityError",
    "LOADED_FILES",
    "MAX_ELEMENTS",
    "artifact_files",
    "default_max_elements",
    "ModelCard",
    "NoiseInput",
    "OnnxFile",
    "ParityResult",
    "Provenance",
    "TensorCard",
    "Tolerance",
    "load_card",
    "read_verified",
    "verify_files",
    "write_card",
]

CARD = "card.json"
SCHEMA_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_hex(value: str) -> str:
    if not _SHA256.match(value):
        raise ValueError(f"sha256 must be 64 lowercase hex digits, got {value!r}")
    return value


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
        return _check_hex(value)


class ArtifactFile(_Strict):
    """A file of the release other than ``model.onnx`` that a backend loads (path relative to the release)."""

    file: str
    sha256: str
    loaded_by: list[str] = []  # backend names that load it (documentation)

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        return _check_hex(value)

    @field_validator("file")
    @classmethod
    def _relative(cls, value: str) -> str:
        parts = Path(value).parts
        if not value or Path(value).is_absolute() or ".." in parts:
            raise ValueError(f"file {value!r} must be a path inside the release folder")
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
    family: Literal[family_names()]  # a registered family (hepzoo.models.families)
    task: str
    inputs: list[TensorCard] = Field(min_length=1)
    outputs: list[TensorCard] = Field(min_length=1)
    preprocessing: str
    postprocessing: str
    noise_inputs: list[NoiseInput] = []
    element_granularity: int = Field(1, ge=1)
    size_buckets: list[int] = []  # element-count buckets (empty: batch axis only)
    # most elements one event may have (None: no limit): set from the memory one event needs (e.g. NxN attention)
    max_elements: int | None = Field(None, ge=1)
    provenance: Provenance
    onnx: OnnxFile
    files: list[ArtifactFile] = []  # every other file a backend loads, with its sha256
    tolerance: Tolerance
    parity: list[ParityResult] = Field(min_length=1)
    metrics: dict[str, Any] = {}
    thresholds: dict[str, Any] = {}

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        names = [t.name for t in (*self.inputs, *self.outputs)]
        if len(set(names)) != len(names):
            raise ValueError(f"tensor names are not unique: {names}")
        inputs = {t.name: t for t in self.inputs}
        for noise in self.noise_inputs:
            if noise.name not in inputs:
                raise ValueError(f"noise input {noise.name!r} is not a graph input ({sorted(inputs)})")
        family = get_family(self.family)
        if family.generative and not self.noise_inputs:
            raise ValueError(f"a {family.label} (generative) card must list its noise inputs")
        for bucket in self.size_buckets:
            if bucket % self.element_granularity:
                raise ValueError(f"size bucket {bucket} is not a multiple of the element granularity {self.element_granularity}")
        outputs = {t.name for t in self.outputs}
        for result in self.parity:
            if result.output not in outputs:
                raise ValueError(f"parity result for unknown output {result.output!r}")
        files = [self.onnx.file] + [f.file for f in self.files]
        if len(set(files)) != len(files):
            raise ValueError(f"files are named more than once: {files}")
        return self


# files of a release loaded by a backend besides model.onnx (the torch backend rebuilds the registry model)
LOADED_FILES: dict[str, tuple[str, ...]] = {"config.yaml": ("torch-cuda",), "weights.pt": ("torch-cuda",)}

# most elements per event by registered model, chosen from memory: mlpf-transformer materialises N x N attention
# scores per head (about 18 GB at 16 000 elements on ONNX Runtime CPU: 16384 is the most a 24 GB machine runs)
# in exports before issue 20; exported with ORT's contrib attention its memory is linear (measured by hepzoo bench,
# session 11: 1.2 GB at 16384 and 2.3 GB at 32768 on ONNX Runtime CPU, 1.0 GB at 32768 on numba) and the limit only
# bounds the quadratic time (about 66 s per 32768-element event on one core);
# mlpf-gnnlsh attends within LSH bins and grows linearly (limit 131072). Cards without ``max_elements`` use this.
MAX_ELEMENTS: dict[str, int] = {"mlpf-transformer": 32768, "mlpf-gnnlsh": 131072}


def default_max_elements(model: str) -> int | None:
    """The element limit of registered model ``model`` (None: no per-event limit)."""
    return MAX_ELEMENTS.get(model)


def artifact_files(folder: str | os.PathLike) -> list[ArtifactFile]:
    """The card's ``files`` entries (sha256 of each) for the :data:`LOADED_FILES` present in ``folder``."""
    from hepzoo.export.zoo import sha256_of

    folder = Path(folder)
    return [
        ArtifactFile(file=name, sha256=sha256_of(folder / name), loaded_by=list(by))
        for name, by in LOADED_FILES.items()
        if (folder / name).is_file()
    ]


class IntegrityError(ValueError):
    """A file of a release does not have the sha256 its card records (or the card records none)."""


def _one_line(error: Exception) -> str:
    """A pydantic ValidationError as ``loc: message; ...`` (no newlines, no documentation URL)."""
    errors = getattr(error, "errors", None)
    if callable(errors):
        parts = []
        for e in errors():
            loc = ".".join(str(x) for x in e.get("loc", ())) or "card"
            msg = str(e.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}")
        return "; ".join(parts)
    return " ".join(str(error).split())


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def recorded_sha256(card: ModelCard, file: str) -> str | None:
    """The sha256 the card records for ``file`` (``model.onnx`` or one of ``files``); None if it names none."""
    if file == card.onnx.file:
        return card.onnx.sha256
    return next((f.sha256 for f in card.files if f.file == file), None)


def read_verified(card: ModelCard, folder: str | os.PathLike, file: str) -> bytes:
    """The bytes of ``folder/file`` after checking them against the card's sha256 (read once: what is checked
    is what the caller loads). :class:`IntegrityError` if the card records no hash or a different one."""
    folder = Path(folder)
    expected = recorded_sha256(card, file)
    if expected is None:
        raise IntegrityError(
            f"{folder / CARD}: the card records no sha256 for {file} (exported before the card covered every loaded "
            "file): re-card the release (hepzoo export) before loading it"
        )
    path = folder / file
    if not path.resolve().is_relative_to(folder.resolve()):
        raise IntegrityError(f"{folder / CARD}: {file!r} points outside the release folder {folder}")
    data = path.read_bytes()
    actual = _sha256_bytes(data)
    if actual != expected:
        raise IntegrityError(f"{folder / CARD}: sha256 mismatch: the card records {expected} but {path} has {actual}")
    return data


def verify_files(card: ModelCard, folder: str | os.PathLike) -> None:
    """Check ``model.onnx`` (must exist) and every other file the card names that exists in ``folder``."""
    from hepzoo.export.zoo import sha256_of

    folder = Path(folder)
    onnx_path = folder / card.onnx.file
    if not onnx_path.exists():
        raise IntegrityError(f"{folder / CARD}: {onnx_path} (described by the card) does not exist")
    for name, expected in [(card.onnx.file, card.onnx.sha256)] + [(f.file, f.sha256) for f in card.files]:
        path = folder / name
        if name != card.onnx.file and not path.exists():
            continue  # a deployed copy may hold only card.json and model.onnx; a backend needing it says so
        actual = sha256_of(path)
        if actual != expected:
            raise IntegrityError(f"{folder / CARD}: sha256 mismatch: the card records {expected} but {path} has {actual}")


def load_card(path: str | os.PathLike, verify_onnx: bool = True) -> ModelCard:
    """Read and validate ``card.json`` (a file, or the release folder holding it).

    ``verify_onnx``: also check the sha256 of the ``model.onnx`` next to it and of every other file the card
    names that is present (:func:`verify_files`). Raises ``ValueError`` on one line naming the file and the
    offending field (:class:`IntegrityError` for a hash mismatch).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CARD
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: invalid model card: not UTF-8 text: {error.reason} at byte {error.start}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid model card: not JSON: {error}") from None
    try:
        card = ModelCard.model_validate(data)
    except ValueError as error:
        raise ValueError(f"{path}: invalid model card: {_one_line(error)}") from None
    if verify_onnx:
        verify_files(card, path.parent)
    return card


def write_card(card: ModelCard, path: str | os.PathLike) -> Path:
    """Write ``card`` as JSON atomically (temporary file in the same folder, then rename). Returns the path."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD
    return write_text_atomic(path, card.model_dump_json(indent=2) + "\n")
