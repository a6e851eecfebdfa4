"""hepzoo.runtime numba backend: kernels vs NumPy, single ops vs the ONNX reference evaluator, every zoo model
vs ONNX Runtime CPU within the card's tolerance, load-time errors, and a process without onnxruntime."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import awkward as ak
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from scipy.special import erf

from hepzoo.datasets import schema
from hepzoo.export.card import load_card
from hepzoo.export.zoo import list_releases
from hepzoo.models import get_spec
from hepzoo.models.families import get_family
from hepzoo.runtime import NumbaBackend, Session, available_backends
from hepzoo.runtime.numba.kernels import attention, indexing, reduce, reference, rowwise
from hepzoo.runtime.numba import GraphRunError, UnsupportedModelError, plan_graph


RELEASES = [r for r in list_releases() if (r.path / "card.json").is_file()]
RNG = np.random.default_rng


# ---- kernels vs NumPy references -------------------------------------------------------------------------------


def _program(names: list[str], rng, ncol: int) -> tuple[np.ndarray, np.ndarray]:
    codes = np.array([rowwise.OP_CODES[n] for n in names], dtype=np.int64)
    consts = rng.uniform(0.5, 2.0, (len(names), ncol)).astype(np.float32)
    return codes, consts


ALL_STEPS = [
    ["ADD", "SUB", "RSUB", "MUL", "DIV", "RDIV"],
    ["MAX", "MIN", "NEG", "ABS"],
    ["EXP", "LOG"],
    ["TANH", "SIGMOID"],
    ["GELU"],
    ["GELU_TANH"],
    ["ASINH", "ROUND", "RELU"],
    ["ABS", "SQRT", "ERF"],
]


@pytest.mark.parametrize("names", ALL_STEPS, ids=lambda n: "-".join(n))
@pytest.mark.parametrize("ncol", [1, 7])
def test_apply_program_matches_numpy(names, ncol):
    rng = RNG(1)
    x = (rng.standard_normal((5, 3, 7)) * 3).astype(np.float32)
    x[0, 0, :3] = [0.0, 2.5, -3.5]  # rounding ties, zero
    codes, consts = _program(names, rng, ncol)
    got = rowwise.apply_program(x, codes, consts)
    ref = reference.run_program_numpy(x, codes, consts)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=2e-6, equal_nan=True)


def test_program_special_values():
    x = np.array([-np.inf, -100.0, -1e-5, 0.0, 1e-5, 100.0, np.inf, np.nan], np.float32)
    x64 = x.astype(np.float64)
    with np.errstate(all="ignore"):
        refs = {
            "SIGMOID": 1 / (1 + np.exp(-x64)),
            "TANH": np.tanh(x64),
            # gelu(-inf) = -inf * 0: NaN, in the kernel as in the formula
            "GELU": 0.5 * x64 * (1 + erf(x64 / np.sqrt(2))),
            "EXP": np.exp(x64),
        }
        for name, ref in refs.items():
            got = rowwise.apply_program(x, np.array([rowwise.OP_CODES[name]]), np.zeros((1, 1), np.float32))
            np.testing.assert_allclose(got, ref.astype(np.float32), rtol=1e-6, atol=1e-7, equal_nan=True, err_msg=name)


@pytest.mark.parametrize("m", [1, 3, 4, 5, 9])
@pytest.mark.parametrize("ncol_program", [0, 1, "n"])
def test_dense_matches_numpy(m, ncol_program):
    rng = RNG(m)
    k, n = 13, 11
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    if ncol_program == 0:
        codes, consts = np.zeros(0, np.int64), np.zeros((0, 1), np.float32)
    else:
        codes, consts = _program(["GELU", "MUL", "ADD"], rng, 1 if ncol_program == 1 else n)
    got = rowwise.dense(x, w, b, codes, consts)
    lin = (x.astype(np.float64) @ w + b).astype(np.float32)
    ref = reference.run_program_numpy(lin, codes, consts) if codes.size else lin
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_bmm_matches_numpy():
    rng = RNG(2)
    a = rng.standard_normal((4, 5, 6)).astype(np.float32)
    b = rng.standard_normal((4, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(attention.bmm(a, b), a @ b, rtol=1e-5, atol=1e-5)


def test_layer_norm_matches_numpy():
    rng = RNG(3)
    x = (rng.standard_normal((6, 10)) * 5 + 3).astype(np.float32)
    g, b = rng.standard_normal(10).astype(np.float32), rng.standard_normal(10).astype(np.float32)
    y, mean, inv = reduce.layer_norm(x, g, b, 1e-5)
    x64 = x.astype(np.float64)
    mu, var = x64.mean(1, keepdims=True), x64.var(1, keepdims=True)
    np.testing.assert_allclose(y, (x64 - mu) / np.sqrt(var + 1e-5) * g + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean, mu[:, 0], rtol=1e-6)
    np.testing.assert_allclose(inv, 1 / np.sqrt(var[:, 0] + 1e-5), rtol=1e-5)


def test_softmax_with_minus_inf_masking():
    rng = RNG(4)
    x = rng.standard_normal((4, 9)).astype(np.float32) * 10
    x[1, 3:] = -np.inf  # partly masked row
    x[2, :] = -np.inf  # fully masked row: NaN, as in NumPy's formula and ONNX Runtime
    got = attention.softmax(x)
    with np.errstate(invalid="ignore"):
        e = np.exp(x - x.max(1, keepdims=True))
        ref = e / e.sum(1, keepdims=True)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7, equal_nan=True)
    assert np.all(got[1, 3:] == 0) and np.all(np.isnan(got[2]))


def test_argmax_ties():
    x = np.array([[1, 3, 3, 0], [2, 2, 2, 2], [-1, -5, -1, -9]], np.float32)
    np.testing.assert_array_equal(reduce.argmax_last(x, False), [1, 0, 0])
    np.testing.assert_array_equal(reduce.argmax_last(x, True), [2, 3, 2])


def _topk_reference(x: np.ndarray, k: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sorted by value (descending if largest), ties by ascending index, as ONNX TopK requires."""
    idx = np.arange(x.shape[1])
    order = np.stack([np.lexsort((idx, -row if largest else row)) for row in x])[:, :k]
    return np.take_along_axis(x, order, 1), order


