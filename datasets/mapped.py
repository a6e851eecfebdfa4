"""Reading a foreign layout through a :class:`~hepzoo.datasets.mapping.BranchMapping` (Delphes, NanoAOD).

The mapped read follows the native reader's dtype rules (:mod:`hepzoo.datasets.dtypes`): a branch mapped to a
schema field must have the field's kind (no float -> int, no int -> float such as an ``int8`` ``PT``, no
int -> bool); integer widths are checked value by value for overflow; values a mapping computes for an integer
field (PIDs, charges) must be exact integers (211.5 is an error naming file, branch and entry, never 211).
Every counter branch is cross-checked against the length of every jagged branch of its collection.

A collection the mapping builds from the file's own objects (e.g. Delphes ``GenJet``) may have a fallback
(:class:`~hepzoo.datasets.mapping.ComputedCollection`, e.g. anti-kt jets clustered from ``Particle``) used when
the file lacks the primary branches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import awkward as ak
import numpy as np

from hepzoo.datasets import schema
from hepzoo.datasets.chunks import collection_layout, make_chunk
from hepzoo.datasets.dtypes import SchemaError, cast_flat, dtype_ok
from hepzoo.datasets.mapping import SCALAR_DEFAULTS, CollectionMapping, ComputedCollection, Derived

__all__ = ["build_mapped", "plan_mapped"]


def _present(reader: Any, source: CollectionMapping | ComputedCollection) -> bool:
    return all(b in reader.branches for b in source.source_branches())


def _first_fraction(reader: Any, name: str) -> str:
    """`` (entry E holds V)`` for the first non-integer value of float branch ``name`` ('' if none/unreadable)."""
    try:
        values = reader.branches[name].array(library="ak")
        flat = ak.to_numpy(ak.flatten(values, axis=None))
        bad = np.flatnonzero(~np.isfinite(flat) | (flat != np.round(flat)))
        if bad.size == 0:
            return ""
        counts = ak.to_numpy(ak.num(values, axis=1)) if values.ndim > 1 else np.ones(len(values), np.int64)
        entry = int(np.searchsorted(np.cumsum(counts), bad[0], side="right"))
        return f"; entry {entry} holds {flat[bad[0]]}"
    except Exception:  # noqa: BLE001 - the dtype error stands without the example
        return ""


def _check_source_dtype(reader: Any, name: str, found: np.dtype, expected: np.dtype, what: str) -> None:
    if dtype_ok(found, expected, reader.strict):
        return
    detail = ""
    if expected.kind in "iu" and found.kind == "f":
        detail = f" (a float branch is never truncated to an integer{_first_fraction(reader, name)})"
    elif expected.kind == "f" and found.kind in "iub":
        detail = " (an integer branch would clip or quantise a float quantity)"
    raise SchemaError(
        f"{reader.path}: branch {name!r} ({what}) has dtype {found}, expected {expected}{detail}: mapped layouts "
        "follow the native reader's dtype rules" + (" (strict)" if reader.strict else "")
    )


def plan_mapped(reader: Any, collections: Sequence[str] | None) -> None:
    """Choose each collection's source, check every source branch exists with a usable dtype; sets
    ``reader.prefixes``, ``reader.sources`` and ``reader.read_names``."""
    m = reader.mapping
    provided = list(m.collections) + [p for p in m.fallbacks if p not in m.collections]
    if collections is None:  # every mapped collection; one with a fallback only where the file has its branches
        prefixes = [p for p in schema.COLLECTIONS if p in m.collections
                    and (p not in m.fallbacks or _present(reader, m.collections[p]))]
    else:
        missing = [c for c in collections if c not in provided]
        if missing:
            raise SchemaError(f"{reader.path}: the branch mapping for {m.tree!r} does not provide {missing}")
        prefixes = [p for p in schema.COLLECTIONS if p in collections]
    reader.prefixes = prefixes
    reader.sources = {}
    for p in prefixes:
        primary, fallback = m.collections.get(p), m.fallbacks.get(p)
        source = primary if primary is not None and (fallback is None or _present(reader, primary)) else fallback
        if source is fallback and fallback is not None and not _present(reader, fallback) and primary is not None:
            source = primary  # neither is complete: name the primary's missing branch
        reader.sources[p] = source
        fields = {f.name: np.dtype(f.dtype) for f in schema.COLLECTIONS[p].fields}
        counter = source.counter
        for b in source.source_branches():
            found = reader._require(b, f"source of collection {p!r}", jagged=(b != counter))
            if b == counter and found.kind not in "iu":
                raise SchemaError(f"{reader.path}: counter branch {b!r} has dtype {found}, expected an integer")
        if isinstance(source, CollectionMapping):
            for name, src in source.fields.items():
                if isinstance(src, str):
                    found = reader._require(src, f"field {p}_{name}", jagged=True)
                    _check_source_dtype(reader, src, found, fields[name], f"field {p}_{name}")
    for k, src in m.scalars.items():
        for b in [src] if isinstance(src, str) else (src.inputs if isinstance(src, Derived) else ()):
            found = reader._require(b, f"source of event scalar {k!r}", jagged=False)
            if isinstance(src, str):
                _check_source_dtype(reader, b, found, schema.EVENT_SCALARS[k], f"event scalar {k!r}")
    names = [b for p in prefixes for b in reader.sources[p].source_branches()]
    names += m.source_branches([])  # scalars
    reader.read_names = set(names)


def _eval(src: Any, arrays: dict[str, ak.Array]) -> ak.Array:
    if isinstance(src, str):
        return arrays[src]
    return src.fn(*[arrays[b] for b in src.inputs])


def _label(src: Any) -> str:
    return src if isinstance(src, str) else f"computed from {', '.join(src.inputs)}"


def build_mapped(reader: Any, arrays: dict[str, ak.Array], start: int) -> ak.Array:
    """One chunk of the schema layout from the source ``arrays`` of entries ``start...`` (see the module)."""
    m, path = reader.mapping, reader.path
    length = len(next(iter(arrays.values())))
    scalars: dict[str, np.ndarray] = {}
    for k, dt in schema.EVENT_SCALARS.items():
        src = m.scalars.get(k)
        if src is None:
            value = np.arange(start, start + length) if k == "event_id" else np.full(length, SCALAR_DEFAULTS[k])
            scalars[k] = np.asarray(value).astype(dt)
        elif isinstance(src, (str, Derived)):
            value = np.asarray(ak.to_numpy(_eval(src, arrays)))
            scalars[k] = cast_flat(value, dt, path, _label(src), lambda i: start + i)
        else:
            scalars[k] = np.full(length, src).astype(dt)
    colls = {}
    for p in reader.prefixes:
        source = reader.sources[p]
        coll = schema.COLLECTIONS[p]
        jagged = [b for b in source.source_branches() if b != source.counter]
        counts = {b: np.asarray(ak.num(arrays[b], axis=1), dtype=np.int64) for b in jagged}
        if source.counter:
            counts = {source.counter: ak.to_numpy(arrays[source.counter]).astype(np.int64), **counts}
        c = reader._check_counts(p, counts, start, None)
        if isinstance(source, ComputedCollection):
            for b in source.inputs:  # clustering must not see NaN/inf (the runtime checks see only its output)
                flat = ak.to_numpy(ak.flatten(arrays[b], axis=None))
                if flat.dtype.kind == "f" and not np.isfinite(flat).all():
                    i = int(np.flatnonzero(~np.isfinite(flat))[0])
                    entry = start + int(np.searchsorted(np.cumsum(counts[b]), i, side="right"))
                    raise SchemaError(f"{path}: branch {b!r} value {flat[i]} at entry {entry} is not finite "
                                      f"(the {p} collection is computed from it)")
            records = source.fn(*[arrays[b] for b in source.inputs])
            values = {f: records[f] for f in coll.field_names}
            labels = {f: f"{p}_{f} {_label(source)}" for f in coll.field_names}
            c = np.asarray(ak.num(records, axis=1), dtype=np.int64)
        else:
            values = {name: _eval(src, arrays) for name, src in source.fields.items()}
            labels = {name: _label(src) for name, src in source.fields.items()}
            if source.selection is not None:
                mask = _eval(source.selection, arrays)
                values = {k: v[mask] for k, v in values.items()}
                c = np.asarray(ak.num(mask[mask], axis=1), dtype=np.int64)
        ev_of = np.repeat(np.arange(length), c)
        flats = {}
        for f in coll.fields:
            if f.name in values:
                flat = ak.to_numpy(ak.flatten(values[f.name], axis=1))
                flats[f.name] = cast_flat(flat, np.dtype(f.dtype), path, labels[f.name], lambda i: start + int(ev_of[i]))
            else:
                flats[f.name] = np.full(int(c.sum()), source.defaults[f.name], dtype=f.dtype)
        colls[p] = collection_layout(flats, c)
    return make_chunk(scalars, colls, length)
