"""Dynamic batching: concurrent requests for the same model, stage and item shape run
as one forward pass.

Each request is a tensor of ``n >= 1`` items ``[n, ...]``. A dispatcher thread waits
for a free worker, then takes the oldest ready key (``max_batch_size`` items queued, or
its oldest request waited ``max_wait_s``), concatenates up to ``max_batch_size`` items
and hands them to ``run(key, batch)``. Only requests with equal keys share a batch; a
key is any hashable value (the server's is
:class:`~photoveil.server.model_host.BatchKey`). Output rows are split back per request
and each request's future is resolved. If a batched call fails, its requests are re-run
one by one so one bad request cannot fail its neighbours.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Generic, Hashable, TypeVar

import torch

K = TypeVar("K", bound=Hashable)


@dataclass
class _Pending:
    items: torch.Tensor
    future: Future
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    requests: int = 0
    max_batch: int = 0
    fallbacks: int = 0  # batched calls that failed and were re-run per request


class BatcherClosed(RuntimeError):
    """The batcher was closed before this request ran."""


class DynamicBatcher(Generic[K]):
    def __init__(self, run: Callable[[K, torch.Tensor], torch.Tensor], max_batch_size: int = 32,
                 max_wait_s: float = 0.005, workers: int = 1, name: str = "batcher"):
        if not 1 <= max_batch_size <= 4096:
            raise ValueError(f"max_batch_size must be in 1..4096, got {max_batch_size}")
        if not 0.0 <= max_wait_s <= 1.0:
            raise ValueError(f"max_wait_s must be in [0, 1] seconds, got {max_wait_s}")
        if not 1 <= workers <= 64:
            raise ValueError(f"workers must be in 1..64, got {workers}")
        self._run = run
        self.max_batch_size, self.max_wait_s, self.workers = max_batch_size, max_wait_s, workers
        self.stats = BatchStats()
        self._stats_lock = threading.Lock()
        self._queues: OrderedDict[K, deque[_Pending]] = OrderedDict()
        self._cond = threading.Condition()
        self._free = threading.Semaphore(workers)
        self._closed = False
        self._threads = [threading.Thread(target=self._dispatch, name=f"{name}-dispatch", daemon=True)]
        self._threads[0].start()

    # -- public ---------------------------------------------------------------------

    def submit(self, key: K, items: torch.Tensor) -> Future:
        """Queue ``items`` [n, ...] (n >= 1); the future resolves to this request's output rows."""
        if items.dim() == 0 or items.shape[0] < 1:
            raise ValueError(f"items must be [n, ...] with n >= 1, got shape {list(items.shape)}")
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            self._queues.setdefault(key, deque()).append(_Pending(items, future))
            self._cond.notify_all()
        return future

    def close(self, timeout: float | None = 5.0) -> None:
        """Finish queued requests, then stop the dispatcher."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)

    # -- dispatcher -----------------------------------------------------------------

    def _ready_key(self, now: float) -> tuple[K | None, float]:
        """The key to run now (oldest first), else (None, seconds until one is due)."""
        wait = None
        for key, queue in self._queues.items():
            rows = sum(p.items.shape[0] for p in queue)
            due = queue[0].enqueued + self.max_wait_s - now
            if rows >= self.max_batch_size or due <= 0 or self._closed:
                return key, 0.0
            wait = due if wait is None else min(wait, due)
        return None, wait if wait is not None else 1.0

    def _take(self, key: K) -> list[_Pending]:
        queue, taken, rows = self._queues[key], [], 0
        while queue and (not taken or rows + queue[0].items.shape[0] <= self.max_batch_size):
            pending = queue.popleft()
            taken.append(pending)
            rows += pending.items.shape[0]
        if queue:
            self._queues.move_to_end(key)  # fairness: other keys go first next time
        else:
            del self._queues[key]
        return taken

    def _dispatch(self) -> None:
        while True:
            self._free.acquire()  # wait for a worker first: requests pile up into bigger batches
            with self._cond:
                while True:
                    key, wait = self._ready_key(time.monotonic())
                    if key is not None:
                        batch = self._take(key)
                        break
                    if self._closed and not self._queues:
                        self._free.release()
                        return
                    self._cond.wait(timeout=wait)
            threading.Thread(target=self._execute, args=(key, batch), daemon=True).start() \
                if self.workers > 1 else self._execute(key, batch)

    def _execute(self, key: K, batch: list[_Pending]) -> None:
        try:
            batch = [p for p in batch if p.future.set_running_or_notify_cancel()]
            if not batch:
                return
            if len(batch) == 1:
                self._resolve_one(key, batch[0])
            else:
                self._resolve_many(key, batch)
            rows = sum(p.items.shape[0] for p in batch)
            with self._stats_lock:
                s = self.stats
                s.batches += 1
                s.requests += len(batch)
                s.items += rows
                s.max_batch = max(s.max_batch, rows)
        finally:
            self._free.release()

    def _call(self, key: K, items: torch.Tensor) -> torch.Tensor:
        out = self._run(key, items)
        if out.shape[0] != items.shape[0]:
            raise RuntimeError(f"batched function returned {out.shape[0]} rows for {items.shape[0]} items")
        return out

    def _resolve_one(self, key: K, pending: _Pending) -> None:
        try:
            pending.future.set_result(self._call(key, pending.items))
        except BaseException as exc:  # noqa: BLE001 - delivered to the caller
            pending.future.set_exception(exc)

    def _resolve_many(self, key: K, batch: list[_Pending]) -> None:
        try:
            out = self._call(key, torch.cat([p.items for p in batch]))
        except Exception:  # noqa: BLE001 - isolate: re-run each request alone
            with self._stats_lock:
                self.stats.fallbacks += 1
            for pending in batch:
                self._resolve_one(key, pending)
            return
        for pending, rows in zip(batch, torch.split(out, [p.items.shape[0] for p in batch])):
            pending.future.set_result(rows)
