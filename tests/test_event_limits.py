"""Allocation failures: a per-model element limit in the card, checked by the session and (before anything
runs) by hepzoo run; an allocation failure of the backend becomes one line naming the event and its size."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from hepzoo.datasets import io  # noqa: E402
from hepzoo.export.card import CARD, load_card  # noqa: E402
from hepzoo.export.zoo import find_release  # noqa: E402
from hepzoo.runtime import Session  # noqa: E402
from hepzoo.runtime.limits import EventTooLarge  # noqa: E402


LIMIT = 40


def _release_with_limit(tmp_path: Path, name: str, limit: int | None) -> Path:
    folder = tmp_path / name / "1"
    folder.mkdir(parents=True)
    for file in (CARD, "model.onnx"):
        shutil.copyfile(find_release(name).path / file, folder / file)
    card = json.loads((folder / CARD).read_text())
    card["max_elements"] = limit
    (folder / CARD).write_text(json.dumps(card))
    return folder


def test_released_mlpf_cards_carry_a_limit():
    assert load_card(find_release("mlpf-transformer").path).max_elements == 32768  # re-carded (export/buckets.py)
    assert load_card(find_release("mlpf-gnnlsh").path).max_elements >= 100_000  # linear in the event size
    assert Session.load("flashsim-jet").max_elements is None


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    return Session.load(_release_with_limit(tmp_path_factory.mktemp("lim"), "mlpf-gnnlsh", LIMIT),
                        backend="onnxruntime-cpu")


def test_event_above_the_limit_is_refused_before_running(limited, monkeypatch, make_features):
    calls = []
    monkeypatch.setattr(limited.backend, "run", lambda inputs: calls.append(1))
    x, off = make_features([10, LIMIT + 7, 5, LIMIT + 1], seed=1)
    with pytest.raises(EventTooLarge) as info:
        limited.run_elements(x, off, first_event=100)
    assert str(info.value) == (
        f"event 101: {LIMIT + 7} elements, above the limit of {LIMIT} elements per event of mlpf-gnnlsh (card "
        "max_elements: the memory it needs grows with the event size) (2 events of this input are above it); "
        "nothing was run"
    )
    assert calls == []
    one = x[off[1] : off[2]]
    with pytest.raises(EventTooLarge, match=rf"event 0: {LIMIT + 7} elements, above the limit of {LIMIT}"):
        limited.submit(one).result()


def test_batches_hold_at_most_the_limit(limited, monkeypatch, make_features):
    seen = []
    real = limited.backend.run

    def spy(inputs):
        seen.append(inputs["features"].shape)
        return real(inputs)

    monkeypatch.setattr(limited.backend, "run", spy)
    x, off = make_features([LIMIT] * 5 + [3], seed=2)
    out = limited.run_elements(x, off, batch_size=32, buckets=[64])
    assert all(b * n <= max(LIMIT, n) for b, n, _ in seen), seen
    assert sum(b for b, _, _ in seen) == 6
    monkeypatch.setattr(limited.backend, "run", real)
    ref = Session.load("mlpf-gnnlsh", backend="onnxruntime-cpu").run_elements(x, off, batch_size=1, buckets=[64])
    for k in ref:
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-5, atol=1e-5)


def test_allocation_failure_is_one_line_naming_the_event(monkeypatch, tmp_path, make_features, make_policy_events):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    limited = Session.load("mlpf-gnnlsh", backend="onnxruntime-cpu")  # its own limit (large): events batched

    def fail(inputs):
        raise Fail("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running FusedMatMul node.\n"
                   " Status Message: bfc_arena.cc:360 Failed to allocate memory for requested buffer of size 123456")

    monkeypatch.setattr(limited.backend, "run", fail)
    x, off = make_features([3, 30, 12], seed=3)
    with pytest.raises(EventTooLarge) as info:
        limited.run_elements(x, off, first_event=10)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("event 11: 30 elements (padded to 64 in a batch of 3 events): onnxruntime-cpu could not "
                              "allocate the memory to run mlpf-gnnlsh on it (Fail: Failed to allocate memory for "
                              "requested buffer of size 123456)")
    monkeypatch.setattr(limited.backend, "run", lambda inputs: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other failures are not dressed up as memory
        limited.run_elements(x, off)
    source = tmp_path / "events.root"
    with io.EventWriter(source) as writer:
        writer.write(make_policy_events([2, 3], [1, 2], seed=1))
    monkeypatch.setattr(limited.backend, "run", fail)
    with pytest.raises(EventTooLarge, match=rf"^{source}: entries 0-1: event [01]: [0-9]+ elements \(padded to"):
        limited.run_file(source, tmp_path / "out.root")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.root"]


def _cli(args, env=None, limit_bytes=None):
    def limit():
        if limit_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    code = "import sys; from hepzoo.cli import app; sys.argv = ['hepzoo'] + sys.argv[1:]; app()"
    return subprocess.run([sys.executable, "-c", code, "run", *args, "--no-progress"], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, preexec_fn=limit, timeout=300)


def test_cli_checks_every_file_before_running(tmp_path, make_policy_events):
    release = _release_with_limit(tmp_path, "mlpf-gnnlsh", LIMIT)
    small, big = tmp_path / "a_small.root", tmp_path / "b_big.root"
    with io.EventWriter(small) as writer:
        writer.write(make_policy_events([2, 3], [1, 2], seed=1))
    with io.EventWriter(big) as writer:
        writer.write(make_policy_events([2, 30, 1], [1, 20, 2], seed=2))
    proc = _cli([str(release), "-i", str(small), "-i", str(big), "-o", str(tmp_path / "out")])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {big}: entry 1: 50 elements, above the limit of {LIMIT} elements per event of mlpf-gnnlsh (card "
        "max_elements: the memory it needs grows with the event size); nothing was run"
    ]
    assert not (tmp_path / "out").exists()  # not even the small file's output: checked before running


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS makes the allocation fail for real (Linux)")
def test_real_allocation_failure_through_the_cli(tmp_path, make_policy_events):
    """mlpf-transformer on a 20 000-element event (limit raised in a copied card) in a process limited to 4 GB of
    address space: ONNX Runtime fails to allocate the N x N attention scores; one line, no output left. A release
    exported with ORT's linear-memory contrib attention is expanded back into the N x N form (and re-hashed)."""
    import onnx

    from hepzoo.export.zoo import sha256_of
    from hepzoo.runtime.attention_expand import expand_contrib_attention, has_contrib_attention

    release = _release_with_limit(tmp_path, "mlpf-transformer", 10**6)
    model = onnx.load(str(release / "model.onnx"))
    if has_contrib_attention(model):
        onnx.save(expand_contrib_attention(model), str(release / "model.onnx"))
        card = json.loads((release / CARD).read_text())
        card["onnx"]["sha256"] = sha256_of(release / "model.onnx")
        (release / CARD).write_text(json.dumps(card))
    source = tmp_path / "huge.root"
    with io.EventWriter(source) as writer:
        writer.write(make_policy_events([3, 12000], [2, 8000], seed=4))
    out = tmp_path / "out"
    proc = _cli([release.as_posix(), "-i", str(source), "-o", str(out), "--backend", "onnxruntime-cpu"],
                limit_bytes=4 << 30)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    buckets = json.loads((release / CARD).read_text())["size_buckets"]
    padded = min([b for b in buckets if b >= 20000], default=20000)  # the card's bucket, or unpadded above them
    assert lines[0].startswith(f"error: {source}: entries 0-1: event 1: 20000 elements (padded to {padded}): "
                               "onnxruntime-cpu could not allocate the memory to run mlpf-transformer"), lines[0]
    assert "Failed to allocate memory for requested buffer of size" in lines[0]
    assert not out.exists() or not any(out.iterdir())
