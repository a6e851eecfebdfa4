"""Interrupted ``hepzoo run``: SIGTERM removes the temporary output and exits non-zero; temporaries left by a
SIGKILL'd run are removed by the next run into the same folder; live writers' temporaries are never touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from hepzoo.datasets.atomic import remove_stale_temporaries, temporary_path  # noqa: E402
from hepzoo.datasets import io  # noqa: E402
from hepzoo.runtime.runfile import read_run_record  # noqa: E402


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_removed_live_and_foreign_ones_kept(tmp_path):
    mine = temporary_path(tmp_path / "a.root")
    assert mine.name.startswith(".a.root.") and f"-{os.getpid()}-" in mine.name and mine.name.endswith(".tmp")
    dead = Path(str(mine).replace(f"-{os.getpid()}-", f"-{_dead_pid()}-"))
    other_host = tmp_path / f".b.root.someotherhost-{_dead_pid()}-0123456789ab.tmp"
    legacy = tmp_path / ".c.root.0123456789ab.tmp"  # no pid in the name: not known to be ours, kept
    unrelated = tmp_path / "notes.tmp"
    for p in (mine, dead, other_host, legacy, unrelated):
        p.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (mine, other_host, legacy, unrelated))


def _start_run(source: Path, out: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "hepzoo.cli", "run", "mlpf-gnnlsh", "-i", str(source), "-o", str(out), "--step-size", "1",
            "--no-progress"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_temporary(proc: subprocess.Popen, out: Path) -> Path:
    """Wait until the run writes its temporary output (the run takes far longer than that)."""
    while True:
        found = list(out.glob(".*.tmp")) if out.is_dir() else []
        if found:
            return found[0]
        if proc.poll() is not None:
            pytest.fail(f"the run ended before writing: {proc.returncode} {proc.communicate()}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def long_input(tmp_path_factory, make_policy_events) -> Path:
    path = tmp_path_factory.mktemp("interrupted") / "events.root"
    with io.EventWriter(path) as writer:
        writer.write(make_policy_events([4] * 3000, [4] * 3000, seed=2))
    return path


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP], ids=["SIGKILL", "SIGTERM", "SIGHUP"])
def test_killed_run_leaves_nothing_after_the_next_run(long_input, tmp_path, sig):
    out = tmp_path / "out"
    proc = _start_run(long_input, out)
    tmp = _wait_for_temporary(proc, out)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0, stderr
    if sig != signal.SIGKILL:  # handled: the temporary is removed at once, one line says why
        assert proc.returncode == 128 + sig, stderr
        assert stderr.strip().splitlines() == [f"error: terminated by {sig.name}: stopped, no partial output left"]
        assert not tmp.exists()
    else:
        assert tmp.exists()  # SIGKILL cannot be handled: the next run cleans up
    assert not list(out.glob("*.root"))
    rerun = subprocess.run([sys.executable, "-m", "hepzoo.cli", "run", "mlpf-gnnlsh", "-i", str(long_input), "-o", str(out),
                            "--step-size", "3000", "--no-progress"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert [p.name for p in out.iterdir()] == ["events.mlpf-gnnlsh.root"]
    assert read_run_record(out / "events.mlpf-gnnlsh.root")["n_events"] == 3000


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_generation_leaves_nothing_after_the_next_one(tmp_path, sig):
    out = tmp_path / "gen"
    out.mkdir()
    args = [sys.executable, "-m", "hepzoo.cli", "generate", "gun", "-n", "100000", "--seed", "3", "--no-progress"]
    proc = subprocess.Popen([*args, "-o", str(out / "big.root")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tmp = _wait_for_temporary(proc, out)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    if sig != signal.SIGKILL:
        assert proc.returncode == 128 + sig, stderr
        assert stderr.strip().splitlines()[-1] == f"error: terminated by {sig.name}: stopped, no partial output left"
        assert not tmp.exists()
    else:
        assert proc.returncode == -sig and tmp.exists()  # cannot be handled: the next generation into the folder cleans up
    assert not (out / "big.root").exists()
    small = subprocess.run([*args[:6], "20", *args[7:], "-o", str(out / "small.root")], capture_output=True, text=True,
                           timeout=300)
    assert small.returncode == 0, small.stderr
    assert [p.name for p in out.iterdir()] == ["small.root"]
    assert io.num_entries(out / "small.root") == 20