@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize("k", [1, 5, 33])
def test_topk_with_ties(largest, k):
    rng = RNG(5)
    x = rng.integers(0, 6, (7, 33)).astype(np.float32)  # many ties
    values, indices = reduce.topk(x, k, largest)
    ref_v, ref_i = _topk_reference(x, k, largest)
    np.testing.assert_array_equal(indices, ref_i)
    np.testing.assert_array_equal(values, ref_v)


def test_gather_scatter_elements_match_numpy():
    rng = RNG(6)
    data = rng.standard_normal((3, 8, 4)).astype(np.float32)
    idx = rng.integers(-8, 8, (3, 5, 4))
    out, bad = indexing.gather_elements(data, idx)
    assert bad == -1
    np.testing.assert_array_equal(out, np.take_along_axis(data, idx % 8, axis=1))
    perm = np.stack([np.stack([rng.permutation(8) for _ in range(4)], -1) for _ in range(3)])  # unique per column
    upd = rng.standard_normal(perm.shape).astype(np.float32)
    for code, ufunc in [(0, None), (1, np.add), (2, np.multiply), (3, np.maximum), (4, np.minimum)]:
        got, bad = indexing.scatter_elements(data, perm - 8 * (code % 2), upd, code)  # negative indices on odd codes
        ref = data.copy()
        if ufunc is None:
            np.put_along_axis(ref, perm, upd, axis=1)
        else:
            np.put_along_axis(ref, perm, ufunc(np.take_along_axis(ref, perm, 1), upd), axis=1)
        assert bad == -1
        np.testing.assert_allclose(got, ref, rtol=1e-6)
    _, bad = indexing.gather_elements(data, np.full((3, 1, 4), 8))
    assert bad == 0


def test_kernel_modules_import_nothing_from_each_other():
    """Numba checks a cached kernel against its own source file only, but the machine code it keeps includes
    every @njit function the kernel calls (and the constants it reads): a module with kernels must take none
    from another hepzoo module, or an edit there would leave stale machine code in this one's cache."""
    modules = sorted(Path(rowwise.__file__).parent.glob("*.py"))
    assert len(modules) >= 5
    for path in modules:
        tree = ast.parse(path.read_text())
        kernels = [f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and any(
            isinstance(d, ast.Call) and getattr(d.func, "id", None) == "njit" for d in f.decorator_list)]
        local = [n.lineno for n in ast.walk(tree) if (isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("hepzoo")))
                 or (isinstance(n, ast.Import) and any(a.name.startswith("hepzoo") for a in n.names))]  # fmt: skip
        assert not (kernels and local), f"{path.name} defines kernels {kernels[:3]}... and imports hepzoo code (line {local[:1]})"


# ---- single operators vs the ONNX reference evaluator ------------------------------------------------------------


