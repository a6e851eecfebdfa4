"""ROOT in -> ROOT out: run a released model over event files (``Session.run_file``, ``hepzoo run``).

Each input file gives one output file holding one entry per input event, in input order: the event
identifiers the input has (``event_id``, ``process``, ``n_pileup``, ``weight``, ``seed``), the input
``entry`` number, and one jagged collection of reconstructed objects:

* MLPF models: ``mlpf`` (branches ``mlpf_cls, mlpf_charge, mlpf_pt, mlpf_eta, mlpf_phi, mlpf_e``, counter
  ``nmlpf``): the predicted particle candidates.
* flash-sim models: ``flashjet`` or ``flashtrk`` (see :func:`hepzoo.datasets.flashsim_data.reconstruct`),
  plus the scalar ``flash_seed``. Event ``entry`` draws its noise from ``default_rng([seed, entry])``, so the
  output does not depend on the chunk size or on how files are split across workers.

The collection names, what is read and whether a seed is needed come from the model's family and object kind
(:mod:`hepzoo.models.families`, ``Session.family`` / ``Session.objects``).

Output files are written to a temporary name and renamed when complete, so a failed or interrupted run never
leaves a half-written output; temporaries of killed runs (named with their host and pid, see
:mod:`hepzoo.datasets.atomic`) are removed by the next run into the same folder. The JSON string ``hepzoo_run`` inside
the output records the model (name, version, onnx sha256), backend, seed and the input's size/mtime/entries; a
re-run skips outputs whose record matches (resumable) and refuses to replace one that does not unless
``overwrite``.

Input values: every event's values of the collections (and event scalars) the model reads are checked against the
schema's value policy (:mod:`hepzoo.datasets.schema`, ``VALUE_POLICY``) before the model runs. A violation is an
error naming the file, the entries of the chunk, the event, the branch and the object (``on_bad_event="error"``,
the default); with ``on_bad_event="skip"`` the event is written with no objects (still one output entry per input
event, in order) and listed in the record under ``skipped_events`` (``entry`` and ``reason``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import awkward as ak
import numpy as np
import uproot

from hepzoo.datasets.atomic import remove_stale_temporaries
from hepzoo.datasets.root_writer import AtomicTreeFile
from hepzoo.datasets import io, schema
from hepzoo.datasets.mapping import BranchMapping
from hepzoo.export.card import ModelCard
from hepzoo.models.families import Family, ObjectKind

from .checks import bad_events, check_collections
from .limits import EventTooLarge, check_file_sizes

__all__ = ["FileResult", "OUTPUT_TREE", "RUN_META_KEY", "output_path_for", "read_output", "read_run_record", "run_file", "run_files"]

OUTPUT_TREE = "events"
RUN_META_KEY = "hepzoo_run"
DEFAULT_STEP = 1000


class SessionLike(Protocol):
    """What running files needs of a :class:`hepzoo.runtime.session.Session` (this module sits below the
    session module, which calls it from ``Session.run_file``; it never imports it)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def card(self) -> ModelCard: ...
    @property
    def family(self) -> Family: ...
    @property
    def objects(self) -> ObjectKind | Family: ...
    @property
    def backend_name(self) -> str: ...
    @property
    def max_elements(self) -> int | None: ...

    def run(self, events: ak.Array, seed: int | None = None, first_entry: int = 0, **kwargs: Any) -> ak.Array: ...


@dataclass
class FileResult:
    """What happened to one input file."""

    input: str
    output: str
    n_events: int
    n_objects: int
    skipped: bool
    seconds: float
    n_bad_skipped: int = 0  # events whose input broke the value policy, written with no objects (on_bad_event="skip")


def output_collection(session: SessionLike) -> str:
    """The collection of reconstructed objects in the output (``Session.objects``: the family or object kind)."""
    return session.objects.output_collection


