"""Atomic file writes: write a temporary file in the target's folder, then rename it over the target.

Why: a reader (or a re-run deciding what is complete) must never see a half-written file, and a failure
must leave the previous version in place. The temporary name is unique, so concurrent writers never share it.

Temporary names are ``.<target name>.<host>-<pid>-<12 hex>.tmp``: the writer's host and process id are in the
name, so a later run can tell a temporary left by a killed writer (same host, that process no longer exists)
from one still being written, and :func:`remove_stale_temporaries` removes only the former.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from pathlib import Path

__all__ = ["remove_stale_temporaries", "temporary_path", "write_bytes_atomic", "write_text_atomic"]

_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9]+)-(?P<pid>[0-9]+)-[0-9a-f]{12}\.tmp$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def temporary_path(path: str | os.PathLike) -> Path:
    """A unique hidden temporary name next to ``path`` (same folder, so the final rename is atomic)."""
    path = Path(path)
    return path.parent / f".{path.name}.{_host()}-{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's process, or not a pid we can test
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of :func:`temporary_path` in ``folder`` whose writer is gone (written on this host
    by a process that no longer exists: a killed run). Other files, and temporaries of live writers or of
    other hosts, are left alone. Returns the removed paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host, removed = _host(), []
    for entry in os.scandir(folder):
        match = _TEMPORARY.match(entry.name)
        if match is None or match["host"] != host or not entry.is_file(follow_symlinks=False):
            continue
        if not _alive(int(match["pid"])):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


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