def _one_node_model(op: str, inputs: dict[str, np.ndarray], consts: dict[str, np.ndarray], n_out: int = 1, **attrs):
    names = list(inputs) + list(consts)
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, name=f"the_{op.lower()}", **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outs],
        [numpy_helper.from_array(v, n) for n, v in consts.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _check_op(tmp_path, op, inputs, consts=None, n_out=1, **attrs):
    model = _one_node_model(op, inputs, consts or {}, n_out, **attrs)
    path = tmp_path / f"{op}.onnx"
    onnx.save(model, path)
    ref = ReferenceEvaluator(model).run(None, inputs)
    got = NumbaBackend(path).run(inputs)
    for i, r in enumerate(ref):
        g = got[f"y{i}"]
        assert g.shape == r.shape and g.dtype == r.dtype, (op, g.shape, r.shape, g.dtype, r.dtype)
        np.testing.assert_allclose(g, r, rtol=2e-6, atol=2e-6, equal_nan=True, err_msg=op)


F = np.float32


def _x(*shape, seed=0):
    return RNG(seed).standard_normal(shape).astype(F)


@pytest.mark.parametrize(
    "case",
    [
        ("Add", {"a": _x(2, 3, 4), "b": _x(3, 1)}, {}, {}),  # broadcasting, both runtime
        ("Sub", {"a": _x(2, 3, 4)}, {"c": _x(4)}, {}),  # fused program with a per-column constant
        ("Div", {"a": _x(2, 3, 4)}, {"c": np.array(2.5, F)}, {}),
        ("Div", {"a": np.array([7, -7, 6, -6], np.int64), "b": np.array([2, 2, -4, 4], np.int64)}, {}, {}),
        ("Mul", {"a": _x(5, 1)}, {"c": _x(3)}, {}),  # constant broadcasts the output wider: not fused
        ("Gelu", {"a": _x(3, 4)}, {}, {"approximate": "tanh"}),
        ("Clip", {"a": _x(3, 4)}, {"lo": np.array(-0.5, F), "hi": np.array(0.5, F)}, {}),
        ("Softmax", {"a": _x(2, 3, 5)}, {}, {"axis": 1}),
        ("Softmax", {"a": _x(2, 3, 5)}, {}, {"axis": -1}),
        ("LayerNormalization", {"a": _x(2, 3, 4)}, {"g": _x(3, 4, seed=1), "b": _x(3, 4, seed=2)}, {"axis": -2}),
        ("ArgMax", {"a": _x(3, 4, 5)}, {}, {"axis": -2, "keepdims": 1}),
        ("ArgMax", {"a": _x(3, 4, 5)}, {}, {"axis": 0, "keepdims": 0, "select_last_index": 1}),
        ("ReduceSum", {"a": _x(3, 4, 5)}, {"axes": np.array([-1, 0])}, {"keepdims": 0}),
        ("ReduceSum", {"a": _x(3, 4, 5)}, {}, {"keepdims": 1}),
        ("Transpose", {"a": _x(2, 3, 4)}, {}, {"perm": [2, 0, 1]}),
        ("Gather", {"a": _x(3, 4, 5)}, {"i": np.array([[0, -1], [2, 1]])}, {"axis": -2}),
        ("Gather", {"a": _x(3, 4, 5)}, {"i": np.array(-1)}, {"axis": 2}),
        ("GatherElements", {"a": _x(3, 4, 5), "i": RNG(1).integers(-3, 3, (2, 4, 5))}, {}, {"axis": 0}),
        ("GatherElements", {"a": _x(3, 4, 5), "i": RNG(2).integers(-5, 5, (3, 4, 7))}, {}, {"axis": 2}),
        ("Slice", {"a": _x(6, 7)}, {"s": np.array([-1, 1]), "e": np.array([-7, 100]), "ax": np.array([0, -1]), "st": np.array([-2, 3])}, {}),
        ("Unsqueeze", {"a": _x(3, 4)}, {"ax": np.array([-1, 0])}, {}),
        ("Squeeze", {"a": _x(3, 1, 4, 1)}, {"ax": np.array([-1])}, {}),
        ("Reshape", {"a": _x(2, 3, 4)}, {"s": np.array([0, -1])}, {}),
        ("Expand", {"a": _x(3, 1)}, {"s": np.array([2, 1, 4])}, {}),
        ("Concat", {"a": _x(2, 3), "b": _x(2, 1)}, {}, {"axis": -1}),
        ("Where", {"c": RNG(0).random((3, 4)) > 0.5, "a": _x(3, 4)}, {"b": _x(4)}, {}),
        ("Equal", {"a": np.array([1, 2, 3], np.int64)}, {"b": np.array([3, 2, 1], np.int64)}, {}),
        ("Cast", {"a": _x(3, 4) * 10}, {}, {"to": TensorProto.INT32}),
        ("Range", {}, {"s": np.array(1, np.int64), "l": np.array(10, np.int64), "d": np.array(3, np.int64)}, {}),
        ("Round", {"a": np.array([0.5, 1.5, 2.5, -0.5, -1.5, 2.4], F)}, {}, {}),
        ("Asinh", {"a": _x(3, 4)}, {}, {}),
        ("Gemm", {"a": _x(3, 5)}, {"w": _x(4, 5, seed=1), "c": _x(4, seed=2)}, {"transB": 1, "alpha": 0.5, "beta": 2.0}),
        ("Gemm", {"a": _x(5, 3), "w": _x(5, 4, seed=1)}, {}, {"transA": 1}),
        ("MatMul", {"a": _x(2, 1, 3, 5), "b": _x(4, 5, 2)}, {}, {}),  # runtime operands, batch broadcasting
        ("MatMul", {"a": _x(2, 3, 5)}, {"w": _x(5, seed=1)}, {}),  # constant vector weight
        ("MatMul", {"a": _x(5)}, {"w": _x(5, 4, seed=1)}, {}),
    ],
    ids=lambda c: c[0],
)
def test_single_op_matches_onnx_reference(tmp_path, case):
    op, inputs, consts, attrs = case
    _check_op(tmp_path, op, inputs, consts, **attrs)


@pytest.mark.parametrize("largest", [0, 1])
def test_topk_op_with_ties_and_negative_axis(tmp_path, largest):
    x = RNG(3).integers(0, 4, (3, 9, 2)).astype(F)
    _check_op(tmp_path, "TopK", {"a": x}, {"k": np.array([4])}, n_out=2, axis=-2, largest=largest)


def test_scatter_elements_op(tmp_path):
    data = _x(4, 4)
    idx = np.array([[1, -1, 0, 2], [0, 0, 3, 1]])  # unique per column: "none" is order-independent
    upd = _x(2, 4, seed=5)
    for reduction in ("none", "add", "mul", "max", "min"):
        _check_op(tmp_path, "ScatterElements", {"d": data, "i": idx, "u": upd}, axis=0, reduction=reduction)


def test_constant_subgraph_is_folded_and_chain_is_fused(tmp_path):
    """Initializer-only nodes run once at load; MatMul + Add + Gelu + Mul become one dense step."""
    w = _x(4, 3)
    nodes = [
        helper.make_node("Transpose", ["wT"], ["w"], perm=[1, 0], name="fold_me"),
        helper.make_node("MatMul", ["x", "w"], ["xw"], name="mm"),
        helper.make_node("Add", ["xw", "b"], ["lin"], name="bias"),
        helper.make_node("Gelu", ["lin"], ["act"], name="act"),
        helper.make_node("Mul", ["act", "two"], ["y"], name="scale"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w.T.copy(), "wT"), numpy_helper.from_array(_x(3, seed=1), "b"), numpy_helper.from_array(np.array(2.0, F), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    plan = plan_graph(path)
    assert plan.n_folded == 1 and len(plan.steps) == 1 and plan.fused["nodes_into_dense"] == 4
    x = _x(6, 4, seed=3)
    np.testing.assert_allclose(NumbaBackend(path).run({"x": x})["y"], ReferenceEvaluator(model).run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)



def _softmax_ref(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        x64 = x.astype(np.float64)
        e = np.exp(x64 - x64.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("d", [1, 7, 16, 37, 1024])
def test_softmax32_matches_numpy(d):
    """The float32 softmax (vectorised exp, integer-keyed row max) vs float64 NumPy, with masked rows."""
    rng = RNG(d)
    x = (rng.standard_normal((6, d)) * 20).astype(np.float32)
    x[1, (d + 1) // 2 :] = -np.inf  # partly masked (nothing for d = 1)
    x[2] = -np.inf  # fully masked: NaN
    x[3, 0] = np.nan  # a NaN makes its row NaN
    x[4] = -x[4] - 200.0  # all negative, large shift
    got = attention.softmax32(x)
    ref = _softmax_ref(x)
    ref[3] = np.nan
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-7, equal_nan=True)
    assert np.all(got[1, (d + 1) // 2 :] == 0) and np.all(np.isnan(got[2])) and np.all(np.isnan(got[3]))
    assert got.dtype == np.float32


@pytest.mark.parametrize("m,dim,n,dv", [(1, 1, 1, 1), (4, 16, 64, 16), (7, 3, 37, 5), (9, 16, 130, 16)])
@pytest.mark.parametrize("mask_kind", ["keys", "full", "batch"])
def test_attention_matches_numpy(m, dim, n, dv, mask_kind):
    """Fused attention vs softmax(q @ kt + mask) @ v in float64; odd sizes hit the 4-row and 2-k remainders."""
    rng = RNG(m * 1000 + n)
    b = 3
    q = rng.standard_normal((b, m, dim)).astype(np.float32)
    kt = rng.standard_normal((b, dim, n)).astype(np.float32)
    v = rng.standard_normal((b, n, dv)).astype(np.float32)
    mask = {"keys": (1, 1, n), "full": (b, m, n), "batch": (b, 1, n)}[mask_kind]
    mask = np.where(rng.random(mask) < 0.3, -np.inf, 0.1 * rng.standard_normal(mask)).astype(np.float32)
    mask[..., 0] = 0.0  # one open key per row
    if mask_kind != "keys" and m > 1:
        mask[0, -1 if mask_kind == "full" else 0, :] = -np.inf  # a fully masked row (or batch entry): NaN
    got = attention.attention(q, kt, np.ascontiguousarray(mask), np.ascontiguousarray(np.swapaxes(v, 1, 2)))
    with np.errstate(invalid="ignore"):
        ref = _softmax_ref(q.astype(np.float64) @ kt + mask) @ v
    assert got.shape == (b, m, dv) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5, equal_nan=True)
    assert np.array_equal(np.isnan(got), np.isnan(ref))


@pytest.mark.parametrize("m", [1, 5, 32, 70])
def test_dense_rows_matches_numpy(m):
    """Blocked dense + float32 program (row blocks of 32, remainders) vs NumPy, wide and narrow outputs."""
    rng = RNG(m)
    x = rng.standard_normal((m, 19)).astype(np.float32)
    for n in (3, 40):
        w = rng.standard_normal((19, n)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        for names in ([], ["GELU", "MUL"], ["SIGMOID"]):
            codes = np.array([rowwise.OP_CODES[c] for c in names], dtype=np.int64)
            consts = rng.uniform(0.5, 2.0, (len(names), n)).astype(np.float32).reshape(len(names), n)
            got = rowwise.dense_rows(x, w, np.ascontiguousarray(w.T), bias, codes, consts, n < rowwise.NARROW)
            lin = (x.astype(np.float64) @ w + bias).astype(np.float32)
            ref = reference.run_program_numpy(lin, codes, consts) if names else lin
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=f"n={n} {names}")


def _attention_model(mask_shape: tuple[int, ...] | None) -> onnx.ModelProto:
    """q, k, v [2, 3, N, 4] -> softmax(q @ k^T [+ mask]) @ v, the pattern the transformer export produces."""
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2], name="kT")]
    nodes.append(helper.make_node("MatMul", ["q", "kt"], ["s"], name="scores"))
    scores = "s"
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, "n", 4]) for n in ("q", "k", "v")]
    if mask_shape is not None:
        nodes.append(helper.make_node("Add", ["mask", "s"], ["sm"], name="add_mask"))
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, list(mask_shape)))
        scores = "sm"
    nodes.append(helper.make_node("Softmax", [scores], ["p"], axis=-1, name="softmax"))
    nodes.append(helper.make_node("MatMul", ["p", "v"], ["y"], name="pv"))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


