"""The numba backend's float32 exp (``rowwise.exp_into32``) on every path that runs an ``Exp`` (interpreter
programs, fused matrix-product epilogues, compiled row blocks), and the heap settings of ``runtime.numba.heap``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hepzoo.runtime.numba import heap
from hepzoo.runtime.numba.kernels import rowwise

EXP = np.array([rowwise.OP_CODES["EXP"]], dtype=np.int64)
NO_CONST = np.zeros((1, 1), np.float32)
ULP = float(np.finfo(np.float32).eps)


def _rel_err(got: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Relative error against the float64 exp of the same float32 arguments."""
    with np.errstate(over="ignore", invalid="ignore"):
        ref = np.exp(x.astype(np.float64))
        return np.abs(got.astype(np.float64) - ref) / ref


def test_exp32_accuracy_over_the_float32_range():
    x = np.random.default_rng(7).uniform(-87.0, 88.7, 200_003).astype(np.float32)  # not a multiple of the block
    got = rowwise.apply_program(x, EXP, NO_CONST)
    assert got.dtype == np.float32
    assert np.max(_rel_err(got, x)) < 4 * ULP


def test_exp32_limits_and_special_values():
    x = np.array([-np.inf, -1e4, -88.0, -87.2, 0.0, 88.38, 88.72, 88.73, 1e4, np.inf, np.nan], np.float32)
    with np.errstate(over="ignore"):
        got = rowwise.apply_program(x, EXP, NO_CONST)
    assert got[0] == 0.0 and got[1] == 0.0 and got[2] == 0.0
    rel = _rel_err(got, x)
    assert rel[3] < 4 * ULP
    assert got[4] == 1.0
    # 88.38 needs 2^128 in the range reduction; 88.72 is the last argument below float32 overflow
    assert np.isfinite(got[5:7]).all() and (rel[5:7] < 4 * ULP).all()
    assert np.isposinf(got[7:10]).all()
    assert np.isnan(got[10])


def test_exp_float64_keeps_the_libm_exp():
    x = np.linspace(-700.0, 700.0, 5001)
    got = rowwise.apply_program(x, EXP, np.zeros((1, 1)))
    np.testing.assert_allclose(got, np.exp(x), rtol=1e-15)


@pytest.mark.parametrize("ncol", [1, 9])
def test_exp32_in_fused_products_and_row_blocks(ncol):
    rng = np.random.default_rng(ncol)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    w = rng.standard_normal((5, 9)).astype(np.float32)
    b = rng.standard_normal(9).astype(np.float32)
    codes = np.array([rowwise.OP_CODES["MUL"], rowwise.OP_CODES["EXP"]], np.int64)
    consts = np.stack([rng.uniform(0.5, 3.0, ncol), np.zeros(ncol)]).astype(np.float32)
    lin = x.astype(np.float64) @ w + b
    ref = np.exp(lin * consts[0].astype(np.float64))
    np.testing.assert_allclose(rowwise.dense(x, w, b, codes, consts), ref, rtol=2e-5)
    out = np.empty((8, 9), np.float32)
    y = (lin * consts[0]).astype(np.float32)
    rowwise.program_rows(y, 6, codes[1:], consts[1:], out)
    np.testing.assert_allclose(out[:6], np.exp(y.astype(np.float64)), rtol=4 * ULP)


def test_heap_settings_apply_once_and_can_be_refused(monkeypatch):
    monkeypatch.setenv("HEPZOO_NUMBA_MALLOPT", "0")
    assert heap._apply() is False
    monkeypatch.delenv("HEPZOO_NUMBA_MALLOPT")
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    assert heap._apply() is True  # glibc accepts both values (mallopt returns 0 for a refused one)


def test_backend_sets_the_heap_once_per_process():
    code = textwrap.dedent(
        """
        from hepzoo.runtime.numba import heap
        calls = []
        real = heap._apply
        heap._apply = lambda: calls.append(1) or real()
        from hepzoo.export.zoo import list_releases
        from hepzoo.runtime import NumbaBackend
        rel = next(r for r in list_releases() if (r.path / "model.onnx").is_file())
        NumbaBackend(rel.path / "model.onnx"); NumbaBackend(rel.path / "model.onnx")
        print(len(calls), heap.keep_freed_memory())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "True"]
