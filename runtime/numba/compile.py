"""Compile a planned graph into one generated Numba function: one dispatch per run instead of one per step.

The interpreter (:mod:`hepzoo.runtime.numba.backend`) pays Python and Numba dispatch costs (about 2 µs) for
each of its steps; the flash-sim graphs have ~95 steps and only ~17 features per row, so at batch size 1 that
overhead is nearly all of the run time. Their steps all work row by row on ``[batch, C]`` tensors (matrix
products with a constant weight, elementwise chains, Slice/Concat/Gather on the feature axis, Where, ...),
so the whole graph can be written as one loop over blocks of rows.

:func:`compile_plan` does that from the :class:`~hepzoo.runtime.numba.planner.Plan` (the ONNX graph after
constant folding and fusion, so the ONNX file stays the single source of truth): it generates Python source
for one ``@njit`` function that processes :data:`BLOCK_ROWS` rows at a time through preallocated block buffers
(reused by liveness, so a block's working set stays in cache) and calls the kernels of
:mod:`hepzoo.runtime.numba.kernels.rowwise` and :mod:`~hepzoo.runtime.numba.kernels.indexing` (inlined by
LLVM). Weights travel in one flat float32 array, so the function takes a handful of arguments whatever the
graph's size. A graph with any step outside this row-wise subset
(the MLPF graphs: rank-3 tensors, TopK, scatter, attention) is not compiled and keeps the interpreter.

The source is written to a cache folder (:func:`cache_dir`) under a name that hashes the source itself, which
embeds the model's sha256, this module's codegen version, the numba version and a hash of the kernel
sources (:func:`kernels_sha256`: Numba's cache of the generated function holds the kernels' machine code but
only checks the generated file, so a kernel edit must change that file); it is imported from there with
Numba's ``cache=True``, so a second process loads the machine code instead of compiling it (~1 s instead of
~10-20 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hepzoo.datasets.atomic import write_text_atomic

from . import kernels
from .ir import DTYPES, Node
from .kernels.rowwise import NARROW, OP_CODES
from .operators.common import as_int_list, onnx_slice

if TYPE_CHECKING:
    from .planner import Plan

__all__ = ["BLOCK_ROWS", "CompiledPlan", "NotCompilable", "cache_dir", "compile_plan", "generate_source", "kernels_sha256"]

log = logging.getLogger(__name__)

CODEGEN_VERSION = 2  # 2: the kernels are imported from hepzoo.runtime.numba.kernels
BLOCK_ROWS = 64  # rows per pass through the graph: 64 x 64 float32 buffers (16 KiB) stay in L1/L2
_F32 = np.dtype(np.float32)
_LOCK = threading.Lock()
_MODULES: dict[str, Any] = {}


class NotCompilable(ValueError):
    """The plan has a step outside the row-wise subset the compiler handles (the interpreter runs it)."""


def cache_dir() -> Path:
    """Where generated sources and Numba's machine code go: ``$HEPZOO_NUMBA_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/hepzoo/numba-plans`` (``~/.cache/...``)."""
    env = os.environ.get("HEPZOO_NUMBA_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hepzoo" / "numba-plans"


def kernels_sha256() -> str:
    """Hash of every kernel module's source (:mod:`hepzoo.runtime.numba.kernels`), 16 hex digits."""
    h = hashlib.sha256()
    for path in sorted(Path(kernels.__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class _Row:
    """A per-row tensor in the generated code: ``expr[i, j]`` for row ``i`` of the block, column ``j``."""

    expr: str
    width: int
    rank: int  # 1: [batch] (stored as one column), 2: [batch, width]
    buf: str | None  # the block buffer holding it (None for a graph input view)


_NODE_BINARY = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/"}
_NODE_UNARY = {
    "Neg": "NEG", "Exp": "EXP", "Log": "LOG", "Tanh": "TANH", "Sigmoid": "SIGMOID", "Abs": "ABS",
    "Asinh": "ASINH", "Round": "ROUND", "Relu": "RELU", "Sqrt": "SQRT", "Erf": "ERF",
}  # fmt: skip


class _Gen:
    """Source generator state: constants, block buffers (reused by liveness) and the lines of the body."""

    def __init__(self) -> None:
        self.pre: list[str] = []  # before the block loop (constant views, buffers)
        self.body: list[str] = []  # inside the block loop
        self.kf: list[np.ndarray] = []
        self.kf_size = 0
        self.kb: list[np.ndarray] = []
        self.kb_size = 0
        self.ki: list[np.ndarray] = []
        self.ki_size = 0
        self.n_const = 0
        self.free: dict[int, list[str]] = {}
        self.buf_width: dict[str, int] = {}
        self.buf_users: dict[str, int] = {}

    def const(self, array: np.ndarray) -> str:
        """A name for ``array`` (float32 or bool) in the generated code: a view into the flat constant arrays."""
        a = np.ascontiguousarray(array)
        name = f"k{self.n_const}"
        self.n_const += 1
        if a.dtype == np.bool_:
            flat, off = "kb", self.kb_size
            self.kb.append(a.reshape(-1))
            self.kb_size += a.size
        elif a.dtype.kind in "iu":
            a = a.astype(np.int64)
            flat, off = "ki", self.ki_size
            self.ki.append(a.reshape(-1))
            self.ki_size += a.size
        else:
            a = a.astype(np.float32)
            flat, off = "kf", self.kf_size
            self.kf.append(a.reshape(-1))
            self.kf_size += a.size
        view = f"{flat}[{off}:{off + a.size}]"
        if a.ndim != 1:
            view += f".reshape({tuple(a.shape) if a.ndim else (1,)})"
        self.pre.append(f"    {name} = {view}")
        return name

    def buffer(self, width: int) -> str:
        free = self.free.get(width)
        if free:
            name = free.pop()
        else:
            name = f"b{len(self.buf_width)}"
            self.buf_width[name] = width
            self.pre.append(f"    {name} = np.empty((br, {width}), np.float32)")
        self.buf_users[name] = 0
        return name

    def release(self, buf: str) -> None:
        self.buf_users[buf] -= 1
        if self.buf_users[buf] == 0:
            self.free.setdefault(self.buf_width[buf], []).append(buf)

    def loop(self, width: int, lines: list[str]) -> None:
        """``lines`` (using ``i`` and ``j``) inside a loop over the block's rows and ``width`` columns."""
        self.body.append("        for i in range(nr):")
        self.body.append(f"            for j in range({width}):")
        self.body.extend("                " + line for line in lines)


def _const_expr(gen: _Gen, c: np.ndarray, rank: int, width: int, what: str) -> str:
    """Expression (in ``i``, ``j``) for a constant that broadcasts onto a row value without widening it."""
    c = np.asarray(c)
    if c.ndim > rank or any(d != 1 for d in c.shape[:-1]) or (c.ndim and c.shape[-1] not in (1, width)):
        raise NotCompilable(f"{what}: a constant of shape {c.shape} does not broadcast onto [batch, {width}]")
    if c.ndim and c.shape[-1] == width and width > 1:
        return f"{gen.const(c.reshape(-1))}[j]"
    return f"{gen.const(c.reshape(1))}[0]"


def _program_call(gen: _Gen, codes: list[str], consts: np.ndarray, src: str, dst: str, width: int, what: str) -> None:
    """``dst = program(src)`` through :func:`~hepzoo.runtime.numba.kernels.rowwise.program_rows` (one compiled
    kernel for every program: generating each chain inline made LLVM take minutes on the flash-sim graphs)."""
    if consts.shape[1] > 1 and consts.shape[1] != width:
        raise NotCompilable(f"{what}: constants of width {consts.shape[1]} on a row of width {width}")
    if any(c not in OP_CODES for c in codes):
        raise NotCompilable(f"{what}: elementwise ops {codes}")
    k_codes = gen.const(np.array([OP_CODES[c] for c in codes], np.int64))
    k_consts = gen.const(np.atleast_2d(consts.astype(np.float32)))
    gen.body.append(f"        program_rows({src}, nr, {k_codes}, {k_consts}, {dst})")


def _onnx_cols(starts: list[int], ends: list[int], steps: list[int], width: int, what: str) -> range:
    s = onnx_slice(starts[0], ends[0], steps[0], width, Node("Slice", what, [], [], {}))
    return range(width)[s]


def generate_source(plan: Plan, model_sha256: str) -> tuple[str, tuple[np.ndarray, ...], list[tuple[str, int, int]]]:
    """(source, flat float32 / bool / int64 constants, outputs as (name, rank, width)) for ``plan``.

    Raises :class:`NotCompilable` naming the first step outside the row-wise subset.
    """
    gen = _Gen()
    rows: dict[int, _Row] = {}
    consts = {s: v for s, v in enumerate(plan.template) if v is not None}
    head = []
    for k, (name, slot, dtype, shape) in enumerate(plan.inputs):
        if dtype != _F32 or shape is None or len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] is None):
            raise NotCompilable(f"graph input {name!r}: {dtype}{list(shape or [])} is not float32 [batch] or [batch, C]")
        width = shape[1] if len(shape) == 2 else 1
        rows[slot] = _Row(f"x{k}v", width, len(shape), None)
        head.append(f"        x{k}v = x{k}[r0:r0 + nr]")
    gen.body.extend(head)
    keep = {slot for _, slot, _ in plan.outputs}
    last_use: dict[int, int] = {}
    for k, (_, ins, _, _, _) in enumerate(plan.steps):
        for s in ins:
            last_use[s] = k

    def row(slot: int, what: str) -> _Row:
        if slot not in rows:
            raise NotCompilable(f"{what}: input is not a per-row tensor")
        return rows[slot]

    def new_row(width: int, rank: int) -> _Row:
        buf = gen.buffer(width)
        gen.buf_users[buf] += 1
        return _Row(buf, width, rank, buf)

    def alias(src: _Row, width: int, rank: int) -> _Row:
        if src.buf is not None:
            gen.buf_users[src.buf] += 1
        return _Row(src.expr, width, rank, src.buf)

    for k, ((_, ins, outs, _, where), spec) in enumerate(zip(plan.steps, plan.specs, strict=True)):
        gen.body.append(f"        # {where}")
        kind = spec[0]
        if kind == "dense":
            _, w, bias, codes, prog_consts, w_vector = spec
            x = row(ins[0], where)
            if w.dtype != _F32 or x.rank != 2 or x.width != w.shape[0]:
                raise NotCompilable(f"{where}: weight {w.dtype}{list(w.shape)} on a row of rank {x.rank}, width {x.width}")
            n = w.shape[1]
            out = new_row(n, 1 if w_vector else 2)
            if n < NARROW:
                gen.body.append(f"        dense_t_into({x.expr}, nr, {gen.const(w.T)}, {gen.const(bias)}, {out.expr})")
            else:
                gen.body.append(f"        dense_into({x.expr}, nr, {gen.const(w)}, {gen.const(bias)}, {out.expr})")
            if codes:
                _program_call(gen, codes, prog_consts, out.expr, out.expr, n, where)
            results = [out]
        elif kind == "program":
            _, codes, prog_consts = spec
            x = row(ins[0], where)
            out = new_row(x.width, x.rank)
            _program_call(gen, codes, prog_consts, x.expr, out.expr, x.width, where)
            results = [out]
        elif kind == "attention":
            raise NotCompilable(f"{where}: attention mixes rows (not a row-wise step)")
        else:
            results = [_node(gen, spec[1], spec[2], [rows.get(s) for s in ins], where, new_row, alias)]
        for s, r in zip(outs, results, strict=True):
            rows[s] = r
        for s in dict.fromkeys(ins):
            if last_use.get(s) == k and s not in keep and s in rows and rows[s].buf is not None and s not in consts:
                gen.release(rows[s].buf)
    outputs = []
    for k, (name, slot, _) in enumerate(plan.outputs):
        if slot not in rows:
            raise NotCompilable(f"graph output {name!r} is not a per-row tensor")
        r = rows[slot]
        gen.loop(r.width, [f"y{k}[r0 + i, j] = {r.expr}[i, j]"])
        outputs.append((name, r.rank, r.width))

    import numba

    kernels_hash = kernels_sha256()
    n_in, n_out = len(plan.inputs), len(plan.outputs)
    args = [f"x{k}" for k in range(n_in)] + [f"y{k}" for k in range(n_out)]
    sig = "void(int64, " + ", ".join(["float32[:, ::1]"] * (n_in + n_out)) + ", float32[::1], boolean[::1], int64[::1])"
    src = [
        f"# Generated by hepzoo.runtime.numba.compile (codegen {CODEGEN_VERSION}) from a model with sha256",
        f"# {model_sha256}; numba {numba.__version__}, kernels {kernels_hash}. Do not edit: regenerated on change.",
        "import math",
        "",
        "import numpy as np",
        "from numba import njit",
        "",
        "from hepzoo.runtime.numba.kernels.indexing import copy_cols, gather_cols",
        "from hepzoo.runtime.numba.kernels.rowwise import dense_into, dense_t_into, program_rows",
        "",
        "",
        f'@njit("{sig}", cache=True, nogil=True, boundscheck=False, error_model="numpy",',
        '      fastmath={"reassoc", "contract", "nsz", "arcp"})',
        f"def run(n, {', '.join(args)}, kf, kb, ki):",
        f"    br = min({BLOCK_ROWS}, max(n, 1))",
        *gen.pre,
        f"    for r0 in range(0, n, {BLOCK_ROWS}):",
        f"        nr = min({BLOCK_ROWS}, n - r0)",
        *gen.body,
        "",
    ]
    kf = np.concatenate(gen.kf).astype(np.float32) if gen.kf else np.zeros(0, np.float32)
    kb = np.concatenate(gen.kb).astype(np.bool_) if gen.kb else np.zeros(0, np.bool_)
    ki = np.concatenate(gen.ki).astype(np.int64) if gen.ki else np.zeros(0, np.int64)
    return "\n".join(src), (kf, kb, ki), outputs


def _node(gen: _Gen, node: Node, const: list, ins: list[_Row | None], where: str, new_row, alias) -> _Row:
    """Code for one uncompiled-by-fusion ONNX node on row values; raises NotCompilable outside the subset."""
    op = node.op
    x = ins[0] if ins else None
    if op in ("Identity", "Squeeze", "Unsqueeze", "Reshape", "Cast") and x is None:
        raise NotCompilable(f"{where}: input is not a per-row tensor")
    if op == "Identity":
        return alias(x, x.width, x.rank)
    if op == "Cast":
        if DTYPES.get(node.attrs.get("to")) != _F32:
            raise NotCompilable(f"{where}: cast to a type other than float32")
        return alias(x, x.width, x.rank)
    if op == "Squeeze":
        axes = as_int_list(const[1]) if len(const) > 1 and const[1] is not None else None
        if len(node.inputs) > 1 and node.inputs[1] and axes is None:
            raise NotCompilable(f"{where}: runtime axes")
        if x.rank != 2 or x.width != 1 or (axes is not None and [a % 2 for a in axes] != [1]):
            raise NotCompilable(f"{where}: only squeezing the unit feature axis of [batch, 1] is compiled")
        return alias(x, 1, 1)
    if op == "Unsqueeze":
        axes = as_int_list(const[1]) if len(const) > 1 and const[1] is not None else None
        if x.rank != 1 or axes is None or [a % 2 for a in axes] != [1]:
            raise NotCompilable(f"{where}: only [batch] -> [batch, 1] is compiled")
        return alias(x, 1, 2)
    if op == "Reshape":
        target = as_int_list(const[1]) if const[1] is not None else None
        if target is None or node.attrs.get("allowzero", 0):
            raise NotCompilable(f"{where}: runtime shape")
        if len(target) == 2 and target[0] in (0, -1) and target[1] in (-1, x.width) and x.rank == 2:
            return alias(x, x.width, 2)
        if len(target) == 1 and target[0] == -1 and x.width == 1:
            return alias(x, 1, 1)
        raise NotCompilable(f"{where}: reshape to {target}")
    if op in _NODE_UNARY or op == "Gelu":
        if x is None or node.attrs.get("approximate", "none") not in ("none", "tanh"):
            raise NotCompilable(f"{where}: unsupported input or attribute")
        code = _NODE_UNARY.get(op) or ("GELU" if node.attrs.get("approximate", "none") == "none" else "GELU_TANH")
        out = new_row(x.width, x.rank)
        _program_call(gen, [code], np.zeros((1, 1)), x.expr, out.expr, x.width, where)
        return out
    if op == "Slice":
        params = const[1:]
        if x is None or x.rank != 2 or any(p is None for p, name in zip(params, node.inputs[1:], strict=False) if name):
            raise NotCompilable(f"{where}: only constant slices of [batch, C] are compiled")
        starts, ends = as_int_list(params[0]), as_int_list(params[1])
        axes = as_int_list(params[2]) if len(params) > 2 and params[2] is not None else list(range(len(starts)))
        steps = as_int_list(params[3]) if len(params) > 3 and params[3] is not None else [1] * len(starts)
        if len(starts) != 1 or [a % 2 for a in axes] != [1] or steps[0] == 0:
            raise NotCompilable(f"{where}: only slices of the feature axis are compiled")
        cols = _onnx_cols(starts, ends, steps, x.width, node.name)
        out = new_row(max(len(cols), 1), 2)
        gen.body.append(f"        copy_cols({x.expr}, nr, {cols.start}, {cols.step}, {len(cols)}, {out.expr}, 0)")
        return out
    if op == "Gather":
        idx = const[1]
        axis = node.attrs.get("axis", 0)
        if x is None or x.rank != 2 or idx is None or axis % 2 != 1 or np.asarray(idx).ndim > 1:
            raise NotCompilable(f"{where}: only constant gathers on the feature axis of [batch, C] are compiled")
        idx = np.asarray(idx).astype(np.int64)
        if idx.size and (idx.min() < -x.width or idx.max() >= x.width):
            raise NotCompilable(f"{where}: an index is out of range")
        flat = [int(v) % x.width for v in idx.reshape(-1)]
        out = new_row(max(len(flat), 1), 2 if idx.ndim else 1)
        gen.body.append(f"        gather_cols({x.expr}, nr, {gen.const(np.array(flat, np.int64))}, {out.expr})")
        return out
    if op == "Concat":
        rank = ins[0].rank if ins and ins[0] is not None else 0
        if any(r is None or r.rank != 2 for r in ins) or node.attrs.get("axis") % 2 != 1:
            raise NotCompilable(f"{where}: only concatenations of [batch, C] rows on the feature axis are compiled")
        out = new_row(sum(r.width for r in ins), rank)
        off = 0
        for r in ins:
            gen.body.append(f"        copy_cols({r.expr}, nr, 0, 1, {r.width}, {out.expr}, {off})")
            off += r.width
        return out
    if op in _NODE_BINARY or op == "Where":
        dyn = [r for r in ins if r is not None]
        if not dyn or any(r.rank != dyn[0].rank or r.width != dyn[0].width for r in dyn):
            raise NotCompilable(f"{where}: operands of different per-row shapes")
        if op == "Where" and ins[0] is not None:
            raise NotCompilable(f"{where}: a runtime condition")
        width, rank = max(r.width for r in dyn), dyn[0].rank
        exprs = []
        for r, c in zip(ins, const, strict=True):
            if r is not None:
                exprs.append(f"{r.expr}[i, j]")
            elif c is None:
                raise NotCompilable(f"{where}: an input is neither constant nor per-row")
            elif c.dtype not in (_F32, np.dtype(np.bool_)):
                raise NotCompilable(f"{where}: a {c.dtype} constant")
            else:
                exprs.append(_const_expr(gen, c, rank, width, where))
        out = new_row(width, rank)
        if op == "Where":
            if const[0].dtype != np.bool_:
                raise NotCompilable(f"{where}: condition of dtype {const[0].dtype}")
            expr = f"{exprs[1]} if {exprs[0]} else {exprs[2]}"
        else:
            expr = f"{exprs[0]} {_NODE_BINARY[op]} {exprs[1]}"
        gen.loop(width, [f"{out.expr}[i, j] = {expr}"])
        return out
    raise NotCompilable(f"{where}: operator {op} is not in the compiled subset")


@dataclass
class CompiledPlan:
    """A plan compiled into one Numba function (see the module docstring); ``run`` takes checked inputs."""

    fn: Any
    consts: tuple[np.ndarray, ...]  # the flat float32, bool and int64 constants
    input_names: list[str]
    outputs: list[tuple[str, int, int]]  # name, rank, width
    source_path: Path

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        xs = [np.ascontiguousarray(inputs[name]) for name in self.input_names]
        n = xs[0].shape[0] if xs else 0
        for name, x in zip(self.input_names, xs, strict=True):
            if x.shape[0] != n:
                raise ValueError(f"input {name!r} has {x.shape[0]} rows, {self.input_names[0]!r} has {n}")
        xs = [x.reshape(n, -1) if x.ndim == 1 else x for x in xs]
        ys = [np.empty((n, width), np.float32) for _, _, width in self.outputs]
        self.fn(n, *xs, *ys, *self.consts)
        return {name: (y.reshape(n) if rank == 1 else y) for (name, rank, _), y in zip(self.outputs, ys, strict=True)}


def _import_source(src: str) -> Any:
    """Write ``src`` to the cache folder (atomically, once) and import it; the module's name hashes ``src``."""
    key = "hepzoo_plan_" + hashlib.sha256(src.encode()).hexdigest()[:24]
    with _LOCK:
        if key in _MODULES:
            return _MODULES[key]
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{key}.py"
        if not path.is_file() or path.read_text() != src:
            write_text_atomic(path, src)
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(key, None)
            raise
        _MODULES[key] = module
        return module


def compile_plan(plan: Plan, onnx_path: str | Path) -> CompiledPlan | None:
    """The plan as one compiled function, or None (logged) when a step is outside the compiled subset."""
    onnx_path = Path(onnx_path)
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    try:
        src, consts, outputs = generate_source(plan, sha)
    except NotCompilable as err:
        log.info("%s: not compiled into one function (%s); interpreting its plan", onnx_path, err)
        return None
    module = _import_source(src)
    return CompiledPlan(module.run, consts, [name for name, *_ in plan.inputs], outputs, Path(module.__file__))