@pytest.mark.parametrize("mask_shape", [None, (2, 1, 1, "n"), (1, 3, "n", "n"), ("n",)])
def test_attention_pattern_is_fused_and_matches_reference(tmp_path, mask_shape):
    """MatMul [+ Add mask] + Softmax + MatMul is planned as one attention step and matches the ONNX reference
    evaluator (mask per event, per head and query, or a plain key vector; a fully masked row gives NaN)."""
    model = _attention_model(mask_shape)
    path = tmp_path / "attn.onnx"
    onnx.save(model, path)
    plan = plan_graph(path)
    assert plan.fused["attention"] == 1 and plan.fused["nodes_into_attention"] == (4 if mask_shape else 3)
    n = 9
    rng = RNG(11)
    feeds = {name: rng.standard_normal((2, 3, n, 4)).astype(np.float32) for name in ("q", "k", "v")}
    if mask_shape is not None:
        shape = tuple(n if d == "n" else d for d in mask_shape)
        mask = np.where(rng.random(shape) < 0.3, -np.inf, 0.0).astype(np.float32)
        mask[..., 0] = 0.0
        if len(shape) == 4 and shape[2] == n:
            mask[0, 1, 2, :] = -np.inf  # fully masked query row
        feeds["mask"] = mask
    with np.errstate(invalid="ignore"):
        ref = ReferenceEvaluator(model).run(None, feeds)[0]
    got = NumbaBackend(path).run(feeds)["y"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.array_equal(np.isnan(got), np.isnan(ref))


# ---- load- and run-time errors -------------------------------------------------------------------------------------


def _save(tmp_path, op, inputs, consts=None, n_out=1, **attrs):
    path = tmp_path / f"{op}.onnx"
    onnx.save(_one_node_model(op, inputs, consts or {}, n_out, **attrs), path)
    return path


def test_unsupported_op_fails_at_load_naming_op_and_node(tmp_path):
    path = _save(tmp_path, "Einsum", {"a": _x(2, 3), "b": _x(3, 4)}, equation="ij,jk->ik")
    with pytest.raises(UnsupportedModelError, match=r"node 'the_einsum' \(Einsum\).*operator 'Einsum' is not supported"):
        NumbaBackend(path)


@pytest.mark.parametrize(
    "op,inputs,attrs,message",
    [
        ("Cast", {"a": _x(2)}, {"to": TensorProto.STRING}, r"the_cast.*cast to ONNX type 8"),
        ("Gelu", {"a": _x(2)}, {"approximate": "erf"}, r"the_gelu.*approximate='erf'"),
        ("Softmax", {"a": _x(2)}, {"axis": 0, "foo": 1}, r"the_softmax.*attribute\(s\) \['foo'\]"),
        ("LayerNormalization", {"a": _x(2, 3), "s": _x(3)}, {"stash_type": 0}, r"the_layernormalization.*stash_type=0"),
    ],
)
def test_unsupported_attribute_fails_at_load(tmp_path, op, inputs, attrs, message):
    with pytest.raises(UnsupportedModelError, match=message):
        NumbaBackend(_save(tmp_path, op, inputs, **attrs))


def test_bad_inputs_name_the_tensor_or_node(tmp_path):
    path = _save(tmp_path, "GatherElements", {"a": _x(3, 4), "i": np.zeros((3, 2), np.int64)}, axis=1)
    backend = NumbaBackend(path)
    with pytest.raises(ValueError, match="input 'a' must be float32"):
        backend.run({"a": np.zeros((3, 4)), "i": np.zeros((3, 2), np.int64)})
    with pytest.raises(ValueError, match=r"input 'a' must have shape \[3, 4\]"):
        backend.run({"a": _x(3, 5), "i": np.zeros((3, 2), np.int64)})
    with pytest.raises(GraphRunError, match=r"the_gatherelements.*index 7 is out of range"):
        backend.run({"a": _x(3, 4), "i": np.full((3, 2), 7)})


# ---- every zoo model vs ONNX Runtime CPU ----------------------------------------------------------------------------


def _sizes(card) -> list[tuple[int, int]]:
    if get_family(card.family).elements:
        g = card.element_granularity
        return [(1, g), (3, 4 * g), (3, 5 * g)]  # 64, 256 and the non-bucket 320 for the zoo's granularity 64
    return [(1, 0), (7, 0), (1000, 0)]


def _release_with_ort(release):
    """(card, model.onnx path, one-thread ONNX Runtime CPU session) of a release: the reference for parity."""
    ort = pytest.importorskip("onnxruntime")
    card = load_card(release.path)
    path = release.path / card.onnx.file
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return card, path, ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module", params=RELEASES, ids=lambda r: f"{r.name}-{r.version}")
def release_backends(request):
    card, path, session = _release_with_ort(request.param)
    return card, NumbaBackend(path), session


def test_zoo_models_match_onnxruntime(release_backends):
    card, backend, session = release_backends
    spec = get_spec(card.provenance.model)
    mask_name = next((t.name for t in card.inputs if t.dtype == "bool"), None)
    tol = card.tolerance
    for batch, n in _sizes(card):
        inputs = {k: v.numpy() for k, v in spec.make_inputs(batch, n, seed=batch + n).items()}
        ref = dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs), strict=True))
        got = backend.run(inputs)
        assert set(got) == set(ref)
        for name, r in ref.items():
            g = got[name]
            assert g.shape == r.shape and g.dtype == r.dtype, (name, batch, n)
            if mask_name is not None and r.ndim >= 2 and r.shape[:2] == inputs[mask_name].shape:
                keep = inputs[mask_name]
                assert keep.any()
                g, r = g[keep], r[keep]
            np.testing.assert_allclose(g, r, atol=tol.atol, rtol=tol.rtol, err_msg=f"{card.name} {name} batch {batch} n {n}")


