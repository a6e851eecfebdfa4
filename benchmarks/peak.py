"""The measured FP32 GEMM peak of the machine, in the same run as the points it is compared with (issue 20).

The nominal peak of :mod:`~hepzoo.benchmarks.machine` (cores x frequency x FLOPs per cycle) is what the silicon
could do; what a matrix multiplication reaches on this machine, now (its clock, its load, its library), is the
fairer 100 %. :func:`measure_peaks` times a large square float32 ``A @ B`` (``n`` x ``n``, 2 n^3 FLOPs per
call), best of ``repeats`` calls after one warm-up, for each thread count asked:

* ONNX Runtime's MatMul (MLAS, the library of the ``onnxruntime-cpu`` points) with ``intra_op_num_threads``;
* numpy's BLAS under ``threadpoolctl`` when that is installed (without it numpy's thread count cannot be set
  after import, so numpy is left out).

The peak for a thread count is the best of the libraries. A point run with ``t`` threads is reported as a
fraction of the measured peak with ``t`` threads (:func:`peak_for`); single-thread points against the
single-thread peak.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

__all__ = ["measure_peaks", "numpy_sgemm_gflops", "ort_sgemm_gflops", "peak_for"]


def _best_gflops(call: Callable[[], Any], n: int, repeats: int) -> float:
    call()  # warm-up: thread pool start, packing buffers
    best = math.inf
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / max(best, 1e-9) / 1e9


def _operands(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)


def ort_sgemm_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of ONNX Runtime's float32 MatMul of two ``n`` x ``n`` inputs with ``threads`` intra-op threads."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a, b = _operands(n)
    return _best_gflops(lambda: sess.run(None, {"a": a, "b": b}), n, repeats)


def numpy_sgemm_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float | None:
    """GFLOP/s of numpy's float32 ``a @ b`` with its BLAS limited to ``threads`` (None without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    a, b = _operands(n)
    out = np.empty_like(a)
    with threadpool_limits(limits=threads, user_api="blas"):
        return _best_gflops(lambda: np.matmul(a, b, out=out), n, repeats)


def measure_peaks(threads: Iterable[int], n: int = 2048, repeats: int = 5) -> dict[str, Any]:
    """``{"method", "n", "repeats", "gflops": {threads: best}, "by_library": {library: {threads: GFLOP/s}}}``
    (thread counts as strings, as JSON keys are)."""
    counts = sorted({max(1, int(t)) for t in threads})
    by_library: dict[str, dict[str, float]] = {"onnxruntime": {}, "numpy": {}}
    for t in counts:
        by_library["onnxruntime"][str(t)] = ort_sgemm_gflops(t, n, repeats)
        value = numpy_sgemm_gflops(t, n, repeats)
        if value is not None:
            by_library["numpy"][str(t)] = value
    by_library = {k: v for k, v in by_library.items() if v}
    best = {str(t): max(lib[str(t)] for lib in by_library.values() if str(t) in lib) for t in counts}
    return {
        "method": f"measured: float32 {n} x {n} MatMul, best of {repeats} calls after a warm-up, with "
        f"{' and '.join(by_library)} at {', '.join(map(str, counts))} thread(s); the peak is the best library; "
        "a point is compared with the peak at its own thread count",
        "n": n,
        "repeats": repeats,
        "gflops": best,
        "by_library": by_library,
    }


def peak_for(peaks: dict[str, Any] | None, threads: int) -> float | None:
    """The measured peak (GFLOP/s) at ``threads`` threads; None when it was not measured or is not positive."""
    value = (peaks or {}).get("gflops", {}).get(str(threads))
    return float(value) if value is not None and math.isfinite(value) and value > 0 else None
