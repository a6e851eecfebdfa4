"""``hepzoo run --jobs N``: :func:`run_files_jobs` runs the input files in ``N`` local worker processes.

One fresh process per input file (``spawn``, ``max_tasks_per_child=1``: no state or thread pool is shared or
inherited), each loading the release itself with ``threads`` intra-op threads (1 by default: ``--jobs`` uses
the cores by files, ``--threads`` by splitting one call) and running :func:`hepzoo.runtime.runfile.run_file`,
so every output is the one a single-process run writes. Every input gets exactly one output, returned in input
order. Each output is written atomically by its worker, so a failing file leaves no partial output; files
not yet started when one fails are not started, files already running finish (their outputs are complete, and a
re-run skips them), and the error is one line naming the input file. Like :mod:`.runfile_dask`, this module
sits above :mod:`hepzoo.runtime.session` (its workers construct sessions).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path

from hepzoo.datasets.mapping import BranchMapping

from .runfile import DEFAULT_STEP, FileResult, check_on_bad_event, check_run_options, plan_outputs, run_file
from .session import Session

__all__ = ["JobFailed", "run_files_jobs"]


class JobFailed(RuntimeError):
    """One input file of a ``--jobs`` run failed; the message is one line starting with that file."""


def _run_one_in_process(release: str, backend: str, threads: int, input_path: str, output_path: str, options: dict) -> dict:
    """Worker: load the release (sessions do not pickle) and run one file."""
    session = Session.load(release, backend=backend, intra_op_threads=threads)
    return asdict(run_file(session, input_path, output_path, **options))


def _message(input_path: Path, error: BaseException) -> str:
    if isinstance(error, BrokenProcessPool):
        text = f"its worker process died ({error}); out of memory?"
    else:
        text = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
        if not isinstance(error, (ValueError, OSError, RuntimeError)):
            text = f"{type(error).__name__}: {text}"
    return text if text.startswith(str(input_path)) else f"{input_path}: {text}"


def run_files_jobs(
    session: Session,
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    jobs: int,
    threads: int = 1,
    seed: int | None = None,
    step_size: int = DEFAULT_STEP,
    overwrite: bool = False,
    mapping: BranchMapping | None = None,
    show_progress: bool = False,
    on_bad_event: str = "error",
) -> list[FileResult]:
    """:func:`~hepzoo.runtime.runfile.run_files` with one worker process per input file, ``jobs`` at a time."""
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    check_run_options(seed, step_size)
    check_on_bad_event(on_bad_event)
    pairs, _ = plan_outputs(inputs, output, session, mapping)
    options = {"seed": seed, "step_size": step_size, "overwrite": overwrite, "mapping": mapping,
               "on_bad_event": on_bad_event}
    results: list[FileResult | None] = [None] * len(pairs)
    failures: list[tuple[int, str]] = []
    from tqdm import tqdm

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(pairs)), mp_context=context, max_tasks_per_child=1) as pool:
        futures = {
            pool.submit(_run_one_in_process, str(session.folder), session.backend_name, threads, str(i), str(o), options): k
            for k, (i, o) in enumerate(pairs)
        }
        for future in tqdm(as_completed(futures), total=len(futures), unit="file", disable=not show_progress):
            k = futures[future]
            if future.cancelled():
                continue
            error = future.exception()
            if error is None:
                results[k] = FileResult(**future.result())
                continue
            failures.append((k, _message(pairs[k][0], error)))
            for other in futures:
                other.cancel()  # not started yet: never started; running: finishes
    if failures:
        first = min(failures)[1]
        more = f" ({len(failures) - 1} more files failed)" if len(failures) > 1 else ""
        raise JobFailed(first + more)
    return [r for r in results if r is not None]