@pytest.mark.parametrize("name", ["mlpf-gnnlsh", "flashsim-jet"])
def test_session_end_to_end_matches_onnxruntime(name, make_events):
    pytest.importorskip("onnxruntime")
    sess = Session.load(name, backend="numba")
    ref = Session.load(name, backend="onnxruntime-cpu")
    assert sess.backend_name == "numba" and "numba" in available_backends()
    tol = sess.card.tolerance
    if sess.family.elements:
        events = make_events([3, 0, 40, 7], [5, 0, 90, 2], seed=2)
        got, want = sess.run(events, keep_empty=True, probabilities=True), ref.run(events, keep_empty=True, probabilities=True)
        assert ak.to_list(ak.num(got)) == [8, 0, 130, 9]
        for field in ("pt", "eta", "phi", "e", "cls_prob"):
            np.testing.assert_allclose(
                ak.to_numpy(ak.flatten(got[field])), ak.to_numpy(ak.flatten(want[field])), atol=10 * tol.atol, rtol=10 * tol.rtol
            )
    else:
        context = RNG(0).standard_normal((50, sess.card.inputs[0].shape[-1])).astype(F)
        got, want = sess.sample(context, seed=3), ref.sample(context, seed=3)
        np.testing.assert_allclose(got["efficiency"], want["efficiency"], atol=tol.atol, rtol=tol.rtol)
        np.testing.assert_allclose(got["sample"], want["sample"], atol=tol.atol, rtol=tol.rtol)


