"""The ``numba`` backend: runs a zoo release's exported ``model.onnx`` with no ONNX Runtime at all.

:mod:`.kernels` holds its Numba kernels; the executor is :mod:`hepzoo.runtime.numba_backend`.
"""
