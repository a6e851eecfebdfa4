"""``hepzoo run --dask``: :func:`run_files_dask` spreads the input files over Dask worker processes.

Each task loads the release in its worker (a :class:`~hepzoo.runtime.session.Session` does not pickle) and runs
:func:`hepzoo.runtime.runfile.run_file` on one file, so the outputs are those of a single-process
:func:`~hepzoo.runtime.runfile.run_files`. This module sits above :mod:`hepzoo.runtime.session` (it constructs
sessions); :mod:`hepzoo.runtime.runfile` sits below it (``Session.run_file`` uses it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict

from hepzoo.datasets.mapping import BranchMapping

from .runfile import DEFAULT_STEP, FileResult, check_on_bad_event, check_run_options, plan_outputs, run_file
from .session import Session

__all__ = ["run_files_dask"]


def _run_one_on_worker(release: str, backend: str, input_path: str, output_path: str, options: dict) -> dict:
    """Dask task: load the release in the worker process (sessions do not pickle) and run one file."""
    return asdict(run_file(Session.load(release, backend=backend), input_path, output_path, **options))


def run_files_dask(
    session: Session,
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    seed: int | None = None,
    step_size: int = DEFAULT_STEP,
    overwrite: bool = False,
    mapping: BranchMapping | None = None,
    show_progress: bool = False,
    on_bad_event: str = "error",
) -> list[FileResult]:
    """:func:`~hepzoo.runtime.runfile.run_files` with one Dask task per input file, on ``scheduler`` (an address) or a local cluster.

    Each task loads the release itself and writes its own output atomically, so the outputs are identical to a
    single-process run (flash-sim noise is keyed by entry, not by worker).
    """
    from dask.distributed import Client, LocalCluster, as_completed

    check_run_options(seed, step_size)
    check_on_bad_event(on_bad_event)
    pairs, _ = plan_outputs(inputs, output, session, mapping)
    options = {"seed": seed, "step_size": step_size, "overwrite": overwrite, "mapping": mapping,
               "on_bad_event": on_bad_event}  # cloudpickled
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=n_workers or min(len(pairs), os.cpu_count() or 1), threads_per_worker=1,
                               processes=True, dashboard_address=":0")  # any free port: concurrent runs on
        # one machine must not collide on the default 8787 (dashboard_address=None means that default)
    client = Client(cluster if cluster is not None else scheduler)
    try:
        futures = [
            client.submit(_run_one_on_worker, str(session.folder), session.backend_name, str(i), str(o), options, pure=False)
            for i, o in pairs
        ]
        from tqdm import tqdm

        for _ in tqdm(as_completed(futures), total=len(futures), unit="file", disable=not show_progress):
            pass
        return [FileResult(**f.result()) for f in futures]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
