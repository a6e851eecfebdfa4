"""Numba kernels of the ``numba`` backend: one ONNX operator (opset 20), or a fused group of them, per kernel.

Kernels take C-contiguous host arrays that the operators (:mod:`hepzoo.runtime.numba.operators`) have already
flattened to the 1-, 2- or 3-D view the kernel expects; NumPy-level reshapes, broadcasts and axis moves stay
there. All kernels are serial (``parallel=False``: the caller's framework owns threading; ``nogil=True``, so the
backend can run parts of a batch on several threads) and cached on disk
(``cache=True``), so a second process does not recompile.

- :mod:`.rowwise`: elementwise programs, and matrix products with a constant weight that end in one
  (also the building blocks of compiled plans);
- :mod:`.attention`: products of two runtime tensors, softmax, the fused attention;
- :mod:`.reduce`: LayerNormalization, ArgMax, TopK along the last axis;
- :mod:`.indexing`: GatherElements, ScatterElements, column copies and gathers;
- :mod:`.reference`: the NumPy reference of the elementwise programs (for tests).

**One rule for Numba's disk cache.** Numba checks a cached function against the source file it was defined in
only, yet the machine code it stores includes every ``@njit`` function it calls. So a kernel module calls no
``@njit`` function and imports no constant from another kernel module (each defines its own ``_FM`` fastmath
flags and float32 constants); kernels that call each other share a module. ``tests/test_numba_backend.py``
checks this. Generated plans (:mod:`hepzoo.runtime.numba.compile`) call kernels from here and embed a hash of
these sources for the same reason.

Every kernel has a NumPy reference in ``tests/test_numba_backend.py``.
"""
