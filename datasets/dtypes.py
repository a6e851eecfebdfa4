"""Dtype rules of the reader, shared by our layout and the mapped (foreign) layouts.

A branch whose dtype differs from the schema is accepted when it has the same kind: any float width -> the
schema float, any integer width/signedness -> the schema integer, checked for overflow value by value (an
out-of-range value is a :class:`SchemaError` naming file, branch and entry). Kind changes (float <-> int,
int <-> bool) are errors. ``strict=True`` requires exact dtypes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import uproot

__all__ = ["SchemaError", "branch_dtype", "cast_flat", "dtype_ok"]


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
