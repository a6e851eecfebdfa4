"""Named fields of the flat arrays handed to Numba kernels (parameter vectors, output rows).

A kernel takes its scalar parameters as one float64 (or int64) vector and reads them by position. To keep the
positions and the packing from drifting apart, each such vector has ONE field list, an :class:`Fields` enum:

    class TrackPar(Fields):
        TRACKER_ETA_MAX = enum.auto()  # 0
        TRACK_PT_MIN = enum.auto()     # 1

The kernel indexes with the members (``par[TrackPar.TRACK_PT_MIN]``: Numba reads an IntEnum member of a
module-level enum as a compile-time integer constant, so this is as fast as a literal index), and the Python
side builds the vector from a ``{field name: value}`` mapping with :func:`pack`, which refuses a missing or an
unknown name. Fields named like a config attribute (upper case) are filled from it by :func:`from_config`.

Keep a field enum in the module of the kernel that reads it: Numba's on-disk cache (``cache=True``) is
invalidated only by changes to the kernel's own file, so an edit to a field list kept elsewhere would leave
stale machine code behind.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping

import numpy as np

__all__ = ["Fields", "pack", "from_config"]


class Fields(enum.IntEnum):
    """Base of the field enums: members written as ``NAME = enum.auto()`` number themselves 0, 1, 2, ..."""

    @staticmethod
    def _generate_next_value_(name, start, count, last_values):
        return count


@functools.cache
def _names(fields: type[Fields]) -> tuple[str, ...]:
    return tuple(f.name for f in fields)


def pack(fields: type[Fields], values: Mapping[str, object], dtype=np.float64) -> np.ndarray:
    """The vector of ``fields`` in field order from ``{field name: value}``; every field exactly once."""
    names = _names(fields)
    if values.keys() != set(names):
        missing = [n for n in names if n not in values]
        unknown = [n for n in values if n not in names]
        raise ValueError(f"pack({fields.__name__}): missing fields {missing}, unknown fields {unknown}")
    return np.array([values[n] for n in names], dtype=dtype)


def from_config(fields: type[Fields], config: object, **other: object) -> dict[str, object]:
    """``{field name: value}``: the fields named in ``other`` from there, every other field from the attribute
    of ``config`` with the same name in lower case (``TRACK_PT_MIN`` -> ``config.track_pt_min``)."""
    names = _names(fields)
    if other.keys() - set(names):
        raise ValueError(f"from_config({fields.__name__}): unknown fields {sorted(other.keys() - set(names))}")
    return {n: other[n] if n in other else getattr(config, n.lower()) for n in names}
