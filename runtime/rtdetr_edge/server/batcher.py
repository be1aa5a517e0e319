"""Dynamic batching of concurrent requests onto one inference thread.

Requests are preprocessed in worker threads, then queued here. The dispatcher
sends a batch to the predictor as soon as either ``max_batch_size`` images are
queued, or no other request is still being preprocessed (waiting would only add
latency), or ``window`` has passed since the batch started forming. While a
batch runs, new requests queue up and form the next one, so preprocessing of
request k+1 overlaps inference of request k.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
log = logging.getLogger(__name__)


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
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.window_seconds = window_seconds
        self._on_batch = on_batch or (lambda info: None)
        self._on_queue_depth = on_queue_depth or (lambda depth: None)
        self._queue: deque[_Pending[Item, Result]] = deque()
        self._arrivals = asyncio.Event()
        self._preparing = 0
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
            batch = [self._queue.popleft() for _ in range(min(self.max_batch_size, len(self._queue)))]
            self._on_queue_depth(len(self._queue))
            await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[Item, Result]]) -> None:
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._run_batch, [p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
        except Exception as error:  # every waiting request must get an answer
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        finished = time.perf_counter()
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
