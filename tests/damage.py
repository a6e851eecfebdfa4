"""Helpers that damage test inputs (seeded): one value of a jagged field, one bit of a file."""

from __future__ import annotations

import awkward as ak
import numpy as np


def edit_flat(values: ak.Array, row: int, value, dtype=None) -> ak.Array:
    """``values`` (jagged) with flat element ``row`` set to ``value``, cast to ``dtype`` first if given."""
    flat = ak.to_numpy(ak.flatten(values)).copy()
    flat = flat.astype(dtype) if dtype is not None else flat
    flat[row] = value
    return ak.unflatten(flat, ak.num(values))


def set_value(events: ak.Array, prefix: str, field: str, event: int, k: int, value) -> ak.Array:
    """``events`` with object ``k`` of ``event`` in collection ``prefix`` given ``field = value``."""
    coll = events[prefix]
    counts = ak.num(coll, axis=1)
    row = int(ak.sum(counts[:event])) + k
    return ak.with_field(events, ak.with_field(coll, edit_flat(coll[field], row, value), field), prefix)


def bit_flipper(seed: int):
    """A function flipping one seeded bit of a file's bytes."""

    def flip(data: bytes) -> bytes:
        r = np.random.default_rng(seed)
        buf = bytearray(data)
        pos = int(r.integers(0, len(buf)))
        buf[pos] ^= 1 << int(r.integers(0, 8))
        return bytes(buf)

    return flip
