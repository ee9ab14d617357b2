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

Fairness: a request may carry a ``tag`` (the server passes one per call); a batch takes
its rows round-robin over the tags waiting for that key, so a call with one item is not
queued behind the whole window of a large stream. :class:`FairExecutor` does the same
for work waiting on threads (the server's RecognizeStream items).
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
    tag: Hashable = None
    enqueued: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        if self.tag is None:  # untagged requests are each their own caller
            self.tag = ("request", id(self))


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

    def submit(self, key: K, items: torch.Tensor, tag: Hashable = None) -> Future:
        """Queue ``items`` [n, ...] (n >= 1); the future resolves to this request's output rows.
        Requests with the same ``tag`` (one call) share one turn of the round-robin."""
        if items.dim() == 0 or items.shape[0] < 1:
            raise ValueError(f"items must be [n, ...] with n >= 1, got shape {list(items.shape)}")
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            self._queues.setdefault(key, deque()).append(_Pending(items, future, tag))
            self._cond.notify_all()
        return future

    def close(self, timeout: float | None = 5.0) -> None:
        """Finish queued requests, then stop the dispatcher; what is still queued after
        ``timeout`` fails with :class:`BatcherClosed` (no caller waits forever)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)
        with self._cond:
            left = [p for queue in self._queues.values() for p in queue]
            self._queues.clear()
        for pending in left:
            if pending.future.set_running_or_notify_cancel():
                pending.future.set_exception(BatcherClosed("the server stopped before this request ran"))

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
        """Up to ``max_batch_size`` rows of ``key``, one request per tag in turn (oldest first within a tag)."""
        by_tag: OrderedDict[Hashable, deque[_Pending]] = OrderedDict()
        for pending in self._queues[key]:
            by_tag.setdefault(pending.tag, deque()).append(pending)
        taken, rows, full = [], 0, False
        while by_tag and not full:
            for tag in list(by_tag):
                pending = by_tag[tag][0]
                if taken and rows + pending.items.shape[0] > self.max_batch_size:
                    full = True
                    break
                taken.append(by_tag[tag].popleft())
                rows += pending.items.shape[0]
                if not by_tag[tag]:
                    del by_tag[tag]
        chosen = set(map(id, taken))
        queue = self._queues[key] = deque(p for p in self._queues[key] if id(p) not in chosen)
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


class FairExecutor:
    """A thread pool whose queue is round-robin over tags (one per call): each free worker
    takes the next job of the tag whose turn it is, so a call with one job waits for at
    most one job of each other call, not for their whole backlog. Daemon threads, so a
    job stuck in user code cannot hold the process at exit."""

    def __init__(self, workers: int, name: str = "fair"):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._queues: OrderedDict[Hashable, deque[tuple[Callable, tuple, Future]]] = OrderedDict()
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, tag: Hashable, fn: Callable, *args) -> Future:
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            self._queues.setdefault(tag, deque()).append((fn, args, future))
            self._cond.notify()
        return future

    def shutdown(self, timeout: float | None = 5.0) -> None:
        """Cancel queued jobs; running ones finish (waited for up to ``timeout`` s)."""
        with self._cond:
            self._closed = True
            left = [job for queue in self._queues.values() for job in queue]
            self._queues.clear()
            self._cond.notify_all()
        for _, _, future in left:
            future.cancel()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queues and not self._closed:
                    self._cond.wait()
                if not self._queues:
                    return
                tag, queue = next(iter(self._queues.items()))
                fn, args, future = queue.popleft()
                if queue:
                    self._queues.move_to_end(tag)  # its next job waits for the other tags' turns
                else:
                    del self._queues[tag]
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - delivered to the caller
                    future.set_exception(exc)
