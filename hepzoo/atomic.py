"""Atomic file writes: write a temporary file in the target's folder, then rename it over the target.

Why: a reader (or a re-run deciding what is complete) must never see a half-written file, and a failure
must leave the previous version in place. The temporary name is unique, so concurrent writers never share it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["temporary_path", "write_bytes_atomic", "write_text_atomic"]


def temporary_path(path: str | os.PathLike) -> Path:
    """A unique hidden temporary name next to ``path`` (same folder, so the final rename is atomic)."""
    path = Path(path)
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating the folder); the temporary file is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"))
