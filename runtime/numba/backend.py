"""The ``numba`` backend: :class:`NumbaBackend` runs a :class:`~hepzoo.runtime.numba.planner.Plan`, either as
one compiled function (:mod:`hepzoo.runtime.numba.compile`, row-wise graphs) or step by step; plus
:func:`profile_steps` (where a plan spends its time) and :func:`run_graph` (plan and run once).

``run`` is thread-safe: it keeps its values in a list local to the call.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Backend
from .compile import compile_plan
from .heap import keep_freed_memory
from .planner import plan_graph

__all__ = ["NumbaBackend", "profile_steps", "run_graph"]


class NumbaBackend(Backend):
    """Interprets ``model.onnx`` with Numba kernels; no ONNX Runtime needed (see :mod:`hepzoo.runtime.numba`).

    ``intra_op_threads``: the kernels are serial; with more than one thread a call of several events (rows, for
    flash-sim) is split along the batch axis into that many parts run concurrently on a thread pool (the
    kernels release the GIL), and the parts' outputs are concatenated. A graph whose outputs do not follow the
    batch axis is run whole. One event per call uses one thread.
    ``compile``: run graphs made only of row-wise steps (the flash-sim models) as one generated function
    (:mod:`hepzoo.runtime.numba.compile`); False keeps the step interpreter (the reference for that path).
    """

    name = "numba"

    def __init__(self, onnx_path: str | Path, intra_op_threads: int = 1, compile: bool = True):
        if intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
        self.onnx_path = Path(onnx_path)
        self.intra_op_threads = int(intra_op_threads)
        self.plan = plan_graph(self.onnx_path)
        keep_freed_memory()  # process-wide malloc settings for the interpreter's tensors (see .heap)
        p = self.plan
        self._inputs = [name for name, *_ in p.inputs]
        self._outputs = [name for name, *_ in p.outputs]
        self._input_specs = p.inputs
        self._template = p.template
        self._steps = [(fn, ins, outs[0] if len(outs) == 1 else None, outs, frees) for fn, ins, outs, frees, _ in p.steps]
        self._output_slots = p.outputs
        self.compiled = None
        if compile:
            self.compiled = compile_plan(p, self.onnx_path)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._split = True  # False once a graph's outputs turned out not to follow the batch axis

    def _check_input(self, name: str, value: Any, dtype: np.dtype, shape) -> np.ndarray:
        x = np.asarray(value)
        if x.dtype != dtype:
            raise ValueError(f"{self.onnx_path}: input {name!r} must be {dtype}, got {x.dtype}")
        if shape is not None:
            if x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape, strict=True)):
                want = [s if s is not None else "?" for s in shape]
                raise ValueError(f"{self.onnx_path}: input {name!r} must have shape {want}, got {list(x.shape)}")
        return x

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self._inputs if n not in inputs]
        if missing:
            raise ValueError(f"{self.onnx_path}: missing graph inputs {missing} (graph takes {self._inputs})")
        batch = {np.shape(inputs[n])[0] if np.ndim(inputs[n]) else None for n in self._inputs}
        if self.intra_op_threads > 1 and self._split and len(batch) == 1 and (batch.pop() or 0) > 1:
            split = self._run_split(inputs)
            if split is not None:
                return split
        return self._run_whole(inputs)

    def _run_split(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The batch split into ``intra_op_threads`` parts run concurrently; None if an output does not follow
        the batch axis (then the graph is run whole from now on)."""
        n = int(np.shape(inputs[self._inputs[0]])[0])
        bounds = np.linspace(0, n, min(self.intra_op_threads, n) + 1).astype(int)
        parts = [{k: np.asarray(inputs[k])[a:b] for k in self._inputs} for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.intra_op_threads, thread_name_prefix="hepzoo-numba")
        outs = list(self._pool.map(self._run_whole, parts))
        sizes = np.diff(bounds)
        if any(np.ndim(v) == 0 or v.shape[0] != m for out, m in zip(outs, sizes, strict=True) for v in out.values()):
            self._split = False
            return None
        return {name: np.concatenate([out[name] for out in outs], axis=0) for name in outs[0]}

    def _run_whole(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.compiled is not None:
            return self.compiled.run(
                {name: self._check_input(name, inputs[name], dtype, shape) for name, _, dtype, shape in self._input_specs}
            )
        vals = list(self._template)
        for name, s, dtype, shape in self._input_specs:
            vals[s] = self._check_input(name, inputs[name], dtype, shape)
        for fn, ins, out, outs, frees in self._steps:
            if out is not None:
                vals[out] = fn(*[vals[i] for i in ins])
            else:
                for s, v in zip(outs, fn(*[vals[i] for i in ins]), strict=False):
                    vals[s] = v
            for s in frees:
                vals[s] = None
        result = {}
        for name, s, copy in self._output_slots:
            v = vals[s]
            result[name] = np.array(v, copy=True, order="C") if copy or not v.flags.c_contiguous else v
        return result


def profile_steps(backend: NumbaBackend, inputs: Mapping[str, np.ndarray], repeat: int = 10) -> list[tuple[str, float]]:
    """Seconds per step (best of ``repeat`` runs), slowest first: where the time goes in a plan."""
    import time

    best: dict[int, float] = {}
    for _ in range(repeat):
        vals = list(backend._template)
        for name, s, dtype, shape in backend._input_specs:
            vals[s] = backend._check_input(name, inputs[name], dtype, shape)
        for k, (fn, ins, out, outs, _) in enumerate(backend._steps):
            t0 = time.perf_counter()
            result = fn(*[vals[i] for i in ins])
            dt = time.perf_counter() - t0
            best[k] = min(best.get(k, dt), dt)
            if out is not None:
                vals[out] = result
            else:
                for s, v in zip(outs, result, strict=False):
                    vals[s] = v
    wheres = [w for *_, w in backend.plan.steps]
    return sorted(((wheres[k], t) for k, t in best.items()), key=lambda kv: -kv[1])


def run_graph(onnx_path: str | Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One-shot convenience: plan ``onnx_path`` and run it on ``inputs``."""
    return NumbaBackend(onnx_path).run(inputs)
