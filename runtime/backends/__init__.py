"""Inference backends behind :class:`hepzoo.runtime.Session` (docs/ARCHITECTURE.md, contract 4): the registry and factory.

A backend runs one exported graph: ``run({input name: array}) -> {output name: array}`` on host NumPy
arrays, nothing else (padding, bucketing and noise are the session's job). ``backend="auto"`` picks the first
available backend in :data:`PRIORITY` (tensorrt > onnxruntime-cuda > torch-cuda > onnxruntime-cpu > numba);
``onnxruntime-cpu`` and ``numba`` (the graph interpreted with Numba kernels, no ONNX Runtime) run anywhere;
``tensorrt``, ``onnxruntime-cuda`` and ``torch-cuda`` only where their library sees a GPU.

Layout: :mod:`.base` holds the interface (:class:`Backend`, :class:`BackendUnavailable`); one module per
backend (:mod:`.ort_cpu_backend`, :mod:`.ort_cuda_backend`, :mod:`.tensorrt_backend`, :mod:`.torch_backend`,
and :mod:`hepzoo.runtime.numba`) imports only :mod:`.base`; this module holds the registry (:data:`BACKENDS`)
and :func:`create_backend`, and imports a backend module only when its backend is checked or created.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..release import VerifiedRelease, release_folder_of, verify_release
from .base import Backend, BackendUnavailable

__all__ = [
    "PRIORITY",
    "Backend",
    "BackendUnavailable",
    "available_backends",
    "create_backend",
]

# the order ``auto`` tries, best first (docs/ARCHITECTURE.md, contract 4); names not in BACKENDS are not implemented yet
PRIORITY: tuple[str, ...] = ("tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime-cpu", "numba")


def _onnxruntime_cpu_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CPUExecutionProvider" in ort.get_available_providers()


def _onnxruntime_cpu_backend(release: VerifiedRelease, intra_op_threads: int = 1) -> Backend:
    from .ort_cpu_backend import OnnxRuntimeCPUBackend

    return OnnxRuntimeCPUBackend(release.onnx_path, intra_op_threads=intra_op_threads)


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
        import onnx  # noqa: F401  (parses model.onnx; it does not need onnxruntime)
    except ImportError:
        return False
    return True


def _numba_backend(release: VerifiedRelease, intra_op_threads: int = 1) -> Backend:
    from ..numba import NumbaBackend

    return NumbaBackend(release.onnx_path, intra_op_threads=intra_op_threads)


# what a visible NVIDIA GPU leaves in a Linux machine or container (/dev/dxg: WSL 2)
_NVIDIA_DEVICES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/gpus", "/dev/dxg")


def _torch_cuda_available() -> bool:
    """torch sees a GPU. Where no NVIDIA device is visible and torch is not imported yet, False without importing
    it (seconds of start-up that ``backend="auto"`` on a CPU machine, e.g. ``hepzoo run``, does not need)."""
    import sys

    if "torch" not in sys.modules and not any(os.path.exists(p) for p in _NVIDIA_DEVICES):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _torch_cuda_backend(release: VerifiedRelease, intra_op_threads: int = 1) -> Backend:
    from .torch_backend import TorchBackend

    return TorchBackend(release.folder, device="cuda")  # the release folder: config.yaml + weights.pt


def _onnxruntime_cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def _onnxruntime_cuda_backend(release: VerifiedRelease, intra_op_threads: int = 1) -> Backend:
    from .ort_cuda_backend import OnnxRuntimeCUDABackend

    return OnnxRuntimeCUDABackend(release.onnx_path, intra_op_threads=intra_op_threads)


def _tensorrt_available() -> bool:
    from .tensorrt_backend import tensorrt_available

    return tensorrt_available()


def _tensorrt_backend(release: VerifiedRelease, intra_op_threads: int = 1) -> Backend:
    from .tensorrt_backend import TensorRTBackend

    return TensorRTBackend(release.onnx_path, card=release.card)


# name -> (is it usable here?, factory(verified release, intra_op_threads))
BACKENDS: dict[str, tuple[Callable[[], bool], Callable[..., Backend]]] = {
    "tensorrt": (_tensorrt_available, _tensorrt_backend),
    "onnxruntime-cuda": (_onnxruntime_cuda_available, _onnxruntime_cuda_backend),
    "torch-cuda": (_torch_cuda_available, _torch_cuda_backend),
    "onnxruntime-cpu": (_onnxruntime_cpu_available, _onnxruntime_cpu_backend),
    "numba": (_numba_available, _numba_backend),
}

# what an explicit request for an unavailable backend is told
_HINTS = {
    "tensorrt": "`import tensorrt` failed or no CUDA device is visible (TensorRT comes from NVIDIA's own index)",
    "onnxruntime-cuda": "onnxruntime has no CUDAExecutionProvider: `pip uninstall onnxruntime && pip install onnxruntime-gpu==1.31.1` on a CUDA machine",
    "torch-cuda": "torch.cuda.is_available() is False (no GPU, or a CPU build of torch)",
}


def available_backends() -> list[str]:
    """Implemented backends usable on this machine, best first."""
    return [name for name in PRIORITY if name in BACKENDS and BACKENDS[name][0]()]


def create_backend(name: str, release: VerifiedRelease | str | Path, intra_op_threads: int = 1) -> Backend:
    """``name`` is a backend name or ``"auto"`` (the best available one). ``release``: a
    :class:`~hepzoo.runtime.release.VerifiedRelease` (what ``Session.load`` passes), or a release folder / its
    ``card.json`` / its ONNX file, which is verified here first (card, path inside the folder, sha256)."""
    if not isinstance(release, VerifiedRelease):
        release = verify_release(release_folder_of(release))
    onnx_path = release.onnx_path
    if name in BACKENDS and BACKENDS[name][0]():  # a named backend: probe only it (probing the GPU ones imports torch)
        return BACKENDS[name][1](release, intra_op_threads=intra_op_threads)
    available = available_backends()
    if name == "auto":
        if not available:
            raise RuntimeError("no inference backend is available (install onnxruntime)")
        skipped = []
        for candidate in available:  # the best one that can serve this model
            try:
                return BACKENDS[candidate][1](release, intra_op_threads=intra_op_threads)
            except BackendUnavailable as error:
                skipped.append(f"{candidate}: {error}")
        raise RuntimeError(f"no available backend can run {onnx_path}: {'; '.join(skipped)}")
    why = "not available on this machine" if name in BACKENDS else "unknown"
    hint = f" ({_HINTS[name]})" if name in _HINTS else ""
    raise ValueError(f"backend {name!r} is {why}{hint}; available backends: {available} (or 'auto')")
