"""NumPy references of the kernels' elementwise programs (tests compare every program kernel against it)."""

from __future__ import annotations

import math

import numpy as np

from .rowwise import OP_CODES

__all__ = ["run_program_numpy"]

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_SQRT_2_PI = math.sqrt(2.0 / math.pi)


def run_program_numpy(x: np.ndarray, codes: np.ndarray, consts: np.ndarray) -> np.ndarray:
    """NumPy reference of :func:`~hepzoo.runtime.numba.kernels.rowwise.apply_program` (one pass per step).

    Used by the tests of every program kernel.
    """
    from scipy.special import erf

    names = {v: k for k, v in OP_CODES.items()}
    v = np.array(x, dtype=x.dtype, copy=True)
    for p, code in enumerate(codes):
        c = consts[p] if consts.shape[1] > 1 else consts[p, 0]
        c = np.asarray(c, dtype=x.dtype)
        name = names[int(code)]
        with np.errstate(all="ignore"):
            v = {
                "ADD": lambda: v + c,
                "SUB": lambda: v - c,
                "RSUB": lambda: c - v,
                "MUL": lambda: v * c,
                "DIV": lambda: v / c,
                "RDIV": lambda: c / v,
                "MAX": lambda: np.where(v < c, c, v),
                "MIN": lambda: np.where(v > c, c, v),
                "NEG": lambda: -v,
                "EXP": lambda: np.exp(v),
                "LOG": lambda: np.log(v),
                "TANH": lambda: np.tanh(v),
                "SIGMOID": lambda: 1.0 / (1.0 + np.exp(-v)),
                "GELU": lambda: 0.5 * v * (1.0 + erf(v.astype(np.float64) * _SQRT1_2)),
                "GELU_TANH": lambda: 0.5 * v * (1.0 + np.tanh(_SQRT_2_PI * (v + 0.044715 * v**3))),
                "ABS": lambda: np.abs(v),
                "ASINH": lambda: np.arcsinh(v),
                "ROUND": lambda: np.rint(v),
                "RELU": lambda: np.maximum(v, 0),
                "SQRT": lambda: np.sqrt(v),
                "ERF": lambda: erf(v.astype(np.float64)),
            }[name]().astype(x.dtype)
    return v
