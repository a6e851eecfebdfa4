"""End to end in ``hepzoo bench``: ``hepzoo run`` (``Session.run_file``) on a ROOT file vs the sum of its parts.

The parts are timed alone on the same chunks: reading (uproot), the model (``Session.run``) and writing
(uproot); the difference is the runtime's own overhead. Run in this process, after the matrix, when
``hepzoo bench --data FILE`` is given.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hepzoo.models.families import get_family

__all__ = ["end_to_end"]


def end_to_end(
    data: str | os.PathLike,
    model: str = "mlpf-gnnlsh",
    backend: str = "auto",
    threads: int = 1,
    repeats: int = 3,
    seed: int = 1,
    step_size: int = 1000,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """``Session.run_file`` (what ``hepzoo run`` calls) on ``data`` vs the sum of its parts, best of ``repeats``.

    Parts, each timed alone on the same chunks: uproot read (``iterate_events`` of the collections the model
    needs), model compute (``Session.run`` per chunk) and write (:class:`~hepzoo.datasets.root_writer.AtomicTreeFile`, the writer of ``hepzoo run``, of the event
    identifiers and the objects into a temporary ROOT file). The file is read before timing, so every pass
    reads it from the page cache. Returns ``{"status": "unavailable", ...}`` while the runtime has no ``run_file``.
    """
    import tempfile

    import awkward as ak

    from hepzoo.datasets import io, schema
    from hepzoo.datasets.root_writer import AtomicTreeFile
    from hepzoo.runtime import Session

    if not hasattr(Session, "run_file"):
        return {"status": "unavailable", "reason": "Session.run_file (runtime/runfile.py, `hepzoo run`) is not in this checkout"}
    from hepzoo.runtime import runfile

    data = Path(data)
    if not data.is_file():
        raise FileNotFoundError(f"end-to-end input {str(data)!r} does not exist (make one: hepzoo generate ttbar -n 200 -o {data})")
    import torch

    torch.set_num_threads(threads)
    session = Session.load(model, backend=backend, intra_op_threads=threads)
    generative = get_family(session.card.family).generative
    run_kw: dict[str, Any] = {"seed": seed} if generative else {}
    collections = runfile.input_collections(session)
    collection = runfile.output_collection(session)
    best: dict[str, float] = {}

    def keep(step: str, seconds: float) -> None:
        best[step] = min(best.get(step, math.inf), seconds)

    with tempfile.TemporaryDirectory(prefix="hepzoo-bench-e2e-") as tmp:
        chunks = list(io.iterate_events(data, step_size=step_size, collections=collections))  # warms the page cache
        session.run(chunks[0][:1], first_entry=0, **run_kw)  # warm-up: arenas, JIT compilation
        n_events = sum(len(c) for c in chunks)
        for i in range(repeats):
            t = clock()
            chunks = list(io.iterate_events(data, step_size=step_size, collections=collections))
            keep("read (uproot)", clock() - t)
            t = clock()
            outputs, first = [], 0
            for chunk in chunks:
                outputs.append(session.run(chunk, first_entry=first, **run_kw))
                first += len(chunk)
            keep("compute (Session.run)", clock() - t)
            t = clock()
            with AtomicTreeFile(Path(tmp) / f"parts-{i}.root", "events") as out:  # the writer hepzoo run uses
                first = 0
                for chunk, objects in zip(chunks, outputs, strict=True):
                    arrays: dict[str, Any] = {
                        k: ak.to_numpy(chunk[k]).astype(dt, copy=False) for k, dt in schema.EVENT_SCALARS.items() if k in chunk.fields
                    }
                    arrays["entry"] = np.arange(first, first + len(chunk), dtype=np.int64)
                    arrays[collection] = objects
                    out.extend(arrays)
                    first += len(chunk)
                out.commit("hepzoo_bench", {"n_events": first})
            keep("write (uproot)", clock() - t)
            t = clock()
            session.run_file(data, Path(tmp) / f"run-{i}.root", overwrite=True, step_size=step_size, **run_kw)
            keep("run_file", clock() - t)
        n_elements = int(sum(int(ak.sum(ak.num(c[p], axis=1))) for c in chunks for p in collections if p in c.fields))
    parts = [{"step": k, "seconds": v} for k, v in best.items() if k != "run_file"]
    total = sum(p["seconds"] for p in parts)
    return {
        "status": "ok",
        "input": str(data),
        "events": n_events,
        "elements": n_elements,
        "model": session.name,
        "backend": session.backend_name,
        "threads": threads,
        "repeats": repeats,
        "step_size": step_size,
        "command": f"hepzoo run {session.name} (Session.run_file)",
        "parts": parts,
        "sum_s": total,
        "run_s": best["run_file"],
        "overhead": best["run_file"] / total - 1.0,
    }
