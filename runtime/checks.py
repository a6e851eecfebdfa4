"""Input value checks of the runtime: refuse inputs a model must not run on, before running it.

MLPF element rows (``schema.ElementFeature`` columns) are refused when a value is

* not finite (NaN, inf);
* absurd: ``|value| > MAX_ABS_VALUE`` in any feature (1e6: GeV for momenta and energies, mm for lengths; far
  beyond anything a collider detector measures, so such a value is a corrupt or mis-mapped input);
* negative where the quantity cannot be: ``NON_NEGATIVE`` (pT or cluster ET, momentum or energy);
* for tracks (event inputs): a charge that is not -1 or +1.

Each error is one line naming the event (the caller's ``first_event`` + its index), the element (index within
the event and its type) and the feature, plus how many values of the input break the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hepzoo.datasets.schema import ELEMENT_FEATURE_NAMES, ElementFeature, ElementType

__all__ = ["MAX_ABS_VALUE", "NON_NEGATIVE", "check_elements", "check_track_charges"]

MAX_ABS_VALUE = 1e6
NON_NEGATIVE = (ElementFeature.PT, ElementFeature.E)
TRACK_CHARGES = (-1.0, 1.0)


def _column(names: Sequence[str], feature: ElementFeature) -> int | None:
    name = ELEMENT_FEATURE_NAMES[feature]
    return list(names).index(name) if name in names else None


def _element_kind(rows: np.ndarray, row: int, names: Sequence[str]) -> str:
    col = _column(names, ElementFeature.TYPE)
    if col is None:
        return ""
    value = rows[row, col]
    kinds = {float(t): t.name.lower().replace("_", " ") for t in ElementType}
    return f" ({kinds[float(value)]})" if float(value) in kinds else ""


def _refuse(rows, offsets, names, first_event, bad: np.ndarray, column_of, reason: str) -> None:
    """Raise for the first True of ``bad`` (``[N]`` or ``[N, F]``); ``column_of``: the column of a 1-D ``bad``."""
    if bad.ndim == 1:
        row, column = int(np.flatnonzero(bad)[0]), column_of
    else:
        row, column = (int(i) for i in np.argwhere(bad)[0])
    event = int(np.searchsorted(offsets, row, side="right") - 1)
    feature = names[column] if column < len(names) else f"#{column}"
    raise ValueError(
        f"event {first_event + event}: element {row - int(offsets[event])}{_element_kind(rows, row, names)} has "
        f"{feature} = {rows[row, column]:g}: {reason} ({int(bad.sum())} such values in this input)"
    )


def check_elements(rows: np.ndarray, offsets: np.ndarray, feature_names: Sequence[str] | None, first_event: int) -> None:
    """Refuse non-finite, absurd (``|x| > MAX_ABS_VALUE``) and negative pT/energy values of element rows.

    ``offsets`` start at 0 and index ``rows``; ``feature_names`` are the card's (schema order if None)."""
    names = list(feature_names) if feature_names else list(ELEMENT_FEATURE_NAMES)
    bad = ~np.isfinite(rows)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        event = int(np.searchsorted(offsets, row, side="right") - 1)
        feature = names[column] if column < len(names) else f"#{column}"
        raise ValueError(
            f"event {first_event + event}: element {row - int(offsets[event])} has a non-finite value "
            f"{rows[row, column]} in feature {feature!r} ({int(bad.sum())} non-finite values in this input)"
        )
    if not rows.size:
        return
    huge = np.abs(rows) > MAX_ABS_VALUE
    if huge.any():
        _refuse(rows, offsets, names, first_event, huge, None, f"|value| above {MAX_ABS_VALUE:g}, not a physical value")
    for feature in NON_NEGATIVE:
        col = _column(names, feature)
        if col is not None and (rows[:, col] < 0).any():
            _refuse(rows, offsets, names, first_event, rows[:, col] < 0, col, "negative, must be >= 0")


