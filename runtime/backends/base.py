"""The backend interface: :class:`Backend` (one loaded graph on one device) and :class:`BackendUnavailable`.

Every backend module (:mod:`.ort_cpu_backend`, :mod:`.ort_cuda_backend`, :mod:`.tensorrt_backend`,
:mod:`.torch_backend`, :mod:`hepzoo.runtime.numba.backend`) imports only this module from the backends package;
the registry and factory (:mod:`hepzoo.runtime.backends`) import the backend modules, lazily.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Backend", "BackendUnavailable", "InvalidModelError", "invalid_model"]


class Backend(abc.ABC):
    """One loaded graph on one device. Subclasses set ``_inputs`` / ``_outputs`` (graph input and output
    names in graph order: a list, or a dict keyed by name) when they load."""

    name: str = "abstract"
    _inputs: Sequence[str] | Mapping[str, Any] = ()
    _outputs: Sequence[str] | Mapping[str, Any] = ()

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    @abc.abstractmethod
    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host arrays in (by graph input name), host arrays out (by graph output name)."""


class BackendUnavailable(RuntimeError):
    """An installed backend cannot serve this model (e.g. torch needs the release's ``weights.pt``, a GPU is
    missing); ``auto`` then tries the next backend, an explicit request shows this error."""


class InvalidModelError(ValueError):
    """A model file whose sha256 matches its card but that a backend cannot read (not ONNX, truncated, an invalid
    graph): one line naming the file."""


def invalid_model(path: str | Path, backend: str, error: BaseException) -> InvalidModelError:
    """The :class:`InvalidModelError` for ``error`` raised by ``backend`` while loading ``path`` (its message on
    one line: ONNX Runtime's and protobuf's exceptions are neither ValueError nor one line)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return InvalidModelError(f"{path}: not a model {backend} can load: {text}")
