"""Dynamic micro-batching: concurrent requests are coalesced into one model call in a worker thread.

Method (greedy continuous batching with a bounded wait):

1. Each request calls :meth:`MicroBatcher.submit` with its item (e.g. the molecules of one request)
   and awaits a future; items go into an asyncio queue.
2. One collector task takes the first waiting item, then every item already queued, up to
   ``max_size`` molecules (an item that would overflow the cap starts the next batch; an item larger
   than the cap is processed alone).
3. Only when the previous batch held more than one request (i.e. requests are arriving
   concurrently) does it wait up to ``max_wait_ms`` more for the batch to fill. A lone client
   therefore pays no batching delay, and under load the model sees large batches.
4. The batch runs in a single dedicated worker thread, so the event loop never runs model work or
   featurization; while it runs, new requests queue up and form the next batch.
5. Results are handed back per item, in order; an exception fails every request of that batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What one processed batch looked like (reported to ``on_batch``)."""

    requests: int
    items: int
    queue_wait_s: float  # oldest request's wait before its batch started
    run_s: float  # time inside ``process``


class MicroBatcher(Generic[T, R]):
    """Coalesce concurrent :meth:`submit` calls into calls of ``process(list_of_items)``."""

    def __init__(
        self,
        process: Callable[[list[T]], Sequence[R]],
        size_of: Callable[[T], int],
        max_size: int = 512,
        max_wait_ms: float = 2.0,
        on_batch: Callable[[BatchStats], None] | None = None,
        name: str = "model",
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        self._process = process
        self._size_of = size_of
        self.max_size = max_size
        self.max_wait_s = max_wait_ms / 1000.0
        self._on_batch = on_batch
        self.name = name
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R], float]] | None = None
        self._carry: tuple[T, asyncio.Future[R], float] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._last_requests = 1

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self.running:
            return
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batcher-{self.name}")
        self._task = asyncio.create_task(self._collect(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        pending = [self._carry] if self._carry else []
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for _, future, _ in pending:
            if not future.done():
                future.set_exception(RuntimeError("batcher stopped"))
        self._carry = None

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result."""
        if self._queue is None or not self.running:
            raise RuntimeError("batcher is not running")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future, time.perf_counter()))
        return await future

    async def _next(self, timeout: float | None) -> tuple[T, asyncio.Future[R], float] | None:
        assert self._queue is not None
        if self._carry is not None:
            entry, self._carry = self._carry, None
            return entry
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0:
            return self._queue.get_nowait() if not self._queue.empty() else None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _gather(self) -> list[tuple[T, asyncio.Future[R], float]]:
        first = await self._next(None)
        assert first is not None
        batch = [first]
        size = self._size_of(first[0])
        deadline = time.perf_counter() + self.max_wait_s if self._last_requests > 1 else 0.0
        while size < self.max_size:
            entry = await self._next(max(0.0, deadline - time.perf_counter()))
            if entry is None:
                break
            n = self._size_of(entry[0])
            if size + n > self.max_size:
                self._carry = entry
                break
            batch.append(entry)
            size += n
        return batch

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [(item, fut, t0) for item, fut, t0 in batch if not fut.cancelled()]
            self._last_requests = len(batch)
            if not live:
                continue
            items = [item for item, _, _ in live]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._process, items)
                if len(results) != len(items):
                    raise RuntimeError(f"process returned {len(results)} results for {len(items)} items")
            except Exception as exc:
                log.exception("micro-batch failed", extra={"batcher": self.name, "requests": len(items)})
                for _, fut, _ in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            run_s = time.perf_counter() - started
            for (_, fut, _), result in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
            if self._on_batch is not None:
                self._on_batch(
                    BatchStats(
                        requests=len(live),
                        items=sum(self._size_of(i) for i in items),
                        queue_wait_s=started - min(t0 for _, _, t0 in live),
                        run_s=run_s,
                    )
                )
