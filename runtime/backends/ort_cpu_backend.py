"""``onnxruntime-cpu``: ``model.onnx`` on ONNX Runtime's ``CPUExecutionProvider`` (runs anywhere)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .base import Backend, invalid_model

__all__ = ["OnnxRuntimeCPUBackend"]


class OnnxRuntimeCPUBackend(Backend):
    """ONNX Runtime, ``CPUExecutionProvider``; one intra-op and one inter-op thread by default
    (the caller's framework owns threading)."""

    name = "onnxruntime-cpu"

    def __init__(self, onnx_path: str | Path, intra_op_threads: int = 1, inter_op_threads: int = 1):
        import onnxruntime as ort

        if intra_op_threads < 1 or inter_op_threads < 1:
            raise ValueError(
                f"thread counts must be >= 1, got intra_op_threads={intra_op_threads}, inter_op_threads={inter_op_threads}"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_threads)
        options.inter_op_num_threads = int(inter_op_threads)
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 4  # fatal only: failures are raised (one line through the session), not logged
        self.onnx_path = Path(onnx_path)
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        except MemoryError:
            raise
        except Exception as error:  # ONNX Runtime's InvalidProtobuf, InvalidGraph, Fail: not ValueError, maybe multi-line
            raise invalid_model(self.onnx_path, self.name, error) from None
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._outputs = [o.name for o in self.session.get_outputs()]

    @property
    def intra_op_threads(self) -> int:
        return int(self.session.get_session_options().intra_op_num_threads)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self._inputs if n not in inputs]
        if missing:
            raise ValueError(f"{self.onnx_path}: missing graph inputs {missing} (graph takes {self._inputs})")
        feeds = {n: np.ascontiguousarray(inputs[n]) for n in self._inputs}
        values = self.session.run(self._outputs, feeds)
        return dict(zip(self._outputs, values, strict=True))
