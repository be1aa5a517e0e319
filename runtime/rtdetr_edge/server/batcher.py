"""Dynamic batching of concurrent requests onto one inference thread.

Requests are preprocessed in worker threads, then queued here. The dispatcher
sends a batch to the predictor as soon as either ``max_batch_size`` images are
queued, or no other request is still being preprocessed (waiting would only add
latency), or ``window`` has passed since the batch started forming. While a
batch runs, new requests queue up and form the next one, so preprocessing of
request k+1 overlaps inference of request k.

Load shedding: the queue is bounded by a queue-time budget. A request whose wait,
predicted from the queue ahead of it and the recent batch time, exceeds the budget
is refused before any work is spent on it (:meth:`DynamicBatcher.admit`), and a
request that has waited past the budget when its batch forms is refused rather
than run late. Both raise :class:`OverloadedError` (HTTP 503 with Retry-After), so
no accepted request waits in the queue longer than the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from rtdetr_edge.errors import OverloadedError

Item = TypeVar("Item")
Result = TypeVar("Result")
log = logging.getLogger(__name__)

ShedReason = Literal["predicted", "expired"]
"""predicted: refused on arrival (its wait would exceed the budget); expired: it waited past it."""
BATCH_TIME_SMOOTHING = 0.3
"""Weight of the newest batch in the running batch-time estimate (an exponential average)."""


@dataclass(frozen=True)
class BatchInfo:
    batch_size: int
    queue_seconds: float
    inference_seconds: float


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    future: "asyncio.Future[tuple[Result, BatchInfo]]"
    enqueued: float


class DynamicBatcher(Generic[Item, Result]):
    """``run_batch(items) -> results`` (same length, same order) runs on one dedicated thread."""

    def __init__(
        self,
        run_batch: Callable[[list[Item]], list[Result]],
        max_batch_size: int,
        window_seconds: float,
        on_batch: Callable[[BatchInfo], None] | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
        max_queue_seconds: float | None = None,
        on_shed: Callable[[ShedReason], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.window_seconds = window_seconds
        self.max_queue_seconds = max_queue_seconds
        """The queue-time budget (None: unbounded)."""
        self._on_batch = on_batch or (lambda info: None)
        self._on_queue_depth = on_queue_depth or (lambda depth: None)
        self._on_shed = on_shed or (lambda reason: None)
        self._queue: deque[_Pending[Item, Result]] = deque()
        self._arrivals = asyncio.Event()
        self._preparing = 0
        self._running = False
        self._batch_seconds: float | None = None
        """Running estimate of one batch's inference time (None until the first batch)."""
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._dispatch_forever(), name="batcher")

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Mark a request as on its way (being preprocessed), so the dispatcher waits for it."""
        self._preparing += 1
        try:
            yield
        finally:
            self._preparing -= 1
            self._arrivals.set()

    def predicted_wait(self) -> float:
        """Seconds a request arriving now would wait before its batch starts: the batch running
        (if any) and the full batches queued or being preprocessed ahead of it. Without a
        measured batch yet, 0 (nothing is refused on a guess)."""
        if self._batch_seconds is None:
            return 0.0
        ahead = len(self._queue) + self._preparing
        return (int(self._running) + ahead // self.max_batch_size) * self._batch_seconds

    def admit(self) -> None:
        """Refuse a new request (OverloadedError) if its predicted wait exceeds the budget;
        call it before spending work (decoding, preprocessing) on the request."""
        if self.max_queue_seconds is None:
            return
        wait = self.predicted_wait()
        if wait > self.max_queue_seconds:
            self._on_shed("predicted")
            raise self._overloaded(f"a new request would wait ~{wait:.2f} s", wait)

    def _overloaded(self, what: str, retry_after: float) -> OverloadedError:
        return OverloadedError(
            f"overloaded: {what} for the model, over this server's {self.max_queue_seconds:g} s queue budget; "
            "retry later or on another replica",
            math.ceil(retry_after),
        )

    async def submit(self, item: Item) -> tuple[Result, BatchInfo]:
        if self._closed:
            raise RuntimeError("the batcher is closed")
        future: asyncio.Future[tuple[Result, BatchInfo]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(item, future, time.perf_counter()))
        self._on_queue_depth(len(self._queue))
        self._arrivals.set()
        return await future

    async def run_exclusive(self, work: Callable[[], Result]) -> Result:
        """Run ``work`` on the inference thread, between batches (for OIP tensor requests)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def _dispatch_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                if self._closed:
                    return
                self._arrivals.clear()
                await self._arrivals.wait()
            deadline = loop.time() + self.window_seconds
            while len(self._queue) < self.max_batch_size and self._preparing > 0:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrivals.clear()
                try:
                    await asyncio.wait_for(self._arrivals.wait(), remaining)
                except TimeoutError:
                    break
            taken_at = time.perf_counter()
            batch = self._take_batch(taken_at)
            self._on_queue_depth(len(self._queue))
            if batch:
                await self._run(loop, batch, taken_at)

    def _take_batch(self, now: float) -> list[_Pending[Item, Result]]:
        """Up to max_batch_size requests from the head of the queue; those that waited past the
        budget are refused instead (answering them late helps no one: the client gave up or
        its latency target is gone)."""
        batch: list[_Pending[Item, Result]] = []
        while self._queue and len(batch) < self.max_batch_size:
            pending = self._queue.popleft()
            waited = now - pending.enqueued
            if self.max_queue_seconds is not None and waited > self.max_queue_seconds:
                self._on_shed("expired")
                if not pending.future.done():
                    pending.future.set_exception(self._overloaded(f"waited {waited:.2f} s", self.predicted_wait()))
                continue
            batch.append(pending)
        return batch

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[Item, Result]], started: float) -> None:
        """``started``: when the batch was taken from the queue (each request's queue time ends there)."""
        self._running = True
        try:
            results = await loop.run_in_executor(self._executor, self._run_batch, [p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
        except Exception as error:  # every waiting request must get an answer
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        finally:
            self._running = False
        finished = time.perf_counter()
        elapsed = finished - started
        self._batch_seconds = elapsed if self._batch_seconds is None else (
            BATCH_TIME_SMOOTHING * elapsed + (1 - BATCH_TIME_SMOOTHING) * self._batch_seconds)  # fmt: skip
        for pending, result in zip(batch, results):
            info = BatchInfo(len(batch), started - pending.enqueued, finished - started)
            if not pending.future.done():  # the client may have gone away
                pending.future.set_result((result, info))
        self._on_batch(BatchInfo(len(batch), 0.0, finished - started))

    async def close(self) -> None:
        """Finish everything queued, then stop the dispatcher and the inference thread."""
        self._closed = True
        self._arrivals.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)
