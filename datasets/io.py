"""ROOT I/O for the event schema: pack per-event dicts, write files atomically, stream and validate reads.

Layers (each usable alone):

1. ``events_to_awkward(events)`` — per-event dicts ``{branch: ndarray | scalar}`` -> one awkward chunk.
2. ``EventWriter(path)`` — context manager; ``.write(chunk)`` appends one basket per call to the TTree
   ``schema.TREE_NAME``; each collection is zipped so its counter is ``n<prefix>``. The file is written under
   a temporary name in the destination folder and renamed over ``path`` only by a successful ``close()``.
3. ``iterate_events(paths, step_size=..., collections=..., mapping=...)`` — validated chunked streaming read
   (one file after the other, never merging chunks across files); ``read_events`` concatenates;
   ``check_file`` validates a whole file (metadata and every entry) and raises :class:`SchemaError`.

In-memory chunk layout: an awkward Array of records with the event scalars present in the file (schema
order) and one jagged record field per collection (``events.gen.pt``), dtypes exactly as the schema declares.
Counters are not fields (``ak.num(events.gen)`` is the counter).

Dtype policy on read (``strict=False``, the default): a branch whose dtype differs from the schema is accepted
when it has the same kind and is cast on read — any float width -> the schema float (float64 from other
producers becomes float32), any integer width/signedness -> the schema integer, checked for overflow on every
chunk (an out-of-range value raises :class:`SchemaError` naming branch and entry). Kind changes (float <-> int,
int <-> bool) are always errors. ``strict=True`` requires exact dtypes. Mapped reads (``mapping=...``, see
:mod:`hepzoo.datasets.mapped`) follow the same rules for every mapped branch, and values a mapping computes for
an integer field must be exact integers.

A file with zero entries is an error (``SchemaError``): producers must not leave empty outputs behind.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from hepzoo.datasets import schema
from hepzoo.datasets.chunks import collection_layout, make_chunk
from hepzoo.datasets.dtypes import SchemaError, branch_dtype, cast_flat, dtype_ok, first_violation
from hepzoo.datasets.layouts import missing_tree_message
from hepzoo.datasets.mapped import build_mapped, plan_mapped
from hepzoo.datasets.mapping import BranchMapping
from hepzoo.datasets.root_writer import AtomicTreeFile, branch_types

Event = dict[str, Any]
PathLike = str | os.PathLike

META_KEY = "hepzoo_meta"  # TObjString with a JSON object written by EventWriter


# ---------------------------------------------------------------------------------------------------------
# packing


def events_to_awkward(events: Sequence[Event]) -> ak.Array:
    """Pack per-event dicts (schema branch names -> flat arrays / scalars) into one awkward chunk.

    Vectorised: each branch is concatenated once and cut by the per-event counts. Keys that are not schema
    branches are ignored. All events must hold the same scalars and collections, and each collection all its
    fields with equal lengths (else :class:`SchemaError` naming the event and branch). An empty sequence gives
    an empty chunk with every scalar and collection.
    """
    n = len(events)
    if n == 0:
        return make_chunk(
            {k: np.zeros(0, dt) for k, dt in schema.EVENT_SCALARS.items()},
            {
                p: collection_layout({f.name: np.zeros(0, f.dtype) for f in c.fields}, np.zeros(0, np.int64))
                for p, c in schema.COLLECTIONS.items()
            },
            0,
        )
    first = events[0]
    scalar_names = [k for k in schema.EVENT_SCALARS if k in first]
    prefixes = [
        p for p, c in schema.COLLECTIONS.items() if any(b in first for b in c.branches) or c.counter in first
    ]
    scalars: dict[str, np.ndarray] = {}
    for k in scalar_names:
        try:
            scalars[k] = np.array([ev[k] for ev in events], dtype=schema.EVENT_SCALARS[k])
        except KeyError:
            bad = next(i for i, ev in enumerate(events) if k not in ev)
            raise SchemaError(f"events_to_awkward: event {bad} lacks scalar {k!r} that event 0 has") from None
    colls: dict[str, ak.contents.Content] = {}
    for p in prefixes:
        coll = schema.COLLECTIONS[p]
        counts = None
        flats: dict[str, np.ndarray] = {}
        for f in coll.fields:
            b = coll.branch(f.name)
            try:
                parts = [np.asarray(ev[b]) for ev in events]
            except KeyError:
                bad = next(i for i, ev in enumerate(events) if b not in ev)
                raise SchemaError(
                    f"events_to_awkward: event {bad} lacks branch {b!r} of collection {p!r}"
                ) from None
            lens = np.fromiter((a.size for a in parts), dtype=np.int64, count=n)
            if counts is None:
                counts, first_branch = lens, b
            elif not np.array_equal(lens, counts):
                bad = int(np.flatnonzero(lens != counts)[0])
                raise SchemaError(
                    f"events_to_awkward: event {bad}: branch {b!r} has {lens[bad]} entries but "
                    f"{first_branch!r} has {counts[bad]}"
                )
            flats[f.name] = np.concatenate(parts).astype(f.dtype, copy=False) if parts else np.zeros(0, f.dtype)
        assert counts is not None
        colls[p] = collection_layout(flats, counts)
    return make_chunk(scalars, colls, n)


# ---------------------------------------------------------------------------------------------------------
# writing


class EventWriter:
    """Write chunks to ``path`` atomically. ``with EventWriter(p) as w: w.write(chunk); w.write(chunk2)``.

    Each ``write`` is one basket (write large chunks). The first chunk fixes which scalars and collections
    the file holds; later chunks must match. On an exception inside the ``with`` block, on ``abort()``, or if
    the writer is garbage-collected (or the interpreter exits) before ``close()``, the temporary file is
    removed and ``path`` is left untouched. A writer closed without any ``write`` produces a file with the
    full schema and zero entries (which readers reject as empty).
    """

    def __init__(self, path: PathLike, *, metadata: dict[str, Any] | None = None):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"EventWriter: output folder {str(self.path.parent)!r} does not exist")
        self._out = AtomicTreeFile(self.path, schema.TREE_NAME)
        self._layout: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._metadata = dict(metadata or {})
        self.n_events = 0

    @property
    def closed(self) -> bool:
        return self._out.closed

    def _arrays(self, chunk: ak.Array) -> tuple[dict[str, Any], tuple[tuple[str, ...], tuple[str, ...]]]:
        fields = set(chunk.fields)
        scalars = tuple(k for k in schema.EVENT_SCALARS if k in fields)
        prefixes = tuple(p for p in schema.COLLECTIONS if p in fields)
        out: dict[str, Any] = {}
        for k in scalars:
            out[k] = ak.to_numpy(chunk[k]).astype(schema.EVENT_SCALARS[k], copy=False)
        for p in prefixes:
            coll = schema.COLLECTIONS[p]
            sub = chunk[p]
            missing = [f for f in coll.field_names if f not in sub.fields]
            if missing:
                raise SchemaError(f"{self.path}: chunk collection {p!r} lacks fields {missing}")
            out[p] = ak.zip(
                {f.name: ak.values_astype(sub[f.name], f.dtype) for f in coll.fields}, depth_limit=2
            )
        return out, (scalars, prefixes)

    def write(self, chunk: ak.Array) -> None:
        if self.closed:
            raise ValueError(f"EventWriter({self.path}): write after close/abort")
        if len(chunk) == 0:
            return
        arrays, layout = self._arrays(chunk)
        if self._layout is None:
            self._layout = layout
        elif layout != self._layout:
            raise SchemaError(
                f"{self.path}: chunk holds scalars/collections {layout}, but the first chunk held {self._layout}"
            )
        self._out.extend(arrays)
        self.n_events += len(chunk)

    def close(self) -> None:
        """Finish the file and rename it over ``path``."""
        if self.closed:
            return
        try:
            if self._out.tree is None:  # nothing written: an empty tree with the whole schema
                empty, _ = self._arrays(events_to_awkward([]))
                self._out.make_tree(branch_types(empty))
        except BaseException:
            self.abort()
            raise
        meta = {"writer": "hepzoo.datasets.io.EventWriter", "tree": schema.TREE_NAME, "n_events": self.n_events}
        meta.update(self._metadata)
        self._out.commit(META_KEY, meta)

    def abort(self) -> None:
        """Drop the temporary file; ``path`` is not touched."""
        self._out.abort()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ---------------------------------------------------------------------------------------------------------
# reading


def expand_paths(paths: PathLike | Sequence[PathLike]) -> list[Path]:
    """Paths and glob patterns -> list of files (each pattern's matches sorted; order of arguments kept)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        s = os.fspath(p)
        if glob.has_magic(s):
            matches = sorted(glob.glob(s))
            if not matches:
                raise FileNotFoundError(f"no file matches {s!r}")
            out.extend(Path(m) for m in matches)
        else:
            if not os.path.exists(s):
                raise FileNotFoundError(f"no such file: {s!r}")
            out.append(Path(s))
    return out


def _first_mismatch(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.flatnonzero(a != b)[0])


class _FileReader:
    """One validated input file: checks the metadata on construction, then reads entry ranges."""

    def __init__(
        self,
        path: PathLike,
        collections: Sequence[str] | None = None,
        mapping: BranchMapping | None = None,
        strict: bool = False,
    ):
        self.path = Path(path)
        self.mapping = mapping
        self.strict = strict
        if collections is not None:
            unknown = [c for c in collections if c not in schema.COLLECTIONS]
            if unknown:
                raise ValueError(f"unknown collections {unknown}; schema has {list(schema.COLLECTIONS)}")
        if not self.path.exists():
            raise FileNotFoundError(f"no such file: {str(self.path)!r}")
        if self.path.stat().st_size == 0:
            raise SchemaError(f"{self.path}: file is empty (0 bytes), not a ROOT file")
        tree_name = mapping.tree if mapping else schema.TREE_NAME
        try:
            self._file = uproot.open(self.path)
        except Exception as err:  # noqa: BLE001 - uproot raises many types for corrupt input
            raise SchemaError(
                f"{self.path}: cannot open as a ROOT file (truncated or corrupt?): {type(err).__name__}: {' '.join(str(err).split())}"
            ) from err
        try:
            size, end = self.path.stat().st_size, int(getattr(self._file.file, "fEND", 0))
            if size < end:
                raise SchemaError(f"{self.path}: file is truncated: its header says {end} bytes, it has {size}")
            try:
                keys = self._file.keys(cycle=False)
                classes = self._file.classnames(cycle=False)
            except Exception as err:  # noqa: BLE001
                raise SchemaError(
                    f"{self.path}: cannot read the ROOT directory (truncated or corrupt?): {type(err).__name__}: {' '.join(str(err).split())}"
                ) from err
            if tree_name not in keys or not classes.get(tree_name, "").startswith("TTree"):
                raise SchemaError(missing_tree_message(self.path, tree_name, classes, mapping))
            try:
                self.tree = self._file[tree_name]
                self.branches = {b.name: b for b in self.tree.values(recursive=True)}
                self.num_entries = int(self.tree.num_entries)
            except Exception as err:  # noqa: BLE001
                raise SchemaError(
                    f"{self.path}: cannot read TTree {tree_name!r} (truncated or corrupt?): {type(err).__name__}: {' '.join(str(err).split())}"
                ) from err
            if self.num_entries == 0:
                raise SchemaError(f"{self.path}: TTree {tree_name!r} has 0 entries")
            if mapping is None:
                self._plan_native(collections)
            else:
                self._plan_mapped(collections)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._file.close()

    # -- planning ------------------------------------------------------------------------------------------
    def _require(self, name: str, what: str, jagged: bool) -> np.dtype:
        if name not in self.branches:
            raise SchemaError(f"{self.path}: TTree {self.tree.name!r} lacks branch {name!r} ({what})")
        dtype, is_jagged = branch_dtype(self.branches[name])
        if dtype is None:
            raise SchemaError(
                f"{self.path}: branch {name!r} ({what}) is not a plain numeric branch "
                f"({self.branches[name].interpretation})"
            )
        if is_jagged != jagged:
            raise SchemaError(
                f"{self.path}: branch {name!r} ({what}) is {'jagged' if is_jagged else 'flat'}, "
                f"expected {'jagged' if jagged else 'one value per event'}"
            )
        return dtype

    def _plan_native(self, collections: Sequence[str] | None) -> None:
        if collections is None:
            prefixes = [
                p
                for p, c in schema.COLLECTIONS.items()
                if c.counter in self.branches or any(b in self.branches for b in c.branches)
            ]
        else:
            prefixes = [p for p in schema.COLLECTIONS if p in collections]
        self.prefixes = prefixes
        self.scalars = [k for k in schema.EVENT_SCALARS if k in self.branches]
        for k in self.scalars:
            found = self._require(k, "event scalar", jagged=False)
            self._check_dtype(k, found, schema.EVENT_SCALARS[k])
        self.counters: dict[str, str | None] = {}
        for p in prefixes:
            coll = schema.COLLECTIONS[p]
            for b, dt in coll.branches.items():
                found = self._require(b, f"collection {p!r}", jagged=True)
                self._check_dtype(b, found, dt)
            self.counters[p] = coll.counter if coll.counter in self.branches else None
        self.read_names = set(self.scalars) | {b for p in prefixes for b in schema.COLLECTIONS[p].branches}
        self.read_names |= {c for c in self.counters.values() if c}

    def _check_dtype(self, name: str, found: np.dtype, expected: np.dtype) -> None:
        if not dtype_ok(found, expected, self.strict):
            raise SchemaError(
                f"{self.path}: branch {name!r} has dtype {found}, expected {expected}"
                + (" (strict)" if self.strict else "")
            )

    def _plan_mapped(self, collections: Sequence[str] | None) -> None:
        plan_mapped(self, collections)

    # -- reading -------------------------------------------------------------------------------------------
    def iterate(
        self, step_size: int | str = 1000, entry_start: int = 0, entry_stop: int | None = None
    ) -> Iterator[ak.Array]:
        names = self.read_names
        it = self.tree.iterate(
            filter_branch=lambda b: b.name in names,
            step_size=step_size,
            entry_start=entry_start,
            entry_stop=entry_stop,
            library="ak",
            how=dict,
            report=True,
        )
        while True:
            try:
                arrays, report = next(it)
            except StopIteration:
                return
            except Exception as err:  # noqa: BLE001 - wrap any decompression/deserialization failure
                raise SchemaError(
                    f"{self.path}: failed reading TTree {self.tree.name!r} after entry {entry_start} "
                    f"(truncated or corrupt file?): {type(err).__name__}: {' '.join(str(err).split())}"
                ) from err
            arrays = {k.split("/")[-1]: v for k, v in arrays.items()}
            start = int(report.tree_entry_start)
            entry_start = int(report.tree_entry_stop)
            if self.mapping is None:
                yield self._build_native(arrays, start)
            else:
                yield self._build_mapped(arrays, start)

    def read(self, entry_start: int, entry_stop: int) -> ak.Array:
        if not 0 <= entry_start < entry_stop <= self.num_entries:
            raise ValueError(f"{self.path}: entry range [{entry_start}, {entry_stop}) outside [0, {self.num_entries})")
        chunks = list(self.iterate(step_size=max(entry_stop - entry_start, 1), entry_start=entry_start,
                                   entry_stop=entry_stop))
        return chunks[0] if len(chunks) == 1 else ak.concatenate(chunks)

    def _check_counts(self, p: str, counts: dict[str, np.ndarray], start: int, event_ids: Any) -> np.ndarray:
        names = list(counts)
        ref = counts[names[0]]
        for b in names[1:]:
            if not np.array_equal(counts[b], ref):
                i = _first_mismatch(counts[b], ref)
                eid = f" (event_id {int(event_ids[i])})" if event_ids is not None else ""
                raise SchemaError(
                    f"{self.path}: inconsistent counts in collection {p!r} at entry {start + i}{eid}: "
                    f"{names[0]!r} gives {int(ref[i])} objects, {b!r} gives {int(counts[b][i])}"
                )
        return ref

    def _build_native(self, arrays: dict[str, ak.Array], start: int) -> ak.Array:
        length = len(next(iter(arrays.values())))
        scalars = {}
        for k in self.scalars:
            scalars[k] = cast_flat(
                ak.to_numpy(arrays[k]), schema.EVENT_SCALARS[k], self.path, k, lambda i: start + i
            )
        event_ids = scalars.get("event_id")
        colls = {}
        for p in self.prefixes:
            coll = schema.COLLECTIONS[p]
            counts = {b: np.asarray(ak.num(arrays[b], axis=1), dtype=np.int64) for b in coll.branches}
            if self.counters[p]:
                counts = {self.counters[p]: ak.to_numpy(arrays[self.counters[p]]).astype(np.int64), **counts}
            c = self._check_counts(p, counts, start, event_ids)
            ev_of = np.repeat(np.arange(length), c)
            flats = {
                f.name: cast_flat(
                    ak.to_numpy(ak.flatten(arrays[coll.branch(f.name)], axis=1)),
                    np.dtype(f.dtype),
                    self.path,
                    coll.branch(f.name),
                    lambda i: start + int(ev_of[i]),
                )
                for f in coll.fields
            }
            colls[p] = collection_layout(flats, c)
        return make_chunk(scalars, colls, length)

    def _build_mapped(self, arrays: dict[str, ak.Array], start: int) -> ak.Array:
        return build_mapped(self, arrays, start)


def _readers(paths, collections, mapping, strict) -> list[Path]:
    files = expand_paths(paths)
    for f in files:  # validate every file's metadata before yielding anything
        _FileReader(f, collections, mapping, strict).close()
    return files


def iterate_events(
    paths: PathLike | Sequence[PathLike],
    *,
    step_size: int | str = 1000,
    collections: Sequence[str] | None = None,
    mapping: BranchMapping | None = None,
    strict: bool = False,
    check_values: bool = False,
) -> Iterator[ak.Array]:
    """Stream chunks of at most ``step_size`` events (or a size such as ``"100 MB"``) from files/globs.

    Every file's metadata (tree, branches, dtypes, entries) is validated before the first chunk is yielded;
    counters are checked chunk by chunk as they are read. ``collections=None`` reads every schema collection
    the file holds (with a mapping: every mapped one). ``check_values``: every chunk (after the mapping) must
    follow the schema's value policy (``schema.VALUE_POLICY``), else an error naming file, branch, entry and
    object. Raises :class:`SchemaError`.
    """
    files = _readers(paths, collections, mapping, strict)
    for f in files:
        reader = _FileReader(f, collections, mapping, strict)
        try:
            start = 0
            for chunk in reader.iterate(step_size):
                if check_values:
                    found = first_violation(chunk, reader.prefixes, tuple(schema.SCALAR_POLICY))
                    if found is not None:
                        raise SchemaError(f"{f}: entry {start + found[0]}: {found[1]}")
                start += len(chunk)
                yield chunk
        finally:
            reader.close()


def read_events(paths: PathLike | Sequence[PathLike], **kw: Any) -> ak.Array:
    """All events of ``paths`` in one chunk (see :func:`iterate_events` for the keywords)."""
    chunks = list(iterate_events(paths, **kw))
    if not chunks:
        return events_to_awkward([])
    return chunks[0] if len(chunks) == 1 else ak.concatenate(chunks)


def check_file(
    path: PathLike,
    collections: Sequence[str] | None = None,
    mapping: BranchMapping | None = None,
    strict: bool = False,
    step_size: int | str = "100 MB",
) -> None:
    """Validate a whole file: metadata and every entry (counters, integer ranges). Raises SchemaError."""
    for _ in iterate_events(path, step_size=step_size, collections=collections, mapping=mapping, strict=strict):
        pass


def read_range(
    path: PathLike,
    entry_start: int,
    entry_stop: int,
    *,
    collections: Sequence[str] | None = None,
    mapping: BranchMapping | None = None,
    strict: bool = False,
) -> ak.Array:
    """Entries ``[entry_start, entry_stop)`` of one file as one chunk (validated like iterate_events)."""
    reader = _FileReader(path, collections, mapping, strict)
    try:
        return reader.read(entry_start, entry_stop)
    finally:
        reader.close()


def num_entries(path: PathLike, mapping: BranchMapping | None = None) -> int:
    """Number of events in one file (validated like the readers do)."""
    reader = _FileReader(path, collections=[] if mapping is not None else None, mapping=mapping)  # mapped: tree only
    try:
        return reader.num_entries
    finally:
        reader.close()


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The JSON metadata EventWriter stored in the file ({} if there is none)."""
    with uproot.open(path) as f:
        if META_KEY not in f.keys(cycle=False):
            return {}
        return json.loads(str(f[META_KEY]))
