"""Keep freed intermediate tensors in the C heap (glibc ``mallopt``), so that the step interpreter does not pay
page faults for every tensor of every call.

The interpreter allocates each step's output with NumPy and frees it when the last step that reads it is done.
glibc serves blocks above its mmap threshold (128 KiB at start) with ``mmap`` and returns them with ``munmap``, so
each call maps fresh pages and faults them in again. glibc raises that threshold by itself when such a block is
freed, but it also trims the top of the heap beyond twice the threshold, and measured on an MLPF graph it never
reached a steady state: ``mlpf-gnnlsh/4`` at 1 024 elements, one thread, 25 calls in a fresh process (before the
vectorised Exp), 57-61 ms per call as it comes against 47-48 ms with the two settings below from the start (ONNX
Runtime, which keeps its own arena: 48-50 ms).

:func:`keep_freed_memory` sets ``M_MMAP_THRESHOLD`` to glibc's ceiling (32 MiB: blocks up to that size come from
the heap, larger ones are still mapped) and ``M_TRIM_THRESHOLD`` to 128 MiB (free memory at the top of the heap
up to that much stays mapped). These are process-wide settings: :class:`~hepzoo.runtime.numba.NumbaBackend` makes
them once, when the first one is built; ``HEPZOO_NUMBA_MALLOPT=0`` leaves the allocator alone. The process keeps
up to 128 MiB more resident between calls, and the peak grows with it: ``hepzoo run mlpf-gnnlsh --backend numba``
over 500 ttbar events (batched, 100-700 elements each), whole-process medians of 5 paired runs: wall 16.3 -> 15.7 s,
peak RSS 837 -> 900 MiB. Outside glibc (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

__all__ = ["keep_freed_memory"]

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: mallopt refuses more
TRIM_THRESHOLD = 128 * 1024 * 1024

_lock = threading.Lock()
_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Apply the two settings once per process; True if they are in effect."""
    with _lock:
        if "done" not in _state:
            _state["done"] = _apply()
        return _state["done"]


def _apply() -> bool:
    if os.environ.get("HEPZOO_NUMBA_MALLOPT", "1").strip() == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False  # not glibc
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
