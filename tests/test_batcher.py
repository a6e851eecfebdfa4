"""Session.submit and the dynamic batcher: concurrent callers, per-request failure isolation."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import awkward as ak
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from hepzoo.runtime import Session  # noqa: E402
from hepzoo.runtime.batcher import DynamicBatcher  # noqa: E402


N_THREADS = 16
N_PER_THREAD = 500


def _hammer(submit, n_threads: int, n_per_thread: int) -> dict[tuple[int, int], object]:
    """Every thread submits its requests, then collects its own futures; keyed by (thread, request)."""
    results: dict[tuple[int, int], object] = {}
    lock = threading.Lock()
    start = threading.Barrier(n_threads)

    def worker(t: int) -> None:
        start.wait()
        futures = [(i, submit(t, i)) for i in range(n_per_thread)]
        mine = {(t, i): f.result(timeout=120) for i, f in futures}
        with lock:
            results.update(mine)

    with ThreadPoolExecutor(n_threads) as pool:
        for f in [pool.submit(worker, t) for t in range(n_threads)]:
            f.result()
    return results


def test_mlpf_batcher_16_threads_x_500_mixed_sizes(make_features):
    sess = Session.load("mlpf-transformer")
    sess.start_batcher(max_batch=32, max_delay=0.002)
    # a pool of distinct events of mixed sizes (empty, small, several buckets); request (t, i) takes event k(t, i)
    counts = np.random.default_rng(5).integers(0, 100, size=97)  # buckets 64 and 128
    counts[:4] = [0, 1, 64, 65]
    x, off = make_features(counts, seed=6)
    events = [x[off[k] : off[k + 1]] for k in range(len(counts))]
    alone = [sess.run_elements(e, np.array([0, len(e)])) for e in events]

    def pick(t: int, i: int) -> int:
        return (7 * t + 13 * i) % len(events)

    results = _hammer(lambda t, i: sess.submit(events[pick(t, i)]), N_THREADS, N_PER_THREAD)
    assert len(results) == N_THREADS * N_PER_THREAD
    tol = sess.card.tolerance
    for (t, i), out in results.items():
        ref = alone[pick(t, i)]
        assert set(out) == set(ref)
        for name in ref:
            assert out[name].shape == ref[name].shape, (t, i, name)
            np.testing.assert_allclose(out[name], ref[name], atol=tol.atol, rtol=tol.rtol, err_msg=f"request {(t, i)} {name}")
    batcher = sess._batcher
    assert batcher.requests == N_THREADS * N_PER_THREAD
    assert batcher.calls < batcher.requests  # concurrent callers were coalesced
    sess.close()


def test_flashsim_batcher_results_equal_sample_alone():
    sess = Session.load("flashsim-track")
    n_ctx = sess.card.inputs[0].shape[-1]
    rng = np.random.default_rng(8)
    contexts = [rng.normal(size=(int(k), n_ctx)).astype(np.float32) for k in rng.integers(0, 40, size=64)]

    def seed(t: int, i: int) -> int:
        return 1000 * t + i

    results = _hammer(lambda t, i: sess.submit(contexts[(t + i) % 64], seed=seed(t, i)), 8, 100)
    assert len(results) == 800
    tol = sess.card.tolerance
    for (t, i), out in results.items():
        ref = sess.sample(contexts[(t + i) % 64], seed(t, i))
        assert out["seed"] == seed(t, i)
        np.testing.assert_array_equal(out["matched"], ref["matched"])
        for name in ("efficiency", "sample"):
            np.testing.assert_allclose(out[name], ref[name], atol=tol.atol, rtol=tol.rtol)
    sess.close()


def test_bad_requests_fail_only_their_own_future(make_features):
    sess = Session.load("mlpf-gnnlsh")
    x, off = make_features([5, 9, 3], seed=9)
    good = [x[off[k] : off[k + 1]] for k in range(3)]
    nan = good[1].copy()
    nan[2, 1] = np.nan
    futures = [
        sess.submit(good[0]),
        sess.submit(good[1][:, :7]),  # wrong feature count
        sess.submit(nan),
        sess.submit(np.zeros((0, good[0].shape[1]), np.float32)),  # empty event: empty outputs
        sess.submit(good[2]),
        sess.submit(good[0], seed=3),  # a seed for a deterministic model
    ]
    assert np.allclose(futures[0].result()["regression"], sess.run_elements(good[0], [0, 5])["regression"], atol=1e-4)
    with pytest.raises(ValueError, match=r"'features'.*\[n, 20\].*\(9, 7\)"):
        futures[1].result()
    with pytest.raises(ValueError, match=r"element 2 .*non-finite.*'pt'"):
        futures[2].result()
    assert futures[3].result()["cls_logits"].shape == (0, 6)
    assert futures[4].result()["cls_logits"].shape == (3, 6)
    with pytest.raises(ValueError, match="deterministic"):
        futures[5].result()
    with pytest.raises(ValueError, match="needs a seed"):
        Session.load("flashsim-jet").submit(np.zeros((2, 12), np.float32)).result()
    sess.close()


def test_backend_failure_in_a_batch_is_isolated():
    """If a coalesced call fails, each request is retried alone: only the culprit's future fails."""
    calls = []

    def run_group(payloads):
        calls.append(len(payloads))
        if any(p < 0 for p in payloads):
            raise ArithmeticError(f"negative request in {payloads}")
        return [p * 2 for p in payloads]

    gate = threading.Event()
    batcher = DynamicBatcher(lambda ps: (gate.wait(), run_group(ps))[1], max_batch=64, max_delay=0.05)
    futures = [batcher.submit(v) for v in (1, 2, -3, 4)]
    gate.set()
    assert [f.result() for f in futures[:2]] + [futures[3].result()] == [2, 4, 8]
    with pytest.raises(ArithmeticError, match="-3"):
        futures[2].result()
    assert calls[0] == 4 and sorted(calls[1:]) == [1, 1, 1, 1]
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(1)