# ---- no onnxruntime at all -------------------------------------------------------------------------------------------

_NO_ORT = textwrap.dedent(
    """
    import json, sys
    import numpy as np

    class BlockOnnxRuntime:
        def find_spec(self, name, path=None, target=None):
            if name == "onnxruntime" or name.startswith("onnxruntime."):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockOnnxRuntime())
    import hepzoo.runtime as rt

    out = {"available": rt.available_backends()}
    flash = rt.Session.load("flashsim-jet")  # auto: the only backend left
    res = flash.sample(np.asarray(json.loads(sys.argv[1]), dtype=np.float32), seed=11)
    out["flash_backend"] = flash.backend_name
    out["efficiency"] = res["efficiency"].tolist()
    out["sample"] = res["sample"].tolist()
    mlpf = rt.Session.load("mlpf-transformer", backend="numba")
    x = np.asarray(json.loads(sys.argv[2]), dtype=np.float32)
    elems = mlpf.run_elements(x, np.array([0, 3, 3, len(x)]))
    out["regression"] = elems["regression"].tolist()
    out["ort_loaded"] = any(m == "onnxruntime" or m.startswith("onnxruntime.") for m in sys.modules)
    print(json.dumps(out))
    """
)


def test_runs_without_onnxruntime():
    rng = RNG(8)
    context = rng.standard_normal((5, 12)).astype(F)
    x = np.abs(rng.standard_normal((10, len(schema.ElementFeature)))).astype(F)
    x[:, schema.ElementFeature.TYPE] = rng.integers(1, 3, 10)
    proc = subprocess.run(
        [sys.executable, "-c", _NO_ORT, json.dumps(context.tolist()), json.dumps(x.tolist())],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["available"] == ["numba"] and out["flash_backend"] == "numba" and not out["ort_loaded"]
    # same numbers as the numba backend in this process (where onnxruntime may be installed)
    flash = Session.load("flashsim-jet", backend="numba").sample(context, seed=11)
    np.testing.assert_allclose(out["efficiency"], flash["efficiency"], rtol=1e-6)
    np.testing.assert_allclose(out["sample"], flash["sample"], rtol=1e-6)
    elems = Session.load("mlpf-transformer", backend="numba").run_elements(x, np.array([0, 3, 3, 10]))
    np.testing.assert_allclose(out["regression"], elems["regression"], rtol=1e-6)


def test_gather_elements_negative_axis(tmp_path):
    """(The ONNX reference evaluator mishandles a negative axis here, so NumPy is the reference.)"""
    data = _x(3, 4, 5)
    idx = RNG(2).integers(-5, 5, (3, 4, 7))
    got = NumbaBackend(_save(tmp_path, "GatherElements", {"a": data, "i": idx}, axis=-1)).run({"a": data, "i": idx})["y0"]
    np.testing.assert_array_equal(got, np.take_along_axis(data, idx % 5, axis=-1))


# ---- the compiled path: one generated function per row-wise graph (numba.compile) -----------------------------------


@pytest.mark.parametrize("names", ALL_STEPS, ids=lambda n: "-".join(n))
@pytest.mark.parametrize("ncol", [1, 7])
@pytest.mark.parametrize("in_place", [False, True])
def test_program_rows_matches_numpy(names, ncol, in_place):
    """The float32 program kernel of compiled plans (only the first ``m`` rows of the block are touched)."""
    rng = RNG(11)
    x = (rng.standard_normal((6, 7)) * 3).astype(np.float32)
    x[0, :3] = [0.0, 2.5, -3.5]
    codes, consts = _program(names, rng, ncol)
    out = x.copy() if in_place else np.full_like(x, 99.0)
    rowwise.program_rows(out if in_place else x, 5, codes, consts, out)
    ref = reference.run_program_numpy(x[:5], codes, consts)
    np.testing.assert_allclose(out[:5], ref, rtol=1e-5, atol=2e-6, equal_nan=True)
    np.testing.assert_array_equal(out[5], x[5] if in_place else 99.0)


def test_float32_activations_match_scipy():
    x = np.linspace(-9, 9, 20001).astype(np.float32)
    x64 = x.astype(np.float64)
    checks = {
        "GELU": 0.5 * x64 * (1 + erf(x64 / np.sqrt(2))),
        "TANH": np.tanh(x64),
        "ERF": erf(x64),
        "SIGMOID": 1 / (1 + np.exp(-x64)),
    }
    for name, ref in checks.items():
        got = x[None].copy()
        rowwise.program_rows(got, 1, np.array([rowwise.OP_CODES[name]]), np.zeros((1, 1), np.float32), got)
        np.testing.assert_allclose(got[0], ref, rtol=2e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("m", [1, 3, 4, 6, 9])
@pytest.mark.parametrize("k", [1, 12, 34])
def test_dense_into_kernels_match_numpy(m, k):
    rng = RNG(m * 100 + k)
    x = rng.standard_normal((m + 2, k)).astype(np.float32)
    for n in (1, 6, 64):
        w = rng.standard_normal((k, n)).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        ref = (x[:m].astype(np.float64) @ w + b).astype(np.float32)
        out = np.full((m + 1, n), 99.0, np.float32)
        rowwise.dense_into(x, m, w, b, out)
        np.testing.assert_allclose(out[:m], ref, rtol=1e-5, atol=1e-5)
        assert np.all(out[m] == 99.0)
        out_t = np.full((m + 1, n), 99.0, np.float32)
        rowwise.dense_t_into(x, m, np.ascontiguousarray(w.T), b, out_t)
        np.testing.assert_allclose(out_t[:m], ref, rtol=1e-5, atol=1e-5)
        assert np.all(out_t[m] == 99.0)


def test_copy_and_gather_cols():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = np.zeros((3, 6), np.float32)
    indexing.copy_cols(x, 2, 3, -2, 2, out, 1)  # columns 3, 1 into 1, 2 of the first two rows
    np.testing.assert_array_equal(out[:2, 1:3], x[:2, [3, 1]])
    assert not out[2].any() and not out[:, [0, 3, 4, 5]].any()
    g = np.zeros((3, 3), np.float32)
    indexing.gather_cols(x, 3, np.array([2, 0, 2]), g)
    np.testing.assert_array_equal(g, x[:, [2, 0, 2]])


def _row_graph(tmp_path):
    """A row-wise graph with every node kind the compiler handles outside fused matrix products."""
    rng = RNG(21)
    w1 = rng.standard_normal((6, 8)).astype(F)
    nodes = [
        helper.make_node("Sub", ["x", "mu"], ["xs"], name="sub"),
        helper.make_node("MatMul", ["xs", "w1"], ["h0"], name="mm"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias"),
        helper.make_node("Gelu", ["h1"], ["h"], name="gelu", approximate="tanh"),
        helper.make_node("Slice", ["h", "s0", "s1", "ax", "st"], ["hs"], name="slice"),  # 4 columns, step 2
        helper.make_node("Concat", ["hs", "z"], ["cat"], name="cat", axis=-1),
        helper.make_node("Gather", ["cat", "perm"], ["g"], name="gather", axis=1),
        helper.make_node("Mul", ["g", "z2"], ["gz"], name="mul_rows"),  # both operands per row
        helper.make_node("Where", ["cond", "gz", "g"], ["wh"], name="where"),
        helper.make_node("Round", ["wh"], ["r"], name="round"),
        helper.make_node("Gather", ["r", "one"], ["col"], name="gather_scalar", axis=-1),
        helper.make_node("Unsqueeze", ["col", "ax"], ["col2"], name="unsq"),
        helper.make_node("Squeeze", ["col2", "ax"], ["y1"], name="sq"),
        helper.make_node("Sigmoid", ["y1"], ["y2"], name="sig"),
        helper.make_node("Identity", ["r"], ["y0"], name="ident"),
    ]
    inits = {
        "mu": rng.standard_normal(6).astype(F),
        "w1": w1,
        "b1": rng.standard_normal(8).astype(F),
        "s0": np.array([1]),
        "s1": np.array([100]),
        "ax": np.array([-1]),
        "st": np.array([2]),
        "perm": np.array([3, -1, 0, 5, 1, 2]),
        "cond": np.array([True, False, True, True, False, False]),
        "one": np.array(2),
    }
    graph = helper.make_graph(
        nodes,
        "rows",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6]), helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 2]),
         helper.make_tensor_value_info("z2", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y0", TensorProto.FLOAT, ["batch", 6]), helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    path = tmp_path / "rows.onnx"
    onnx.save(model, path)
    return model, path


@pytest.mark.parametrize("batch", [1, 7, 64, 65, 200])
def test_compiled_row_graph_matches_reference(tmp_path, batch):
    model, path = _row_graph(tmp_path)
    compiled, interp = NumbaBackend(path), NumbaBackend(path, compile=False)
    assert compiled.compiled is not None and interp.compiled is None
    rng = RNG(batch)
    inputs = {"x": rng.standard_normal((batch, 6)).astype(F) * 3, "z": rng.standard_normal((batch, 2)).astype(F),
              "z2": rng.standard_normal((batch, 6)).astype(F)}  # fmt: skip
    ref = dict(zip(["y0", "y2"], ReferenceEvaluator(model).run(None, inputs), strict=True))
    got, want = compiled.run(inputs), interp.run(inputs)
    for name in ("y0", "y2"):
        assert got[name].shape == ref[name].shape and got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_compiled_source_names_model_and_versions(tmp_path):
    _, path = _row_graph(tmp_path)
    backend = NumbaBackend(path)
    src = backend.compiled.source_path.read_text()
    import hashlib

    import numba

    assert hashlib.sha256(path.read_bytes()).hexdigest() in src and f"numba {numba.__version__}" in src
    assert backend.compiled.source_path.name.startswith("hepzoo_plan_")


_BATCHES = [1, 7, 100, 1000]


@pytest.fixture(scope="module", params=RELEASES, ids=lambda r: f"{r.name}-{r.version}")
def release_both_paths(request):
    card, path, session = _release_with_ort(request.param)
    return card, NumbaBackend(path), NumbaBackend(path, compile=False), session


def test_compiled_path_matches_interpreter_and_onnxruntime(release_both_paths):
    """Flash-sim graphs are row-wise and must compile; MLPF graphs (rank 3, TopK, scatter, attention) must not,
    and keep the interpreter. Every release: compiled vs interpreted vs ONNX Runtime at batch 1, 7, 100, 1000
    (MLPF: events of 64 elements)."""
    card, compiled, interp, session = release_both_paths
    assert (compiled.compiled is not None) == (not get_family(card.family).elements), card.name
    spec = get_spec(card.provenance.model)
    tol = card.tolerance
    mask_name = next((t.name for t in card.inputs if t.dtype == "bool"), None)
    for batch in _BATCHES if not get_family(card.family).elements else [1, 7]:
        n = card.element_granularity if get_family(card.family).elements else 0
        inputs = {k: v.numpy() for k, v in spec.make_inputs(batch, n, seed=batch + 5).items()}
        ref = dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs), strict=True))
        got, want = compiled.run(inputs), interp.run(inputs)
        for name, r in ref.items():
            g, w = got[name], want[name]
            assert g.shape == r.shape == w.shape and g.dtype == r.dtype, (name, batch)
            if mask_name is not None and r.ndim >= 2 and r.shape[:2] == inputs[mask_name].shape:
                g, w, r = g[inputs[mask_name]], w[inputs[mask_name]], r[inputs[mask_name]]
            np.testing.assert_allclose(g, w, atol=tol.atol, rtol=tol.rtol, err_msg=f"{card.name} {name} batch {batch} vs interpreter")
            np.testing.assert_allclose(g, r, atol=tol.atol, rtol=tol.rtol, err_msg=f"{card.name} {name} batch {batch} vs onnxruntime")


