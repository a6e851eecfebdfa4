"""Planning: from ``model.onnx`` to a :class:`Plan`, once at load and independently of input shapes.

1. every node is checked against the supported operator subset (opset <= 20, default domain, plus the
   contrib operators of :data:`~hepzoo.runtime.numba.ir.CONTRIB_DOMAINS` that have a builder) and the
   attribute values the operators implement (:data:`~hepzoo.runtime.numba.operators.BUILDERS`); anything else
   fails here, with an error naming op and node;
2. nodes whose inputs are all constants (initializer-only subgraphs) are evaluated once (constant folding);
3. ``MatMul [+ Add mask] -> Softmax -> MatMul`` becomes one fused attention step; ``MatMul``/``Gemm`` with a
   constant weight absorb a following bias ``Add`` and any chain of elementwise operators (activation,
   scaling, ...) into one dense step, and other chains of elementwise operators on one tensor become one
   program step (kernels in :mod:`hepzoo.runtime.numba.kernels.rowwise`);
4. the remaining nodes become a flat list of steps over numbered value slots (no name lookups when running),
   each slot released after its last use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .ir import FLOATS, GraphRunError, Node, UnsupportedModelError, ValueInfo, load_model, read_constants, read_nodes, value_infos
from .kernels.rowwise import OP_CODES
from .operators import BUILDERS
from .operators.elementwise import BINARY_CODES, UNARY_CODES, program_fn
from .operators.matmul import attention_fn, dense_fn

__all__ = ["Plan", "describe_plan", "plan_graph"]

# operators whose output may be a view of their input (NumPy reshape/slicing/broadcast)
_VIEW_OPS = {"Identity", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Expand", "Softmax", "TopK", "ArgMax", "Gather"}


@dataclass
class Plan:
    """A planned graph: what :func:`plan_graph` returns and :class:`~hepzoo.runtime.numba.backend.NumbaBackend` runs."""

    inputs: list[tuple[str, int, np.dtype, tuple[int | None, ...] | None]]  # name, slot, dtype, shape
    outputs: list[tuple[str, int, bool]]  # name, slot, copy (may be a view of a constant or an input)
    template: list[Any]  # initial slot values: constants, None elsewhere
    steps: list[tuple[Callable, tuple[int, ...], tuple[int, ...], tuple[int, ...], str]]  # fn, ins, outs, frees, where
    # per step, what it computes, for the plan compiler (:mod:`hepzoo.runtime.numba.compile`):
    # ("dense", W [K, N], bias [N], op code names, consts [P, C], W was a vector) | ("program", op code names,
    # consts [P, C]) | ("node", Node, constant inputs)
    specs: list[tuple] = field(default_factory=list)
    n_nodes: int = 0  # nodes in the ONNX graph
    n_folded: int = 0  # evaluated at load (constant folding)
    fused: dict[str, int] = field(default_factory=dict)  # what fusion did: kind -> count


def _wrap(fn: Callable, where: str) -> Callable:
    """Give kernel failures (shape mismatches, bad dtypes) the name of the node at fault."""

    def run(*args):
        try:
            return fn(*args)
        except GraphRunError:
            raise
        except (ValueError, TypeError, IndexError) as err:
            raise GraphRunError(f"{where}: {err}") from err

    return run


def _program_step(node: Node, const: list, x_info: ValueInfo) -> tuple[str, np.ndarray] | None:
    """(op code, constant row) if ``node`` is an elementwise step on one float tensor, else None."""
    if x_info.dtype not in FLOATS:
        return None
    if node.op in UNARY_CODES and not node.attrs:
        return UNARY_CODES[node.op], np.zeros(1)
    if node.op == "Gelu":
        approx = node.attrs.get("approximate", "none")
        return ("GELU" if approx == "none" else "GELU_TANH"), np.zeros(1)
    if node.op in BINARY_CODES and len(node.inputs) == 2 and not node.attrs:
        dyn = [i for i, c in enumerate(const) if c is None]
        if len(dyn) != 1:
            return None
        c = const[1 - dyn[0]]
        row = _const_row(c, x_info)
        if row is None:
            return None
        return BINARY_CODES[node.op][dyn[0]], row
    if node.op == "Clip" and const[0] is None and len(node.inputs) == 2 and const[1] is not None and const[1].size == 1:
        return "MAX", np.asarray(const[1]).reshape(1)
    return None


def _const_row(c: np.ndarray, x_info: ValueInfo) -> np.ndarray | None:
    """A constant that broadcasts along the last axis of x only (a scalar or ``[C]``), as a row, else None."""
    if c.dtype not in FLOATS or x_info.shape is None or c.ndim > len(x_info.shape):
        return None
    if c.size == 1:
        return c.reshape(1)
    if any(d != 1 for d in c.shape[:-1]) or x_info.shape[-1] != c.shape[-1]:
        return None
    return c.reshape(-1)


def _rows_to_consts(rows: list[np.ndarray]) -> np.ndarray:
    width = max([r.size for r in rows] + [1])
    return np.stack([np.broadcast_to(r, (width,)) for r in rows]).astype(np.float64)


def plan_graph(onnx_path: str | Path) -> Plan:
    """Check, constant-fold and fuse the graph of ``onnx_path`` into a :class:`Plan` (see module docstring)."""
    onnx_path = Path(onnx_path)
    model = load_model(onnx_path)
    graph = model.graph
    infos = value_infos(graph)
    consts = read_constants(graph, onnx_path)
    nodes = read_nodes(graph)
    graph_inputs = [vi for vi in graph.input if vi.name not in consts]
    output_names = [o.name for o in graph.output]

    # 1. every node must be supported, with the attribute values it carries
    fns: list[Callable] = []
    for node in nodes:
        builder = BUILDERS.get(node.op)
        if builder is None:
            raise UnsupportedModelError(
                f"{onnx_path}: {node.where()}: operator {node.op!r} is not supported by the numba backend "
                f"(supported: {sorted(BUILDERS)})"
            )
        const = [consts.get(i) for i in node.inputs]
        try:
            fns.append(builder(node, const, [infos.get(i, ValueInfo()) for i in node.inputs]))
        except UnsupportedModelError as err:
            raise UnsupportedModelError(f"{onnx_path}: {err}") from None

    # 2. constant folding: nodes whose inputs are all constants (or absent)
    live: list[tuple[Node, Callable]] = []
    n_folded = 0
    for node, fn in zip(nodes, fns, strict=True):
        if all(i == "" or i in consts for i in node.inputs) and not any(o in output_names for o in node.outputs):
            result = fn(*[consts[i] if i else None for i in node.inputs])
            results = result if isinstance(result, tuple) else (result,)
            for name, value in zip(node.outputs, results, strict=False):
                if name:
                    consts[name] = np.ascontiguousarray(value)
            n_folded += 1
        else:
            live.append((node, fn))

    # 3. fusion: MatMul/Gemm(x, constant W) [+ bias] [+ elementwise chain]; other elementwise chains
    consumers: dict[str, int] = {}
    for node, _ in live:
        for i in node.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    for name in output_names:
        consumers[name] = consumers.get(name, 0) + 1

    def sole_next(pos: int, value: str) -> int | None:
        """Index in ``live`` of the only consumer of ``value`` if it is the next node, else None."""
        if consumers.get(value, 0) != 1 or pos + 1 >= len(live):
            return None
        nxt = live[pos + 1][0]
        return pos + 1 if value in nxt.inputs else None

    def chain_from(pos: int, value: str, x_info: ValueInfo) -> tuple[list[str], list[np.ndarray], int, str]:
        """Extend an elementwise chain on ``value`` over the following single-consumer nodes."""
        codes, rows = [], []
        while True:
            j = sole_next(pos, value)
            if j is None:
                break
            node = live[j][0]
            if len(node.outputs) != 1:
                break
            const = [consts.get(i) for i in node.inputs]
            dyn = [i for i, c in zip(node.inputs, const, strict=True) if c is None and i]
            if dyn != [value]:
                break
            step = _program_step(node, const, x_info)
            if step is None:
                break
            codes.append(step[0])
            rows.append(step[1])
            pos, value = j, node.outputs[0]
        return codes, rows, pos, value

    steps_src: list[tuple[Callable, list[str], list[str], str, tuple]] = []
    fused: dict[str, int] = {}
    pos = 0
    while pos < len(live):
        node, fn = live[pos]
        attn = _attention_candidate(live, pos, consts, infos, sole_next)
        if attn is not None:
            last, ins = attn
            group = [live[i] for i in range(pos, last + 1)]
            names = " + ".join(n.name for n, _ in group)
            where = f"fused {names} (attention)"
            steps_src.append((attention_fn(group, where), ins, [group[-1][0].outputs[0]], where, ("attention", names)))
            fused["attention"] = fused.get("attention", 0) + 1
            fused["nodes_into_attention"] = fused.get("nodes_into_attention", 0) + len(group)
            pos = last + 1
            continue
        dense = _dense_candidate(node, consts)
        if dense is not None:
            x_name, w, bias, w_vector = dense
            out_info = infos.get(node.outputs[0], ValueInfo(w.dtype, None))
            out_info = ValueInfo(w.dtype, out_info.shape)
            last, value = pos, node.outputs[0]
            codes, rows = [], []
            j = sole_next(pos, value)
            if j is not None and not w_vector:  # bias Add folded into the kernel's accumulator start
                nxt = live[j][0]
                bias_in = [i for i in nxt.inputs if i != value]
                if nxt.op == "Add" and len(bias_in) == 1 and bias_in[0] in consts and nxt.inputs.count(value) == 1:
                    b = consts[bias_in[0]]
                    if b.dtype == w.dtype and b.ndim <= 1 and b.size in (1, w.shape[1]):
                        bias = bias + np.broadcast_to(b, bias.shape).astype(w.dtype)
                        last, value = j, nxt.outputs[0]
            if not w_vector:
                codes, rows, last, value = chain_from(last, value, out_info)
            names = " + ".join(live[i][0].name for i in range(pos, last + 1))
            where = f"fused {names} (MatMul+bias+{len(codes)} elementwise)"
            consts_a = _rows_to_consts(rows) if rows else np.zeros((0, 1))
            prog_codes = [OP_CODES[c] for c in codes]
            spec = ("dense", w, bias, list(codes), consts_a, w_vector)
            steps_src.append((dense_fn(w, bias, prog_codes, consts_a, w_vector), [x_name], [value], where, spec))
            fused["dense"] = fused.get("dense", 0) + 1
            fused["nodes_into_dense"] = fused.get("nodes_into_dense", 0) + (last - pos + 1)
            pos = last + 1
            continue
        if len(node.outputs) == 1:
            const = [consts.get(i) for i in node.inputs]
            dyn = [i for i, c in zip(node.inputs, const, strict=True) if c is None and i]
            x_info = infos.get(dyn[0], ValueInfo()) if len(dyn) == 1 else ValueInfo()
            first = _program_step(node, const, x_info) if len(dyn) == 1 else None
            if first is not None:
                codes, rows, last, value = chain_from(pos, node.outputs[0], x_info)
                codes, rows = [first[0], *codes], [first[1], *rows]
                if last > pos:
                    fused["elementwise_chains"] = fused.get("elementwise_chains", 0) + 1
                    fused["nodes_into_chains"] = fused.get("nodes_into_chains", 0) + (last - pos + 1)
                names = " + ".join(live[i][0].name for i in range(pos, last + 1))
                consts_a = _rows_to_consts(rows)
                fn = program_fn([OP_CODES[c] for c in codes], consts_a)
                steps_src.append((fn, [dyn[0]], [value], f"elementwise {names}", ("program", list(codes), consts_a)))
                pos = last + 1
                continue
        steps_src.append((fn, node.inputs, node.outputs, node.where(), ("node", node, [consts.get(i) for i in node.inputs])))
        pos += 1

    # 4. slots, liveness
    slot_of: dict[str, int] = {"": 0}
    template: list[Any] = [None]

    def slot(name: str) -> int:
        if name not in slot_of:
            slot_of[name] = len(template)
            template.append(consts.get(name))
        return slot_of[name]

    inputs = []
    for vi in graph_inputs:
        info = infos.get(vi.name, ValueInfo())
        if info.dtype is None:
            raise UnsupportedModelError(f"{onnx_path}: graph input {vi.name!r} has an unsupported element type")
        inputs.append((vi.name, slot(vi.name), info.dtype, info.shape))
    for name in output_names:
        if name not in consts and not any(name in s[2] for s in steps_src) and name not in [i[0] for i in inputs]:
            raise UnsupportedModelError(f"{onnx_path}: graph output {name!r} is produced by no node")
    last_use: dict[str, int] = {}
    for k, (_, ins, _, _, _) in enumerate(steps_src):
        for name in ins:
            if name and name not in consts:
                last_use[name] = k
    keep = set(output_names)
    steps = []
    for k, (fn, ins, outs, where, _) in enumerate(steps_src):
        frees = tuple(slot(n) for n in dict.fromkeys(ins) if n and last_use.get(n) == k and n not in keep)
        steps.append((_wrap(fn, f"{onnx_path.name}: {where}"), tuple(slot(i) for i in ins), tuple(slot(o) if o else 0 for o in outs), frees, where))
    # outputs must be fresh arrays the caller owns: copy those that may be a view of a constant or an input
    producer = {o: ins for _, ins, outs, _, _ in steps_src for o in outs}
    view_ops = {n.outputs[0] for n in nodes if n.op in _VIEW_OPS}
    input_names = {i[0] for i in inputs}
    outputs = [
        (name, slot(name), name in consts or name in input_names or name in view_ops or name not in producer)
        for name in output_names
    ]
    return Plan(inputs, outputs, template, steps, [s[4] for s in steps_src], len(nodes), n_folded, fused)


def _attention_candidate(live: list, pos: int, consts: dict, infos: dict, sole_next: Callable) -> tuple[int, list[str]] | None:
    """``MatMul(q, kt) [+ Add(., mask)] -> Softmax(last axis) -> MatMul(., v)`` starting at ``live[pos]``, each
    intermediate used only by the next node: (index of the last node, inputs [q, kt, mask or "", v]), else None."""
    node = live[pos][0]
    if node.op != "MatMul" or any(i in consts for i in node.inputs) or len(node.outputs) != 1:
        return None
    value = node.outputs[0]
    mask = ""
    j = sole_next(pos, value)
    if j is not None and live[j][0].op == "Add" and live[j][0].inputs.count(value) == 1:
        mask = next(i for i in live[j][0].inputs if i != value)
        value = live[j][0].outputs[0]
    else:
        j = pos
    j = sole_next(j, value)
    if j is None or live[j][0].op != "Softmax":
        return None
    axis = live[j][0].attrs.get("axis", -1)
    rank = len(infos[value].shape) if value in infos and infos[value].shape is not None else None
    if not (axis == -1 or (rank is not None and axis == rank - 1)):
        return None
    value = live[j][0].outputs[0]
    j = sole_next(j, value)
    if j is None or live[j][0].op != "MatMul" or live[j][0].inputs[0] != value or live[j][0].inputs[1] == value:
        return None
    return j, [node.inputs[0], node.inputs[1], mask, live[j][0].inputs[1]]


def _dense_candidate(node: Node, consts: dict[str, np.ndarray]) -> tuple[str, np.ndarray, np.ndarray, bool] | None:
    """(x name, W [K, N], bias [N], W was a vector) for MatMul/Gemm with a constant 1-/2-D weight, else None."""
    if node.op == "MatMul":
        x, w = node.inputs
        if x in consts or w not in consts:
            return None
        wt = consts[w]
        if wt.dtype not in FLOATS or wt.ndim not in (1, 2):
            return None
        vector = wt.ndim == 1
        w2 = np.ascontiguousarray(wt.reshape(-1, 1) if vector else wt)
        return x, w2, np.zeros(w2.shape[1], w2.dtype), vector
    if node.op == "Gemm":
        a = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0} | node.attrs
        x, w = node.inputs[:2]
        c = node.inputs[2] if len(node.inputs) > 2 else ""
        if a["transA"] or x in consts or w not in consts or (c and c not in consts):
            return None
        wt = consts[w]
        if wt.dtype not in FLOATS or wt.ndim != 2:
            return None
        w2 = np.ascontiguousarray(wt.T if a["transB"] else wt)
        if a["alpha"] != 1.0:
            w2 = (w2 * a["alpha"]).astype(wt.dtype)
        bias = np.zeros(w2.shape[1], wt.dtype)
        if c:
            cv = consts[c]
            if cv.ndim > 2 or (cv.ndim == 2 and cv.shape[0] != 1) or cv.size not in (1, w2.shape[1]):
                return None
            bias = (np.broadcast_to(cv.reshape(-1), bias.shape) * a["beta"]).astype(wt.dtype)
        return x, w2, np.ascontiguousarray(bias), False
    return None


def describe_plan(plan: Plan) -> str:
    """One line on what planning did (for logs and ``hepzoo bench``)."""
    return (
        f"{plan.n_nodes} nodes -> {len(plan.steps)} steps ({plan.n_folded} folded; "
        + ", ".join(f"{k} {v}" for k, v in sorted(plan.fused.items()))
        + ")"
    )
