"""The one ROOT output writer: a TTree written chunk by chunk into a temporary file, renamed over the target on commit.

Every ROOT file hepzoo writes goes through :class:`AtomicTreeFile`: event files (``io.EventWriter`` adds the event
schema on top), the output of ``hepzoo run`` (:mod:`hepzoo.runtime.runfile`) and the write stage that the
benchmark times. The contract:

* the file is written under :func:`~hepzoo.datasets.atomic.temporary_path` next to the target; the target is
  touched only by :meth:`AtomicTreeFile.commit`, which writes the JSON metadata string, closes, fsyncs and renames;
* :meth:`AtomicTreeFile.abort`, an exception inside its ``with`` block, garbage collection or interpreter exit
  before ``commit`` remove the temporary and leave the target as it was;
* the temporaries being written by this process are listed in :data:`ACTIVE_TEMPORARIES`, so a signal handler
  (:func:`terminate_on_signals`, used by ``hepzoo run`` and ``hepzoo generate``) can remove them before the
  process exits without unwinding;
* the tree's branch types are fixed by the first :meth:`extend` (numpy arrays: flat branches; awkward records:
  jagged collections with a counter branch, uproot's ``mktree`` convention).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import uproot

from hepzoo.datasets.atomic import publish, temporary_path

__all__ = ["ACTIVE_TEMPORARIES", "AtomicTreeFile", "branch_types", "terminate_on_signals"]

ACTIVE_TEMPORARIES: set[Path] = set()  # temporary outputs being written by this process


def branch_types(arrays: dict[str, Any]) -> dict[str, Any]:
    """``mktree`` branch types of ``arrays``: a numpy array's dtype, an awkward array's record content type."""
    return {k: (v.dtype if isinstance(v, np.ndarray) else v.type.content) for k, v in arrays.items()}


def _discard(file: Any, tmp: Path) -> None:
    try:
        file.close()
    except Exception:  # noqa: BLE001 - the half-written file is removed anyway; the original error matters
        pass
    tmp.unlink(missing_ok=True)
    ACTIVE_TEMPORARIES.discard(tmp)


class AtomicTreeFile:
    """``with AtomicTreeFile(path, "events") as out: out.extend(arrays); ...; out.commit("meta_key", record)``.

    ``path``'s folder must exist (a clear error names it otherwise). ``commit`` without any ``extend`` writes a
    file without the tree, only the metadata (callers that need an empty tree call :meth:`make_tree` first).
    """

    def __init__(self, path: str | os.PathLike, tree_name: str):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"output folder {str(self.path.parent)!r} does not exist")
        self.tree_name = tree_name
        self.tmp = temporary_path(self.path)
        ACTIVE_TEMPORARIES.add(self.tmp)  # before it exists: a signal handler removes it
        try:
            self._file = uproot.recreate(self.tmp)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            ACTIVE_TEMPORARIES.discard(self.tmp)
            raise
        self._finalizer = weakref.finalize(self, _discard, self._file, self.tmp)
        self.tree: Any = None

    @property
    def closed(self) -> bool:
        """True once committed or aborted."""
        return not self._finalizer.alive

    def make_tree(self, types: dict[str, Any]) -> None:
        """Create the tree with these branch types (done by the first :meth:`extend` otherwise)."""
        if self.tree is not None:
            raise ValueError(f"{self.path}: tree {self.tree_name!r} already exists")
        self.tree = self._file.mktree(self.tree_name, types)

    def extend(self, arrays: dict[str, Any]) -> None:
        """Append one basket of entries (the first call fixes the branch types)."""
        if self.closed:
            raise ValueError(f"{self.path}: write after commit/abort")
        if self.tree is None:
            self.make_tree(branch_types(arrays))
        self.tree.extend(arrays)

    def commit(self, meta_key: str, record: dict[str, Any]) -> Path:
        """Store ``record`` as a JSON string under ``meta_key``, close, fsync and rename over ``path``."""
        if self.closed:
            raise ValueError(f"{self.path}: commit after commit/abort")
        try:
            self._file[meta_key] = json.dumps(record, sort_keys=True, default=str)
            self._file.close()
            publish(self.tmp, self.path, fsync=True)
        except BaseException:
            self.abort()
            raise
        self._finalizer.detach()
        ACTIVE_TEMPORARIES.discard(self.tmp)
        return self.path

    def abort(self) -> None:
        """Remove the temporary file; ``path`` is not touched."""
        self._finalizer()

    def __enter__(self) -> AtomicTreeFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.closed:
            # an exception, or a block left without commit: nothing is published
            self.abort()


@contextlib.contextmanager
def terminate_on_signals(signums: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)):
    """Within the block, SIGTERM and SIGHUP (what batch systems send) remove the temporary outputs being
    written, print one line and exit with 128 + the signal number (no unwinding that a finalizer could swallow)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        for tmp in list(ACTIVE_TEMPORARIES):
            tmp.unlink(missing_ok=True)
        message = f"error: terminated by {signal.Signals(signum).name}: stopped, no partial output left\n"
        os.write(2, message.encode())  # unbuffered: the interrupted code may be inside a buffered write
        os._exit(128 + signum)

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
