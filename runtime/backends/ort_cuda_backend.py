"""``onnxruntime-cuda``: ``model.onnx`` on ONNX Runtime's ``CUDAExecutionProvider`` with IO binding.

Why IO binding: ``InferenceSession.run`` copies every input from pageable host memory and allocates fresh
outputs on each call. Here each calling thread keeps pinned host staging buffers per input signature
(``torch`` pins them when it sees CUDA), binds them by pointer, and binds the outputs to pinned host buffers
of the shapes the graph's symbolic axes give, so ONNX Runtime copies straight between them and the GPU.

One ``InferenceSession`` per (model, provider, device, options) is shared by every backend object and thread
in the process (``run`` is thread-safe in ONNX Runtime; bindings and staging are per call / per thread).
``disable_cpu_fallback`` sets ``session.disable_cpu_ep_fallback``: session creation then fails if any node
would run on the CPU, so the GPU really runs the whole graph (the GPU tests use it). TF32 is off by default
(``use_tf32=0``): it would break the card's 1e-4 tolerance.

The provider is a parameter so CI exercises the same binding code with ``CPUExecutionProvider``.

Install: ``onnxruntime-gpu`` replaces ``onnxruntime`` (same import name; never both in one environment):
``pip uninstall -y onnxruntime && pip install onnxruntime-gpu==1.31.1``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .base import Backend, BackendUnavailable, invalid_model

__all__ = ["OnnxRuntimeCUDABackend", "shared_session"]

_DEVICE_TYPE = {"CUDAExecutionProvider": "cuda", "CPUExecutionProvider": "cpu"}
_SESSIONS: dict[tuple, Any] = {}
_SESSIONS_LOCK = threading.Lock()


def shared_session(
    onnx_path: Path, provider: str, device_id: int, intra_op_threads: int, disable_cpu_fallback: bool,
    provider_options: Mapping[str, str],
):
    """The process-wide ``InferenceSession`` for these settings (created on first use)."""
    import onnxruntime as ort

    key = (str(onnx_path.resolve()), onnx_path.stat().st_mtime_ns, provider, device_id, intra_op_threads,
           disable_cpu_fallback, tuple(sorted(provider_options.items())))
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = int(intra_op_threads)
            options.inter_op_num_threads = 1
            if disable_cpu_fallback and provider != "CPUExecutionProvider":  # (ORT refuses it with the CPU EP itself)
                options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
            providers: list = [(provider, dict(provider_options))]
            if provider != "CPUExecutionProvider" and not disable_cpu_fallback:
                providers.append("CPUExecutionProvider")  # for the few operators the provider lacks
            try:
                session = _SESSIONS[key] = ort.InferenceSession(str(onnx_path), options, providers=providers)
            except MemoryError:
                raise
            except Exception as error:  # ONNX Runtime's InvalidProtobuf, InvalidGraph, Fail: one line naming the file
                raise invalid_model(onnx_path, "onnxruntime", error) from None
        return session


class OnnxRuntimeCUDABackend(Backend):
    """See the module docstring; ``provider="CPUExecutionProvider"`` runs the same binding path on the CPU."""

    def __init__(
        self,
        onnx_path: str | Path,
        provider: str = "CUDAExecutionProvider",
        device_id: int = 0,
        intra_op_threads: int = 1,
        disable_cpu_fallback: bool = False,
        provider_options: Mapping[str, str] | None = None,
    ):
        import onnxruntime as ort

        if provider not in _DEVICE_TYPE:
            raise ValueError(f"provider must be one of {sorted(_DEVICE_TYPE)}, got {provider!r}")
        if provider not in ort.get_available_providers():
            raise BackendUnavailable(f"onnxruntime {ort.__version__} has no {provider} (providers: {ort.get_available_providers()})")
        if provider_options is None:
            provider_options = {"device_id": str(device_id), "use_tf32": "0"} if provider == "CUDAExecutionProvider" else {}
        self.name = "onnxruntime-cuda" if provider == "CUDAExecutionProvider" else "onnxruntime-iobinding-cpu"
        self.onnx_path = Path(onnx_path)
        self.provider, self.device_id = provider, int(device_id)
        self.device_type = _DEVICE_TYPE[provider]
        # torch (when it has CUDA) loads the CUDA runtime, cuBLAS and cuDNN from the nvidia-* wheels into the
        # process, so ONNX Runtime's CUDA provider finds them without LD_LIBRARY_PATH
        self._pin = self.device_type == "cuda" and _torch_cuda()
        self.session = shared_session(self.onnx_path, provider, self.device_id, intra_op_threads, disable_cpu_fallback, provider_options)
        if provider not in self.session.get_providers():
            raise BackendUnavailable(f"{self.onnx_path}: {provider} could not be initialised (session providers: {self.session.get_providers()})")
        self._inputs = {i.name: i for i in self.session.get_inputs()}
        self._outputs = {o.name: o for o in self.session.get_outputs()}
        self._local = threading.local()

    def output_shapes(self, inputs: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...] | None]:
        """Output shapes from the graph's symbolic axes bound by the inputs' shapes (None where unresolved)."""
        dims: dict[str, int] = {}
        for name, meta in self._inputs.items():
            for axis, size in zip(meta.shape, inputs[name].shape, strict=False):
                if isinstance(axis, str):
                    dims[axis] = int(size)
        shapes: dict[str, tuple[int, ...] | None] = {}
        for name, meta in self._outputs.items():
            resolved = [a if isinstance(a, int) else dims.get(a) if isinstance(a, str) else None for a in meta.shape]
            shapes[name] = tuple(resolved) if all(isinstance(a, int) for a in resolved) else None
        return shapes

    def _staging(self, arrays: Mapping[str, np.ndarray], out_shapes: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """This thread's host buffers for this signature (pinned where torch sees CUDA)."""
        cache: dict = self._local.__dict__.setdefault("buffers", {})
        key = tuple((n, a.shape, a.dtype.str) for n, a in arrays.items()) + tuple(sorted(out_shapes.items(), key=str))
        buffers = cache.get(key)
        if buffers is None:
            buffers = {n: _host_buffer(a.shape, a.dtype, self._pin) for n, a in arrays.items()}
            for name, shape in out_shapes.items():
                if shape is not None:
                    buffers["out:" + name] = _host_buffer(shape, _ONNX_TO_NUMPY[self._outputs[name].type], self._pin)
            if len(cache) >= 32:  # bounded: drop the oldest signature
                cache.pop(next(iter(cache)))
            cache[key] = buffers
        return buffers

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self._inputs if n not in inputs]
        if missing:
            raise ValueError(f"{self.onnx_path}: missing graph inputs {missing} (graph takes {self.input_names})")
        arrays = {}
        for name, meta in self._inputs.items():
            dtype = _ONNX_TO_NUMPY.get(meta.type)
            if dtype is None:
                raise TypeError(f"{self.onnx_path}: input {name!r} has unsupported type {meta.type}")
            arrays[name] = np.ascontiguousarray(inputs[name], dtype=dtype)
        out_shapes = self.output_shapes(arrays)
        buffers = self._staging(arrays, out_shapes)
        binding = self.session.io_binding()
        for name, a in arrays.items():
            staged = buffers[name]
            np.copyto(staged, a)
            binding.bind_input(name, "cpu", 0, staged.dtype, staged.shape, staged.ctypes.data)
        for name, shape in out_shapes.items():
            if shape is None:  # shape known only after the run: ONNX Runtime allocates it on the device
                binding.bind_output(name, self.device_type, self.device_id)
            else:
                out = buffers["out:" + name]
                binding.bind_output(name, "cpu", 0, out.dtype, out.shape, out.ctypes.data)
        binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        copied = None
        result = {}
        for i, (name, shape) in enumerate(out_shapes.items()):
            if shape is None:
                copied = copied if copied is not None else binding.copy_outputs_to_cpu()
                result[name] = copied[i]
            else:
                result[name] = buffers["out:" + name].copy()  # the staging buffer is reused by the next call
        return result


_ONNX_TO_NUMPY = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
}


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _host_buffer(shape: tuple[int, ...], dtype: np.dtype, pinned: bool) -> np.ndarray:
    """A host array; page-locked (through torch) when ``pinned``, so DMA copies need no bounce buffer."""
    if pinned:
        import torch

        return torch.empty(tuple(shape), dtype=torch.from_numpy(np.empty(0, dtype)).dtype, pin_memory=True).numpy()
    return np.empty(shape, dtype)
