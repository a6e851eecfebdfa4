"""Input value checks of the runtime: refuse inputs a model must not run on, before running it.

The limits are the value policy declared once in :mod:`hepzoo.datasets.schema` (``ELEMENT_POLICY`` for MLPF
element rows, ``VALUE_POLICY``/``SCALAR_POLICY`` for the collections a model reads): every value finite and
``|x| <= MAX_ABS_VALUE``; pT, energies and widths >= 0; |eta| and phi (sin/cos) in range; charges in {-1, 0, +1}
(tracks -1 or +1); PDG ids valid; counts non-negative integers; enums among their values.

Each error is one line naming the event (the caller's ``first_event`` + its index), the element or object
(index within the event, and its type) and the feature or branch, plus how many values break the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hepzoo.datasets.dtypes import bad_events, first_violation
from hepzoo.datasets.schema import (
    ELEMENT_FEATURE_NAMES,
    ELEMENT_POLICY,
    FINITE,
    MAX_ABS_VALUE,
    TRACK_CHARGE,
    ElementFeature,
    ValueRule,
    ElementType,
)

__all__ = ["MAX_ABS_VALUE", "bad_events", "check_collections", "check_elements", "check_outputs", "check_track_charges"]


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


def _refuse(rows, offsets, names, first_event, bad: np.ndarray, column: int, reason: str) -> None:
    """Raise for the first True of ``bad`` (``[N]``, over the rows of ``column``)."""
    row = int(np.flatnonzero(bad)[0])
    event = int(np.searchsorted(offsets, row, side="right") - 1)
    feature = names[column] if column < len(names) else f"#{column}"
    raise ValueError(
        f"event {first_event + event}: element {row - int(offsets[event])}{_element_kind(rows, row, names)} has "
        f"{feature} = {rows[row, column]:g}: {reason} ({int(bad.sum())} such values in this input)"
    )


def _sign_only(rule: ValueRule) -> ValueRule:
    """The part of ``rule`` a caller's raw rows are held to: finite, magnitude and sign (``>= 0``/``> 0``)."""
    return rule if rule.low == 0 and rule.high is None and not rule.integer else FINITE


def check_elements(rows: np.ndarray, offsets: np.ndarray, feature_names: Sequence[str] | None, first_event: int,
                   full: bool = False) -> None:
    """Refuse element rows that break ``schema.ELEMENT_POLICY`` (non-finite first, then column by column).

    ``full``: every rule of the policy (rows computed from events, :meth:`Session.run`); otherwise (a caller's
    raw rows, ``run_elements``/``submit``) finite, ``|x| <= MAX_ABS_VALUE`` and the sign rules (pT, energies,
    widths >= 0). ``offsets`` start at 0 and index ``rows``; ``feature_names`` are the card's (schema order if
    None)."""
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
    by_name = {ELEMENT_FEATURE_NAMES[f]: rule for f, rule in ELEMENT_POLICY.items()}
    for column in range(rows.shape[1]):
        rule = by_name.get(names[column], FINITE) if column < len(names) else FINITE
        rule = rule if full else _sign_only(rule)
        for bad, reason in rule.tests(rows[:, column]):
            if bad.any():
                _refuse(rows, offsets, names, first_event, bad, column, reason)


def check_track_charges(rows: np.ndarray, offsets: np.ndarray, feature_names: Sequence[str] | None, first_event: int) -> None:
    """Refuse tracks whose charge is not exactly -1 or +1 (``schema.TRACK_CHARGE``)."""
    names = list(feature_names) if feature_names else list(ELEMENT_FEATURE_NAMES)
    type_col, charge_col = _column(names, ElementFeature.TYPE), _column(names, ElementFeature.CHARGE)
    if type_col is None or charge_col is None or not rows.size:
        return
    allowed = np.array(TRACK_CHARGE.allowed, dtype=np.float64)
    bad = (rows[:, type_col] == float(ElementType.TRACK)) & ~np.isin(rows[:, charge_col], allowed)
    if bad.any():
        _refuse(rows, offsets, names, first_event, bad, charge_col, "a track charge must be -1 or +1")


# ---- collections a model reads (flash-sim generator objects, hepzoo run inputs) and outputs -------------------


def check_collections(events, prefixes: Sequence[str], first_entry: int, scalars: Sequence[str] = ()) -> None:
    """Refuse ``events`` (awkward) if a value of the schema collections ``prefixes`` (*all* objects, before any
    selection cut) or of the event ``scalars`` breaks ``schema.VALUE_POLICY``/``SCALAR_POLICY``.

    The error names the event (``first_entry`` + its index), the branch (``<prefix>_<field>``) and the object."""
    found = first_violation(events, prefixes, scalars)
    if found is not None:
        event, message = found
        raise ValueError(f"event {first_entry + event}: {message}")


def _first_bad(counts: np.ndarray, flat_index: int) -> tuple[int, int]:
    """(event, index within the event) of a flat row."""
    offsets = np.concatenate([[0], np.cumsum(counts)])
    event = int(np.searchsorted(offsets, flat_index, side="right") - 1)
    return event, flat_index - int(offsets[event])


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