def check_track_charges(rows: np.ndarray, offsets: np.ndarray, feature_names: Sequence[str] | None, first_event: int) -> None:
    """Refuse tracks whose charge is not exactly -1 or +1 (a fractional, zero or out-of-range charge)."""
    names = list(feature_names) if feature_names else list(ELEMENT_FEATURE_NAMES)
    type_col, charge_col = _column(names, ElementFeature.TYPE), _column(names, ElementFeature.CHARGE)
    if type_col is None or charge_col is None or not rows.size:
        return
    bad = (rows[:, type_col] == float(ElementType.TRACK)) & ~np.isin(rows[:, charge_col], TRACK_CHARGES)
    if bad.any():
        _refuse(rows, offsets, names, first_event, bad, charge_col, "a track charge must be -1 or +1")


# ---- generator objects (flash-sim inputs) and outputs ---------------------------------------------------------

NON_NEGATIVE_FIELDS = ("pt", "e")


def _first_bad(events_counts: np.ndarray, flat_index: int) -> tuple[int, int]:
    """(event, index within the event) of a flat row."""
    offsets = np.concatenate([[0], np.cumsum(events_counts)])
    event = int(np.searchsorted(offsets, flat_index, side="right") - 1)
    return event, flat_index - int(offsets[event])


def check_collections(events, prefixes: Sequence[str], first_entry: int) -> None:
    """Refuse non-finite, absurd (``|x| > MAX_ABS_VALUE``) and negative pT/energy values in the float fields of
    the schema collections ``prefixes`` of ``events`` (awkward), *all* objects, before any selection cut.

    The error names the event (``first_entry`` + its index), the branch (``<prefix>_<field>``) and the object."""
    import awkward as ak

    from hepzoo.datasets.schema import COLLECTIONS

    for prefix in prefixes:
        if prefix not in events.fields:
            continue
        coll = events[prefix]
        counts = None
        for field in COLLECTIONS[prefix].fields:
            if np.dtype(field.dtype).kind != "f" or field.name not in coll.fields:
                continue
            values = ak.to_numpy(ak.flatten(coll[field.name], axis=1))
            finite = np.isfinite(values)
            rules = ((~finite, "not a finite value"),
                     (finite & (np.abs(values) > MAX_ABS_VALUE), f"|value| above {MAX_ABS_VALUE:g}, not a physical value"))
            if field.name in NON_NEGATIVE_FIELDS:
                rules += ((values < 0, "negative, must be >= 0"),)
            for bad, reason in rules:
                if bad.any():
                    counts = np.asarray(ak.num(coll, axis=1)) if counts is None else counts
                    event, k = _first_bad(counts, int(np.flatnonzero(bad)[0]))
                    raise ValueError(
                        f"event {first_entry + event}: {COLLECTIONS[prefix].branch(field.name)} of object {k} is "
                        f"{values[bad][0]:g}: {reason} ({int(bad.sum())} such values in this input)"
                    )


def check_outputs(objects, first_entry: int, what: str) -> None:
    """Refuse to hand out (or write) reconstructed objects with a non-finite float field; ``what`` names them."""
    import awkward as ak

    for name in objects.fields:
        values = ak.to_numpy(ak.flatten(objects[name], axis=None))
        if values.dtype.kind != "f" or np.isfinite(values).all():
            continue
        if objects[name].ndim != 2:  # e.g. cls_prob [n_classes] per object: name the first bad row's object
            values = ak.to_numpy(ak.flatten(ak.all(np.isfinite(objects[name]), axis=-1), axis=1))
            bad = ~values
        else:
            bad = ~np.isfinite(values)
        event, k = _first_bad(np.asarray(ak.num(objects, axis=1)), int(np.flatnonzero(bad)[0]))
        raise ValueError(
            f"event {first_entry + event}: output {what} object {k} has a non-finite {name} "
            f"({int(bad.sum())} such objects in this chunk): not written"
        )