_SECOND_PROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from hepzoo.runtime import NumbaBackend

    b = NumbaBackend(sys.argv[1])
    stats = b.compiled.fn.stats
    out = b.run({"context": np.asarray(json.loads(sys.argv[2]), np.float32), "noise": np.asarray(json.loads(sys.argv[3]), np.float32)})
    print(json.dumps({"source": str(b.compiled.source_path), "hits": sum(stats.cache_hits.values()),
                      "misses": sum(stats.cache_misses.values()), "sample": out["sample"].tolist()}))
    """
)


def test_compiled_source_cache_is_reused_by_a_second_process():
    """The generated source and Numba's machine code for it are found by a fresh process: no recompilation."""
    release = next(r for r in RELEASES if r.name == "flashsim-jet")
    path = release.path / "model.onnx"
    backend = NumbaBackend(path)  # compiles or loads into the cache folder the subprocess will use
    rng = RNG(9)
    context, noise = rng.standard_normal((3, 12)).astype(F), rng.standard_normal((3, 5)).astype(F)
    proc = subprocess.run(
        [sys.executable, "-c", _SECOND_PROCESS, str(path), json.dumps(context.tolist()), json.dumps(noise.tolist())],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["source"] == str(backend.compiled.source_path)
    assert out["hits"] >= 1 and out["misses"] == 0, out
    np.testing.assert_array_equal(out["sample"], backend.run({"context": context, "noise": noise})["sample"])
