"""Building in-memory chunks of the schema layout (shared by the native reader/packer in
:mod:`hepzoo.datasets.io` and the mapped reader in :mod:`hepzoo.datasets.mapped`).

A chunk is an awkward Array of records: the event scalars present (schema order) and one jagged record field
per collection (schema order), each collection built from flat per-field arrays and per-event counts.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from hepzoo.datasets import schema

__all__ = ["collection_layout", "make_chunk"]


def collection_layout(flats: dict[str, np.ndarray], counts: np.ndarray) -> ak.contents.ListOffsetArray:
    """One jagged collection from flat per-field arrays (``{field: values}``) and per-event ``counts``."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    content = ak.contents.RecordArray(
        [ak.contents.NumpyArray(np.ascontiguousarray(v)) for v in flats.values()],
        list(flats),
        length=int(offsets[-1]),
    )
    return ak.contents.ListOffsetArray(ak.index.Index64(offsets), content)


def make_chunk(
    scalars: dict[str, np.ndarray], collections: dict[str, ak.contents.Content], length: int
) -> ak.Array:
    """A chunk of ``length`` events from event scalars and collection layouts (fields in schema order)."""
    fields = [k for k in schema.EVENT_SCALARS if k in scalars] + [p for p in schema.COLLECTIONS if p in collections]
    contents = [
        ak.contents.NumpyArray(np.ascontiguousarray(scalars[k])) if k in scalars else collections[k] for k in fields
    ]
    return ak.Array(ak.contents.RecordArray(contents, fields, length=length))
