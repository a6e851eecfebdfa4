"""The one atomic writer (datasets.atomic) and the one ROOT writer (datasets.root_writer): a failure or an
interrupt leaves the target as it was and no temporary behind; a success publishes the complete file."""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest
import uproot

from hepzoo.datasets.atomic import atomic_output, replace_directory, write_text_atomic
from hepzoo.datasets.root_writer import ACTIVE_TEMPORARIES, AtomicTreeFile


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_output_publishes_and_creates_the_folder(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    with atomic_output(target, fsync=True) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.bin.") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"new")
        assert not target.exists()  # nothing visible before the block ends
    assert target.read_bytes() == b"new"
    assert _entries(target.parent) == ["out.bin"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_atomic_output_failure_keeps_the_previous_version(tmp_path, error):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(type(error)):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise error
    assert target.read_text() == "old"
    assert _entries(tmp_path) == ["out.txt"]


def test_atomic_output_refuses_a_writer_that_wrote_nothing(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(FileNotFoundError, match="out.txt"):
        with atomic_output(target):
            pass
    assert _entries(tmp_path) == []


def test_write_text_atomic_overwrites(tmp_path):
    target = tmp_path / "a.json"
    write_text_atomic(target, "1")
    write_text_atomic(target, "2")
    assert target.read_text() == "2" and _entries(tmp_path) == ["a.json"]


def test_replace_directory_swaps_and_restores_on_failure(tmp_path, monkeypatch):
    target, staging = tmp_path / "model", tmp_path / ".staging"
    target.mkdir()
    (target / "v").write_text("old")
    staging.mkdir()
    (staging / "v").write_text("new")
    replace_directory(staging, target)
    assert (target / "v").read_text() == "new" and _entries(tmp_path) == ["model"]

    staging.mkdir()
    (staging / "v").write_text("newer")
    import hepzoo.datasets.atomic as atomic

    real = atomic.os.replace
    calls = []

    def failing_second(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("no space")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_second)
    with pytest.raises(OSError, match="no space"):
        replace_directory(staging, target)
    monkeypatch.setattr(atomic.os, "replace", real)
    assert (target / "v").read_text() == "new"  # the previous folder is back in place
    assert sorted(_entries(tmp_path)) == [".staging", "model"]


def test_atomic_tree_file_commit_writes_tree_and_record(tmp_path):
    path = tmp_path / "out.root"
    with AtomicTreeFile(path, "events") as out:
        out.extend({"x": np.arange(3, dtype=np.int64)})
        out.extend({"x": np.arange(3, 5, dtype=np.int64)})
        assert not path.exists()
        out.commit("meta", {"n": 5})
    assert out.closed and out.tmp not in ACTIVE_TEMPORARIES
    with uproot.open(path) as f:
        assert f["events"]["x"].array(library="np").tolist() == [0, 1, 2, 3, 4]
        assert json.loads(str(f["meta"])) == {"n": 5}
    assert _entries(tmp_path) == ["out.root"]


def test_atomic_tree_file_exception_and_garbage_collection_leave_nothing(tmp_path):
    path = tmp_path / "out.root"
    path.write_bytes(b"previous")
    with pytest.raises(ValueError, match="bad chunk"):
        with AtomicTreeFile(path, "events") as out:
            out.extend({"x": np.arange(3, dtype=np.int64)})
            raise ValueError("bad chunk")
    assert path.read_bytes() == b"previous" and _entries(tmp_path) == ["out.root"]

    out = AtomicTreeFile(tmp_path / "other.root", "events")
    out.extend({"x": np.arange(3, dtype=np.int64)})
    tmp = out.tmp
    assert tmp.exists() and tmp in ACTIVE_TEMPORARIES
    del out
    gc.collect()
    assert not tmp.exists() and tmp not in ACTIVE_TEMPORARIES
    assert _entries(tmp_path) == ["out.root"]


def test_atomic_tree_file_block_left_without_commit_publishes_nothing(tmp_path):
    with AtomicTreeFile(tmp_path / "out.root", "events") as out:
        out.extend({"x": np.zeros(2)})
    assert out.closed and _entries(tmp_path) == []
    with pytest.raises(ValueError, match="after commit/abort"):
        out.extend({"x": np.zeros(2)})


def test_atomic_tree_file_names_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        AtomicTreeFile(tmp_path / "nowhere" / "out.root", "events")