def input_collections(session: SessionLike) -> tuple[str, ...]:
    """The input collections a model needs (only these are read)."""
    return tuple(session.objects.input_collections)


def input_scalars(session: SessionLike) -> tuple[str, ...]:
    """The event scalars a model reads as features (checked against the value policy with its collections)."""
    return tuple(session.objects.input_scalars)


ON_BAD_EVENT = ("error", "skip")


def check_on_bad_event(on_bad_event: Any, name: str = "on_bad_event") -> None:
    if on_bad_event not in ON_BAD_EVENT:
        raise ValueError(f"{name} {on_bad_event!r}: choose one of {', '.join(ON_BAD_EVENT)}")


def _without_objects(chunk: ak.Array, events: Sequence[int], prefixes: Sequence[str], scalars: Sequence[str]) -> ak.Array:
    """``chunk`` with ``events`` emptied: no objects in ``prefixes``, ``scalars`` zeroed (what the model sees)."""
    drop = np.zeros(len(chunk), dtype=bool)
    drop[list(events)] = True
    for p in prefixes:
        if p in chunk.fields:
            coll = chunk[p]
            keep = ak.Array(np.where(drop, 0, ak.to_numpy(ak.num(coll, axis=1))))
            chunk = ak.with_field(chunk, coll[ak.local_index(coll, axis=1) < keep], p)
    for k in scalars:
        if k in chunk.fields:
            values = ak.to_numpy(chunk[k]).copy()
            values[drop] = 0
            chunk = ak.with_field(chunk, values, k)
    return chunk


MAX_SEED = 2**63 - 1  # the seed is written as an int64 branch


def check_run_options(seed: Any, step_size: Any, names: tuple[str, str] = ("seed", "step_size")) -> None:
    """Validate the run arguments as arguments (before any file is read or folder made); ``names``: how the
    caller calls them in its messages (the CLI passes its option names)."""
    seed_name, step_name = names
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED):
        raise ValueError(f"{seed_name} {seed}: must be an integer from 0 to {MAX_SEED} (stored as int64)")
    if not isinstance(step_size, str) and (
        isinstance(step_size, bool) or not isinstance(step_size, (int, np.integer)) or step_size < 1
    ):
        raise ValueError(f"{step_name} {step_size}: must be a positive number of events per chunk")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return a.resolve() == b.resolve()


def _refuse_input_as_output(inputs: Sequence[Path], output: Path) -> None:
    for path in inputs:
        if _same_file(path, output):
            raise ValueError(
                f"output {output} is the input file {path}: an input is never overwritten (not even with "
                "--overwrite); choose another output"
            )


def output_path_for(input_path: Path, output: Path, model_name: str, several_inputs: bool) -> Path:
    """``output`` is a ``.root`` file (one input only) or a folder (``<input stem>.<model>.root`` inside)."""
    if output.suffix == ".root" and not output.is_dir():
        if several_inputs:
            raise ValueError(f"--output {output} is one file but there are several inputs: give a folder")
        return output
    return output / f"{input_path.stem}.{model_name}.root"


def _input_identity(path: Path, n_entries: int) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "entries": n_entries}


def _run_record(session: SessionLike, input_path: Path, n_entries: int, seed: int | None, on_bad_event: str) -> dict[str, Any]:
    record = {
        "model": session.name,
        "version": session.version,
        "onnx_sha256": session.card.onnx.sha256,
        "seed": seed,
        "input": _input_identity(input_path, n_entries),
    }
    if on_bad_event != "error":  # records of runs that refuse bad events stay as they were
        record["on_bad_event"] = on_bad_event
    return record


def read_run_record(path: str | os.PathLike) -> dict[str, Any]:
    """The ``hepzoo_run`` record of an output file ({} if it has none)."""
    with uproot.open(path) as f:
        if RUN_META_KEY not in f.keys(cycle=False):
            return {}
        return json.loads(str(f[RUN_META_KEY]))


