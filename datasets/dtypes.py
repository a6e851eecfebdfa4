"""Dtype rules of the reader, shared by our layout and the mapped (foreign) layouts.

A branch whose dtype differs from the schema is accepted when it has the same kind: any float width -> the
schema float, any integer width/signedness -> the schema integer, checked for overflow value by value (an
out-of-range value is a :class:`SchemaError` naming file, branch and entry). Kind changes (float <-> int,
int <-> bool) are errors. ``strict=True`` requires exact dtypes.

Values: :func:`value_violations` applies the value policy declared in :mod:`hepzoo.datasets.schema`
(``VALUE_POLICY``, ``SCALAR_POLICY``) to a chunk in the schema layout; the runtime checks, ``hepzoo run`` and the
reader (``check_values=True``) all use it, so the limits live in one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import uproot

__all__ = ["SchemaError", "Violation", "bad_events", "branch_dtype", "cast_flat", "dtype_ok", "first_violation", "value_violations"]


class SchemaError(ValueError):
    """A file or chunk does not follow the event schema; the message names the file, branch and event."""


def branch_dtype(branch: Any) -> tuple[np.dtype | None, bool]:
    """(native numpy dtype or None if not a plain number, jagged?) of a TBranch."""
    interp = branch.interpretation
    if isinstance(interp, uproot.interpretation.jagged.AsJagged):
        content = interp.content
        if isinstance(content, uproot.interpretation.numerical.AsDtype) and content.to_dtype.shape == ():
            return content.to_dtype, True
        return None, True
    if isinstance(interp, uproot.interpretation.numerical.AsDtype) and interp.to_dtype.shape == ():
        return interp.to_dtype, False
    return None, False


def dtype_ok(found: np.dtype, expected: np.dtype, strict: bool) -> bool:
    if found == expected:
        return True
    if strict:
        return False
    if expected.kind == "f":
        return found.kind == "f"
    if expected.kind in "iu":
        return found.kind in "iu"
    return False


def cast_flat(values: np.ndarray, dtype: np.dtype, path: Path, branch: str, entry_of: Any) -> np.ndarray:
    """``values`` as ``dtype``; integers checked for overflow, values computed as floats for an integer field
    checked to be exact integers (211.5 is not a PDG id), each naming the first bad value's entry."""
    if values.dtype == dtype:
        return values
    if dtype.kind in "iu" and values.dtype.kind == "f" and values.size:
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SchemaError(
                f"{path}: branch {branch!r} value {values[i]} at entry {entry_of(i)} is not an integer "
                f"(field {dtype}: never truncated)"
            )
    if dtype.kind in "iu" and values.size:
        info = np.iinfo(dtype)
        bad = (values < info.min) | (values > info.max)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SchemaError(
                f"{path}: branch {branch!r} value {values[i]} at entry {entry_of(i)} does not fit {dtype}"
            )
    if dtype.kind == "b" and values.dtype.kind != "b":
        raise SchemaError(f"{path}: branch {branch!r} gives {values.dtype} values for a bool field")
    with np.errstate(over="ignore"):  # float64 beyond float32: inf, refused by the runtime's finiteness checks
        return values.astype(dtype)


# ---- the value policy applied to chunks -------------------------------------------------------------------------


@dataclass
class Violation:
    """One part of a policy rule broken by some values of one branch: ``bad`` marks them among the flat
    ``values``; ``counts`` (objects per event) is None for an event scalar."""

    branch: str
    reason: str
    bad: np.ndarray
    values: np.ndarray
    counts: np.ndarray | None

    def event_of(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(event, object within the event or None) of flat value indices."""
        if self.counts is None:
            return flat, None
        ends = np.cumsum(self.counts)
        event = np.searchsorted(ends, flat, side="right")
        return event, flat - (ends[event] - self.counts[event])

    def describe(self, flat: int) -> str:
        """``<branch> of object <k> is <value>: <reason>`` for flat value ``flat`` (no event)."""
        _, k = self.event_of(np.array([flat]))
        where = f" of object {int(k[0])}" if k is not None else ""
        return f"{self.branch}{where} is {self.values[flat]:g}: {self.reason}"


def value_violations(events: Any, prefixes: Sequence[str], scalars: Sequence[str] = ()) -> Iterator[Violation]:
    """Every policy rule part broken by ``events`` (awkward, schema layout): collections ``prefixes`` (all their
    objects, before any selection), fields in schema order, then the event scalars ``scalars`` that have a rule."""
    import awkward as ak

    from hepzoo.datasets import schema

    for p in prefixes:
        if p not in events.fields:
            continue
        coll, counts = events[p], None
        for f in schema.COLLECTIONS[p].fields:
            if f.name not in coll.fields or np.dtype(f.dtype).kind == "b":
                continue
            values = ak.to_numpy(ak.flatten(coll[f.name], axis=1))
            for bad, reason in schema.value_rule(p, f.name).tests(values):
                if bad.any():
                    counts = np.asarray(ak.num(coll, axis=1), dtype=np.int64) if counts is None else counts
                    yield Violation(schema.COLLECTIONS[p].branch(f.name), reason, bad, values, counts)
    for k in scalars:
        rule = schema.SCALAR_POLICY.get(k)
        if rule is None or k not in events.fields:
            continue
        values = ak.to_numpy(events[k])
        for bad, reason in rule.tests(values):
            if bad.any():
                yield Violation(k, reason, bad, values, None)


def first_violation(events: Any, prefixes: Sequence[str], scalars: Sequence[str] = ()) -> tuple[int, str] | None:
    """(event index, one-line message) of the first policy violation of ``events`` (None: all values pass);
    the message names the branch, the object and how many values break the same rule."""
    for v in value_violations(events, prefixes, scalars):
        flat = int(np.flatnonzero(v.bad)[0])
        event, _ = v.event_of(np.array([flat]))
        return int(event[0]), f"{v.describe(flat)} ({int(v.bad.sum())} such values in this input)"
    return None


def bad_events(events: Any, prefixes: Sequence[str], scalars: Sequence[str] = ()) -> dict[int, str]:
    """Every event of ``events`` that breaks the policy -> the first violation found in it (one line)."""
    found: dict[int, str] = {}
    for v in value_violations(events, prefixes, scalars):
        flat = np.flatnonzero(v.bad)
        event, _ = v.event_of(flat)
        first_of_event = np.unique(event, return_index=True)[1]
        for i in first_of_event:
            found.setdefault(int(event[i]), v.describe(int(flat[i])))
    return dict(sorted(found.items()))
