"""A dynamic batcher: many threads each submit one request; one worker thread runs them in batches.

Why: a framework calls the model once per event from many threads. One event per backend call wastes the
batch axis (and, on a GPU, the device); the batcher coalesces whatever arrived within ``max_delay`` seconds
(at most ``max_batch`` requests), groups them by a key (for MLPF: the padded size bucket, since only events
padded to the same size can share a tensor), runs each group with one call, and hands every caller its own
slice of the result through a :class:`concurrent.futures.Future`.

Failure isolation: a request that fails validation fails only its own future (at submit time); if a whole
group's call raises, each request of the group is retried alone, so one bad request fails only its own future
and the others still get results.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

__all__ = ["DynamicBatcher"]

_STOP = object()


@dataclass
class _Request:
    payload: Any
    key: Hashable
    future: Future


class DynamicBatcher:
    """``submit(payload) -> Future``; ``run_group(list of payloads) -> list of results`` runs in the worker.

    ``key_of(payload)`` decides which requests may share one ``run_group`` call (it may raise to reject a
    request: that request's future gets the exception). ``max_batch`` requests at most per call,
    ``max_delay`` seconds at most waited after the first request of a batch for more to arrive.
    """

    def __init__(
        self,
        run_group: Callable[[Sequence[Any]], Sequence[Any]],
        key_of: Callable[[Any], Hashable] = lambda payload: None,
        max_batch: int = 32,
        max_delay: float = 0.002,
        name: str = "hepzoo-batcher",
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_delay < 0:
            raise ValueError(f"max_delay must be >= 0 seconds, got {max_delay}")
        self.run_group = run_group
        self.key_of = key_of
        self.max_batch = int(max_batch)
        self.max_delay = float(max_delay)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self.calls = 0  # run_group calls made (for tests and monitoring)
        self.requests = 0
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, payload: Any) -> Future:
        future: Future = Future()
        try:
            key = self.key_of(payload)
        except Exception as error:  # noqa: BLE001 - a rejected request fails only its own future
            future.set_exception(error)
            return future
        with self._lock:
            if self._closed:
                raise RuntimeError("the batcher is closed; no new requests are accepted")
            self._queue.put(_Request(payload, key, future))
        return future

    def close(self, wait: bool = True) -> None:
        """Stop accepting requests; requests already submitted are still run."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if wait:
            self._thread.join()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- worker --------------------------------------------------------------------------------------------

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        batch, stop = [first], False
        deadline = time.monotonic() + self.max_delay
        while len(batch) < self.max_batch:
            timeout = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _serve(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch, stop = self._collect(first)
            groups: dict[Hashable, list[_Request]] = {}
            for request in batch:
                groups.setdefault(request.key, []).append(request)
            for group in groups.values():
                self._run(group)
        # drain what arrived before close() (close puts _STOP last, so nothing is left behind it)

    def _run(self, group: list[_Request]) -> None:
        live = [r for r in group if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        self.calls += 1
        self.requests += len(live)
        try:
            results = self.run_group([r.payload for r in live])
            if len(results) != len(live):
                raise RuntimeError(f"run_group returned {len(results)} results for {len(live)} requests")
        except Exception as error:  # noqa: BLE001 - isolate the bad request by running each alone
            if len(live) == 1:
                live[0].future.set_exception(error)
                return
            for request in live:
                try:
                    (result,) = self.run_group([request.payload])
                except Exception as single_error:  # noqa: BLE001
                    request.future.set_exception(single_error)
                else:
                    request.future.set_result(result)
            return
        for request, result in zip(live, results, strict=True):
            request.future.set_result(result)
