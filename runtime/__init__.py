"""hepzoo.runtime: released models on inference backends (docs/ARCHITECTURE.md, contract 4).

``Session.load("mlpf-transformer")`` resolves a zoo name, version or release folder, verifies the card and
the sha256 of ``model.onnx``, and picks a backend (``"auto"``: the best available).
"""

from .backends import PRIORITY, Backend, available_backends, create_backend
from .backends.ort_cpu_backend import OnnxRuntimeCPUBackend
from .numba import NumbaBackend
from .session import Session, resolve_release_dir

__all__ = [
    "PRIORITY",
    "Backend",
    "NumbaBackend",
    "OnnxRuntimeCPUBackend",
    "Session",
    "available_backends",
    "create_backend",
    "resolve_release_dir",
]
