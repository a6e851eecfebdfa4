"""Atomic file writes, the one implementation every layer uses: write a temporary file in the target's folder,
then rename it over the target.

Why: a reader (or a re-run deciding what is complete) must never see a half-written file, and a failure
must leave the previous version in place. The temporary name is unique, so concurrent writers never share it.

* :func:`atomic_output` — context manager yielding the temporary path to write (by any writer: ``torch.save``,
  uproot, ``onnx.save``, ...); on a clean exit the file is (optionally) fsynced and renamed over the target, on
  an exception or interrupt the temporary is removed and the target is untouched;
* :func:`write_bytes_atomic`, :func:`write_text_atomic` — the same for an in-memory payload;
* :func:`replace_directory` — moves a completed staging folder over a target folder (the old copy is removed
  only after the new one is in place);
* :func:`temporary_path`, :func:`remove_stale_temporaries` — the naming scheme and the clean-up of temporaries
  left by killed writers.

It lives in the lowest layer (schema and I/O) so that every layer above can import it.

Temporary names are ``.<target name>.<host>-<pid>-<12 hex>.tmp``: the writer's host and process id are in the
name, so a later run can tell a temporary left by a killed writer (same host, that process no longer exists)
from one still being written, and :func:`remove_stale_temporaries` removes only the former.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_output",
    "fsync_file",
    "publish",
    "remove_stale_temporaries",
    "replace_directory",
    "temporary_path",
    "write_bytes_atomic",
    "write_text_atomic",
]

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


def fsync_file(path: str | os.PathLike) -> None:
    """Flush ``path``'s data to disk (before a rename makes it visible, so a crash cannot leave an empty file)."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def publish(tmp: str | os.PathLike, path: str | os.PathLike, *, fsync: bool = False) -> Path:
    """Make the completed temporary ``tmp`` (from :func:`temporary_path`) visible as ``path``: fsync it when
    ``fsync``, then rename it over ``path`` in one step. The writers above and the ROOT writer all end here."""
    if fsync:
        fsync_file(tmp)
    os.replace(tmp, path)
    return Path(path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a unique temporary path next to ``path`` (its folder is created); write the file there.

    On a clean exit the temporary must exist; it is fsynced when ``fsync`` and renamed over ``path``. On any
    exception (KeyboardInterrupt included) the temporary is removed, ``path`` keeps its previous content, and
    the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{path}: the writer left no file at its temporary path {tmp.name}")
        publish(tmp, path, fsync=fsync)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (creating the folder); the temporary file is removed on failure."""
    with atomic_output(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)


def replace_directory(staging: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move the completed folder ``staging`` to ``target`` (same parent folder). An existing ``target`` is first
    renamed aside and removed only once the new folder is in place; if the move fails it is put back."""
    staging, target = Path(staging), Path(target)
    if not target.exists():
        os.replace(staging, target)
        return target
    old = temporary_path(target)
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target