def test_submit_awkward_event_returns_its_candidates(make_events):
    sess = Session.load("mlpf-transformer")
    events = make_events([2, 0, 5], [3, 1, 4], seed=4)
    expected = sess.run(events)
    got = [sess.submit(events[i : i + 1]).result() for i in range(len(events))]
    got_record = sess.submit(events[2]).result()
    for i in range(len(events)):
        assert ak.to_list(got[i].cls) == ak.to_list(expected[i : i + 1].cls)
        np.testing.assert_allclose(ak.to_numpy(ak.flatten(got[i].pt)), ak.to_numpy(expected[i].pt), rtol=1e-4, atol=1e-4)
    assert ak.to_list(got_record.cls) == ak.to_list(expected[2:3].cls)
    sess.close()


def test_submit_copies_the_callers_buffer(make_features):
    """A caller that overwrites its array after submit still gets the result of what it submitted.

    ``max_batch=2`` with a long ``max_delay``: the worker waits for the second request, so the first buffer is
    overwritten before the batch runs."""
    sess = Session.load("mlpf-gnnlsh")
    sess.start_batcher(max_batch=2, max_delay=600.0)
    x, off = make_features([30, 30], seed=11)
    buffer = x[off[0] : off[1]].copy()
    expected = sess.run_elements(buffer, np.array([0, len(buffer)]))
    first = sess.submit(buffer)
    buffer[:] = x[off[1] : off[2]]  # reuse the buffer for the next event
    second = sess.submit(buffer)
    for name, value in expected.items():
        np.testing.assert_allclose(first.result()[name], value, atol=1e-4, rtol=1e-4, err_msg=name)
    assert not np.allclose(first.result()["regression"], second.result()["regression"])
    sess.close()

    flash = Session.load("flashsim-track")
    flash.start_batcher(max_batch=2, max_delay=600.0)
    context = np.random.default_rng(12).normal(size=(20, flash.card.inputs[0].shape[-1])).astype(np.float32)
    reference = flash.sample(context.copy(), seed=3)
    first = flash.submit(context, seed=3)
    context *= 10.0
    flash.submit(context, seed=4)
    np.testing.assert_allclose(first.result()["sample"], reference["sample"], atol=1e-4, rtol=1e-4)
    flash.close()
