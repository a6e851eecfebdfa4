"""Training checkpoints: state dicts and plain data only, loadable with ``torch.load(path, weights_only=True)``.

A checkpoint is a dict::

    {"format": 1, "model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ... | None,
     "rng": [per-rank {"torch": ByteTensor, "cuda": [ByteTensor...], "numpy": {...}, "python": [...]}],
     "epoch": int, "batch_in_epoch": int, "step": int, "total_steps": int, "best_val": float | None,
     "config": dict}

``epoch``/``batch_in_epoch`` say where training continues: the loop re-creates that epoch's (seeded) data
order and skips ``batch_in_epoch`` batches without computing on them. Files are written under a temporary
name in the destination folder, flushed and renamed over the target, so a crash never leaves a torn file.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hepzoo.datasets.atomic import atomic_output

FORMAT_VERSION = 1


def capture_rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy's global generator and python's ``random`` as plain data."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": [int(version), [int(v) for v in internal], gauss_next],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())  # a checkpoint loaded with map_location=cuda holds cuda tensors
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    keys = n["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically and durably (:func:`~hepzoo.datasets.atomic.atomic_output`)."""
    path = Path(path)
    with atomic_output(path, fsync=True) as tmp:
        torch.save({"format": FORMAT_VERSION, **state}, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; raises naming the file if it is missing or not ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"{path}: not a loadable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION or "model" not in state:
        raise ValueError(f"{path}: not a hepzoo training checkpoint (format {FORMAT_VERSION})")
    return state


def load_model_weights(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Only the model state dict of a checkpoint (for export and evaluation)."""
    return load_checkpoint(path, map_location)["model"]


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a training checkpoint or from a plain state-dict file (e.g. a zoo weights.pt)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"{path}: not a loadable weights file ({type(err).__name__}: {err})") from None
    if isinstance(state, dict) and state.get("format") == FORMAT_VERSION and "model" in state:
        return state["model"]
    if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
        return state
    raise ValueError(f"{path}: neither a hepzoo checkpoint nor a state dict of tensors")


def load_initial_weights(net: torch.nn.Module, path: str | Path) -> list[str]:
    """Load ``model.init_weights`` into ``net`` (a fine-tune's start). Every weight in the file must fit; weights
    of ``net`` that the file lacks are allowed only in the modules the model declares as zero-initialised
    additions (``net.zero_init_modules``, prefixes of state-dict keys), which then start at their initial values.
    Returns the keys that kept their initial values."""
    missing, unexpected = net.load_state_dict(load_weights_file(path), strict=False)
    allowed = tuple(getattr(net, "zero_init_modules", ()))
    bad = [k for k in missing if not (allowed and k.startswith(allowed))]
    if unexpected or bad:
        raise ValueError(
            f"{path}: the weights do not fit the model: missing {bad[:5]}{'...' if len(bad) > 5 else ''}, "
            f"unexpected {list(unexpected)[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    return list(missing)
