"""The ``numba`` backend: runs a zoo release's exported ``model.onnx`` with no ONNX Runtime at all.

The ONNX file stays the single source of truth: the graph is read with the ``onnx`` package (parsing and shape
inference only), planned once at load, and run on Numba kernels. The package is layered; each layer imports
only the ones above it in this list:

- :mod:`.kernels`: the Numba kernels (NumPy and Numba only);
- :mod:`.ir`: reading the ONNX graph into nodes, value infos and constants; the two errors;
- :mod:`.operators`: one builder per ONNX operator (attribute checks at load, the function that runs a node);
- :mod:`.planner`: operator checks, constant folding, fusion, slot allocation -> :class:`Plan`;
- :mod:`.compile`: row-wise plans (the flash-sim graphs) as one generated Numba function;
- :mod:`.heap`: the process's malloc settings that keep freed tensors in the heap (set by the backend);
- :mod:`.backend`: :class:`NumbaBackend` (runs a plan: compiled, or step by step), :func:`profile_steps`.

Kernels are serial (the framework owns threading, like ONNX Runtime with one intra-op thread) and cached on
disk by Numba, so only the first process on a machine compiles them.
"""

from __future__ import annotations

from .backend import NumbaBackend, profile_steps, run_graph
from .ir import GraphRunError, UnsupportedModelError
from .planner import Plan, describe_plan, plan_graph

__all__ = ["GraphRunError", "NumbaBackend", "Plan", "UnsupportedModelError", "describe_plan", "plan_graph", "profile_steps", "run_graph"]
