"""Elementwise ONNX operators: unary math and activations, Add/Sub/Mul/Div, Equal, Where, Clip, Cast,
Identity, Constant.

Float unary operators run as one-step programs on :func:`~hepzoo.runtime.numba.kernels.rowwise.apply_program`
(:func:`program_fn`); the tables :data:`UNARY_CODES` and :data:`BINARY_CODES` also tell the planner which nodes
it may chain into one program.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..ir import DTYPES, FLOATS, GraphRunError, UnsupportedModelError
from ..kernels.rowwise import OP_CODES, apply_program
from .common import Builder, check_attrs, registering, require

__all__ = ["BINARY_CODES", "BUILDERS", "UNARY_CODES", "program_fn"]

BUILDERS: dict[str, Builder] = {}
_op = registering(BUILDERS)

# ONNX operator -> program op code (:data:`~hepzoo.runtime.numba.kernels.rowwise.OP_CODES`)
UNARY_CODES = {
    "Neg": "NEG",
    "Exp": "EXP",
    "Log": "LOG",
    "Tanh": "TANH",
    "Sigmoid": "SIGMOID",
    "Abs": "ABS",
    "Asinh": "ASINH",
    "Round": "ROUND",
    "Relu": "RELU",
    "Sqrt": "SQRT",
    "Erf": "ERF",
}
# integer inputs of these run on NumPy
_UNARY_NUMPY = {
    "Neg": np.negative,
    "Abs": np.abs,
    "Exp": np.exp,
    "Log": np.log,
    "Tanh": np.tanh,
    "Asinh": np.arcsinh,
    "Round": np.rint,
    "Sqrt": np.sqrt,
}
# ONNX operator -> op code with the constant on the right, on the left
BINARY_CODES = {"Add": ("ADD", "ADD"), "Sub": ("SUB", "RSUB"), "Mul": ("MUL", "MUL"), "Div": ("DIV", "RDIV")}


def program_fn(codes: list[int], consts: np.ndarray) -> Callable:
    """The function of a program step: op codes ``codes`` with constants ``consts [P, 1 or C]`` on a float tensor."""
    codes_a = np.asarray(codes, dtype=np.int64)
    by_dtype = {dt: np.ascontiguousarray(consts, dtype=dt) for dt in FLOATS}

    def run(x):
        c = by_dtype.get(x.dtype)
        if c is None:
            raise TypeError(f"elementwise program on {x.dtype}")
        if c.shape[1] > 1 and (x.ndim == 0 or x.shape[-1] != c.shape[1]):
            raise ValueError(f"last axis {x.shape[-1:]} does not match a constant of length {c.shape[1]}")
        return apply_program(np.ascontiguousarray(x), codes_a, c)

    return run


@_op(*UNARY_CODES)
def _unary(node, const, info):
    check_attrs(node, {})
    code = OP_CODES[UNARY_CODES[node.op]]
    program = program_fn([code], np.zeros((1, 1)))
    fallback = _UNARY_NUMPY.get(node.op)

    def run(x):
        if x.dtype in FLOATS:
            return program(x)
        if fallback is None:
            raise GraphRunError(f"{node.where()}: input dtype {x.dtype} is not supported")
        return fallback(x)

    return run


@_op("Gelu")
def _gelu(node, const, info):
    a = check_attrs(node, {"approximate": "none"})
    require(node, a["approximate"] in ("none", "tanh"), f"approximate={a['approximate']!r}")
    return program_fn([OP_CODES["GELU" if a["approximate"] == "none" else "GELU_TANH"]], np.zeros((1, 1)))


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX integer Div truncates toward zero (NumPy's // floors)."""
    q = np.floor_divide(a, b)
    fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return (q + fix).astype(q.dtype)


@_op("Add", "Sub", "Mul", "Div")
def _binary(node, const, info):
    check_attrs(node, {})
    ufunc = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[node.op]

    def run(a, b):
        if node.op == "Div" and a.dtype.kind in "iu":
            return _int_div(a, b)
        out = ufunc(a, b)
        return out.astype(a.dtype, copy=False) if out.dtype != a.dtype else out

    return run


@_op("Equal")
def _equal(node, const, info):
    check_attrs(node, {})
    return lambda a, b: np.equal(a, b)


@_op("Where")
def _where(node, const, info):
    check_attrs(node, {})
    return lambda c, x, y: np.where(c, x, y)


@_op("Clip")
def _clip(node, const, info):
    check_attrs(node, {})

    def run(x, lo=None, hi=None):
        out = x
        if lo is not None:
            out = np.where(out < lo, lo, out).astype(x.dtype, copy=False)
        if hi is not None:
            out = np.where(out > hi, hi, out).astype(x.dtype, copy=False)
        return out if out is not x else x.copy()

    return run


@_op("Cast")
def _cast(node, const, info):
    a = check_attrs(node, {"to": None, "saturate": 1})
    require(node, a["to"] in DTYPES, f"cast to ONNX type {a['to']}")
    dtype = DTYPES[a["to"]]
    return lambda x: x.astype(dtype)


@_op("Identity")
def _identity(node, const, info):
    check_attrs(node, {})
    return lambda x: x


@_op("Constant")
def _constant(node, const, info):
    from onnx import numpy_helper

    require(node, len(node.attrs) == 1, f"attributes {sorted(node.attrs)}")
    key, value = next(iter(node.attrs.items()))
    if key == "value":
        array = numpy_helper.to_array(value)
    elif key in ("value_float", "value_int"):
        array = np.array(value, dtype=np.float32 if key == "value_float" else np.int64)
    elif key in ("value_floats", "value_ints"):
        array = np.array(value, dtype=np.float32 if key == "value_floats" else np.int64)
    else:
        raise UnsupportedModelError(f"{node.where()}: attribute {key!r} is not supported by the numba backend")
    return lambda: array
