"""Event-size limits: refuse an event a model cannot hold in memory, and turn allocation failures into one line.

A release's card may set ``max_elements`` (most elements one event may have; cards without it use
:data:`hepzoo.export.card.MAX_ELEMENTS` of the registered model): ``mlpf-transformer`` materialises N x N
attention scores (about 18 GB at 16 000 elements) in exports before issue 20 (its contrib-attention export
grows linearly), ``mlpf-gnnlsh`` grows linearly. The session checks every
event against it before running (:func:`check_event_sizes`), ``hepzoo run`` checks every input file's
counters before anything is run or written (:func:`check_file_sizes`), and an allocation failure of the
backend (ONNX Runtime ``RuntimeException``/``Fail`` "Failed to allocate", numpy or torch out of memory)
becomes a :class:`EventTooLarge` naming the event and its size (:func:`allocation_error`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EventTooLarge", "allocation_error", "check_event_sizes", "check_file_sizes", "is_allocation_failure"]


class EventTooLarge(ValueError):
    """An event has more elements than the model's limit, or running it failed to allocate memory."""


def check_event_sizes(counts: np.ndarray, limit: int | None, first_event: int, model: str) -> None:
    """Refuse the first event of ``counts`` (elements per event) above ``limit`` (None: no limit)."""
    if limit is None or counts.size == 0:
        return
    over = np.flatnonzero(counts > limit)
    if over.size:
        i = int(over[0])
        more = f" ({over.size} events of this input are above it)" if over.size > 1 else ""
        raise EventTooLarge(
            f"event {first_event + i}: {int(counts[i])} elements, above the limit of {limit} elements per event of "
            f"{model} (card max_elements: the memory it needs grows with the event size){more}; nothing was run"
        )


def is_allocation_failure(error: BaseException) -> bool:
    """A backend's out-of-memory error (ONNX Runtime ``Failed to allocate``, ``MemoryError``, torch OOM)."""
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return "allocat" in text or "out of memory" in text or "bad_alloc" in text


def allocation_error(error: BaseException, events: np.ndarray, counts: np.ndarray, pad_size: int,
                     first_event: int, model: str, backend: str) -> EventTooLarge:
    """A one-line :class:`EventTooLarge` for an allocation failure while running ``events`` (indices into
    ``counts``) padded to ``pad_size`` elements: it names the largest event and its size."""
    largest = int(events[np.argmax(counts[events])])
    text = " ".join(str(error).split())
    found = re.search(r"failed to allocate[^.;:]*", text, re.IGNORECASE)  # ONNX Runtime: "... of size N"
    reason = found.group(0) if found else (text if len(text) <= 160 else text[:157] + "...")
    batch = f" in a batch of {len(events)} events" if len(events) > 1 else ""
    return EventTooLarge(
        f"event {first_event + largest}: {int(counts[largest])} elements (padded to {pad_size}{batch}): {backend} "
        f"could not allocate the memory to run {model} on it ({type(error).__name__}: {reason}); lower the "
        f"event size or the card's max_elements"
    )


def _counter_counts(reader: Any, prefix: str) -> np.ndarray:
    """Objects per entry of collection ``prefix`` of an open reader (its counter branch, else one branch)."""
    import awkward as ak

    from hepzoo.datasets import schema

    if reader.mapping is None:
        counter = reader.counters.get(prefix)
        source = counter or next(iter(schema.COLLECTIONS[prefix].branches))
    else:
        cm = reader.mapping.collections[prefix]
        counter = cm.counter
        source = counter or next(b for b in cm.source_branches())
    values = reader.branches[source].array(library="ak")
    if counter:
        return np.asarray(ak.to_numpy(values), dtype=np.int64)
    return np.asarray(ak.num(values, axis=1), dtype=np.int64)


def check_file_sizes(path: str | Path, collections: tuple[str, ...], limit: int | None, model: str,
                     mapping: Any = None) -> None:
    """Before a run: refuse ``path`` if one of its events has more elements (objects of ``collections``) than
    ``limit``; reads only counter branches. The error names the file and the entry."""
    if limit is None:
        return
    from hepzoo.datasets import io

    reader = io._FileReader(path, collections, mapping)
    try:
        total = sum(_counter_counts(reader, p) for p in reader.prefixes)
    except io.SchemaError:
        raise
    except Exception as err:  # noqa: BLE001 - a corrupt counter basket: the reader names it when it runs
        raise io.SchemaError(
            f"{path}: cannot read the counters of {list(collections)} (truncated or corrupt?): {type(err).__name__}: {err}"
        ) from err
    finally:
        reader.close()
    try:
        check_event_sizes(np.asarray(total), limit, 0, model)
    except EventTooLarge as error:
        raise EventTooLarge(f"{path}: entry {str(error).removeprefix('event ')}") from None