def read_output(path: str | os.PathLike) -> ak.Array:
    """An output file as awkward records: scalars as fields, the object collection zipped under its name."""
    collection = read_run_record(path).get("collection")
    with uproot.open(path) as f:
        flat = f[OUTPUT_TREE].arrays()
    fields = {k: flat[k] for k in flat.fields if not (collection and (k.startswith(collection + "_") or k == "n" + collection))}
    if collection:
        prefix = collection + "_"
        fields[collection] = ak.zip({k[len(prefix):]: flat[k] for k in flat.fields if k.startswith(prefix)}, depth_limit=2)
    return ak.zip(fields, depth_limit=1)


def _same_run(record: dict[str, Any], expected: dict[str, Any]) -> bool:
    keys = ("model", "version", "onnx_sha256", "seed", "input")
    same_mode = record.get("on_bad_event", "error") == expected.get("on_bad_event", "error")
    return record.get("complete") is True and same_mode and all(record.get(k) == expected[k] for k in keys)


def _identifiers(chunk: ak.Array, first_entry: int) -> dict[str, np.ndarray]:
    ids = {k: ak.to_numpy(chunk[k]).astype(dt, copy=False) for k, dt in schema.EVENT_SCALARS.items() if k in chunk.fields}
    ids["entry"] = np.arange(first_entry, first_entry + len(chunk), dtype=np.int64)
    return ids


def run_file(
    session: SessionLike,
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    seed: int | None = None,
    step_size: int = DEFAULT_STEP,
    overwrite: bool = False,
    mapping: BranchMapping | None = None,
    progress: Any = None,
    on_bad_event: str = "error",
) -> FileResult:
    """Run ``session`` over one event file into ``output`` (a ``.root`` path); see the module docstring.

    ``seed`` is required for flash-sim models and refused for MLPF. ``progress``: a tqdm bar to advance by
    the number of events read. Errors name the input file and the entries of the failing chunk.
    ``on_bad_event``: ``"error"`` or ``"skip"`` (see the module docstring).
    """
    started = time.perf_counter()
    check_run_options(seed, step_size)
    check_on_bad_event(on_bad_event)
    input_path, output = Path(input_path), Path(output)
    _refuse_input_as_output([input_path], output)
    generative = session.family.generative
    if generative and seed is None:
        raise ValueError(f"{session.name} is generative: give a seed (it is recorded in the output)")
    if not generative and seed is not None:
        raise ValueError(f"a seed is for generative (flash-sim) models; {session.name} is deterministic")
    n_entries = io.num_entries(input_path, mapping=mapping)
    record = _run_record(session, input_path, n_entries, seed, on_bad_event)
    if output.exists():
        previous = read_run_record(output)
        if _same_run(previous, record):
            if progress is not None:
                progress.update(n_entries)
            return FileResult(str(input_path), str(output), n_entries, int(previous.get("n_objects", 0)), True, 0.0,
                              len(previous.get("skipped_events", [])))
        if not overwrite:
            raise FileExistsError(
                f"{output} exists but was not made by this run (model, seed or input differ, or it is not a "
                "hepzoo run output): remove it or pass --overwrite"
            )

    collection = output_collection(session)
    remove_stale_temporaries(output.parent)  # left by killed runs (their writer process is gone)
    writer = AtomicTreeFile(output, OUTPUT_TREE)
    n_events = n_objects = 0
    skipped: list[dict[str, Any]] = []
    prefixes, scalars = input_collections(session), input_scalars(session)
    try:
        chunks = io.iterate_events(input_path, step_size=step_size, collections=prefixes, mapping=mapping)
        for chunk in chunks:
            first = n_events
            try:
                model_input = chunk
                if on_bad_event == "skip":
                    bad = bad_events(chunk, prefixes, scalars)
                    skipped += [{"entry": first + i, "reason": reason} for i, reason in bad.items()]
                    model_input = _without_objects(chunk, list(bad), prefixes, scalars) if bad else chunk
                if generative:
                    objects = session.run(model_input, seed=seed, first_entry=first)
                else:
                    objects = session.run(model_input, first_entry=first)
                if on_bad_event == "error":  # what the model's own checks do not see (e.g. MLPF input phi): the
                    check_collections(chunk, prefixes, first, scalars)  # chunk is refused before it is written
            except ValueError as error:
                kind = EventTooLarge if isinstance(error, EventTooLarge) else ValueError
                raise kind(f"{input_path}: entries {first}-{first + len(chunk) - 1}: {error}") from error
            arrays: dict[str, Any] = _identifiers(chunk, first)
            if generative:
                arrays["flash_seed"] = np.full(len(chunk), seed, dtype=np.int64)
            arrays[collection] = objects
            writer.extend(arrays)
            n_events += len(chunk)
            n_objects += int(ak.sum(ak.num(objects, axis=1)))
            if progress is not None:
                progress.update(len(chunk))
        if n_events != n_entries:
            raise RuntimeError(f"{input_path}: read {n_events} events but the file has {n_entries}")
        final = {**record, "complete": True, "n_events": n_events, "n_objects": n_objects,
                 "backend": session.backend_name, "collection": collection}
        if on_bad_event == "skip":
            final["skipped_events"] = skipped
        writer.commit(RUN_META_KEY, final)
    except BaseException:
        writer.abort()
        raise
    return FileResult(str(input_path), str(output), n_events, n_objects, False, time.perf_counter() - started,
                      len(skipped))


