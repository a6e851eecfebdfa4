"""A Triton Inference Server model repository for a zoo release (``hepzoo export NAME --triton DIR``).

Layout: ``DIR/<name>/config.pbtxt`` and ``DIR/<name>/<version>/model.onnx`` (Triton versions are integers)
plus the card next to the config for provenance. The config is written from the card, not by hand:

* ``platform: "onnxruntime_onnx"``; ``max_batch_size > 0``, so the leading ``batch`` axis of every card tensor
  is Triton's batch dimension and is left out of ``dims``; other symbolic axes become ``-1``; a per-row scalar
  (shape ``[batch]``) is declared ``dims: [1]`` with ``reshape: { shape: [] }``, as Triton requires.
* Dynamic batching with a bounded queue delay. Triton batches only requests whose tensors have the same
  shape, so MLPF clients send the padded layout of docs/ARCHITECTURE.md, contract 2: each event's element rows padded to
  one of the card's size buckets (listed in the config's ``parameters``) with the boolean ``mask``; requests
  in the same bucket are batched together. Ragged batching (``allow_ragged_batch``) is not used, because the
  exported graphs take padded ``[batch, elements, features]`` tensors, not flat ones.
* Generative models: the noise inputs are ordinary inputs, filled by the client from its seed (the card
  documents the distribution).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hepzoo.datasets.atomic import replace_directory

from .card import CARD, ModelCard, TensorCard, load_card

__all__ = ["CONFIG", "TRITON_DTYPES", "config_pbtxt", "write_triton_repository"]

CONFIG = "config.pbtxt"
TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "bool": "TYPE_BOOL",
}


def _dims(tensor: TensorCard) -> list[int]:
    if not tensor.shape or tensor.shape[0] != "batch":
        raise ValueError(f"tensor {tensor.name!r}: the first axis must be the symbolic 'batch' axis, got {tensor.shape}")
    return [-1 if isinstance(axis, str) else int(axis) for axis in tensor.shape[1:]]


def _tensor_block(tensor: TensorCard) -> str:
    if tensor.dtype not in TRITON_DTYPES:
        raise ValueError(f"tensor {tensor.name!r}: dtype {tensor.dtype!r} has no Triton type ({sorted(TRITON_DTYPES)})")
    dims = _dims(tensor)
    # Triton needs at least one non-batch dim: a per-row scalar ([batch]) is declared [1] and reshaped to []
    reshape = "\n    reshape: { shape: [ ] }" if not dims else ""
    text = ", ".join(str(d) for d in dims or [1])
    return f'  {{\n    name: "{tensor.name}"\n    data_type: {TRITON_DTYPES[tensor.dtype]}\n    dims: [ {text} ]{reshape}\n  }}'


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_pbtxt(
    card: ModelCard, max_batch_size: int = 64, max_queue_delay_us: int = 2000, instance_kind: str = "KIND_AUTO"
) -> str:
    """The ``config.pbtxt`` text (protobuf text format of Triton's ``ModelConfig``) for ``card``."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    if instance_kind not in {"KIND_AUTO", "KIND_CPU", "KIND_GPU"}:
        raise ValueError(f"instance_kind must be KIND_AUTO, KIND_CPU or KIND_GPU, got {instance_kind!r}")
    preferred = sorted({b for b in (1, 4, 16, max_batch_size) if b <= max_batch_size})
    parameters = {
        "hepzoo_version": card.version,
        "hepzoo_family": card.family,
        "hepzoo_onnx_sha256": card.onnx.sha256,
        "hepzoo_element_granularity": str(card.element_granularity),
        "hepzoo_size_buckets": ",".join(str(b) for b in card.size_buckets),
        "hepzoo_noise_inputs": ",".join(n.name for n in card.noise_inputs),
        "hepzoo_tolerance": f"atol={card.tolerance.atol:g},rtol={card.tolerance.rtol:g}",
    }
    lines = [
        f"# written by hepzoo from {card.name} {card.version} card.json; do not edit by hand",
        f"name: {_quote(card.name)}",
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        "input [\n" + ",\n".join(_tensor_block(t) for t in card.inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(t) for t in card.outputs) + "\n]",
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]\n"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n"
        "}",
        f"instance_group [\n  {{\n    count: 1\n    kind: {instance_kind}\n  }}\n]",
    ]
    for key, value in parameters.items():
        lines.append(f"parameters {{\n  key: {_quote(key)}\n  value: {{ string_value: {_quote(value)} }}\n}}")
    return "\n".join(lines) + "\n"


def write_triton_repository(
    release_dir: str | os.PathLike, repository: str | os.PathLike, max_batch_size: int = 64, max_queue_delay_us: int = 2000
) -> Path:
    """Write ``repository/<name>/`` for the release in ``release_dir`` (its card and sha256 are verified first).

    The model folder is assembled under a temporary name and renamed into place, replacing an older copy.
    Returns the model folder.
    """
    release_dir = Path(release_dir)
    card = load_card(release_dir)
    if not card.version.isdigit():
        raise ValueError(f"Triton model versions are integers; release version {card.version!r} is not")
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    target = repository / card.name
    staging = Path(tempfile.mkdtemp(prefix=f".{card.name}.", dir=repository))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the server (often another user) must read it
        (staging / card.version).mkdir()
        shutil.copyfile(release_dir / card.onnx.file, staging / card.version / "model.onnx")
        shutil.copyfile(release_dir / CARD, staging / CARD)
        (staging / CONFIG).write_text(config_pbtxt(card, max_batch_size, max_queue_delay_us))
        replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