def plan_outputs(
    inputs: str | os.PathLike | Sequence[str | os.PathLike], output: str | os.PathLike, session: SessionLike,
    mapping: BranchMapping | None,
) -> tuple[list[tuple[Path, Path]], int]:
    """(input, output) pairs and the total number of events. Every input is validated (metadata of the
    collections the model reads, first entry, MLPF events within the model's element limit) and no output is an
    input, before the output folder is made."""
    files = io.expand_paths(inputs)
    if not files:
        raise FileNotFoundError(f"no input files match {inputs!r}")
    output = Path(output)
    pairs = [(f, output_path_for(f, output, session.name, len(files) > 1)) for f in files]
    outs = [o for _, o in pairs]
    clash = {o for o in outs if outs.count(o) > 1}
    if clash:
        raise ValueError(f"several inputs would write the same output {sorted(map(str, clash))}: rename the inputs")
    for o in outs:
        _refuse_input_as_output(files, o)
    total = 0
    for f in files:
        total += io.num_entries(f, mapping=mapping)
        chunks = io.iterate_events(f, step_size=1, collections=input_collections(session), mapping=mapping)
        next(iter(chunks), None)
        chunks.close()
        if session.family.elements:  # every event within the model's element limit (counters only)
            check_file_sizes(f, input_collections(session), session.max_elements, session.name, mapping)
    if output.suffix != ".root" and not output.exists():
        output.mkdir(parents=True)
    return pairs, total


def run_files(
    session: SessionLike,
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    seed: int | None = None,
    step_size: int = DEFAULT_STEP,
    overwrite: bool = False,
    mapping: BranchMapping | None = None,
    show_progress: bool = False,
    on_bad_event: str = "error",
) -> list[FileResult]:
    """Run over every file matching ``inputs`` (paths or globs), one output per input (see :func:`output_path_for`)."""
    check_run_options(seed, step_size)
    check_on_bad_event(on_bad_event)
    pairs, total = plan_outputs(inputs, output, session, mapping)
    from tqdm import tqdm

    results = []
    with tqdm(total=total, unit="ev", disable=not show_progress, desc=session.name) as bar:
        for input_path, output_path in pairs:
            results.append(
                run_file(session, input_path, output_path, seed=seed, step_size=step_size, overwrite=overwrite,
                         mapping=mapping, progress=bar, on_bad_event=on_bad_event)
            )
    return results
