"""The dynamic micro-batcher: coalescing, order, size cap, no delay for a lone client, errors."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.batcher import BatchStats, MicroBatcher


class Recorder:
    """A ``process`` that doubles numbers, records each batch and its thread, and can be slowed down."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batches: list[list[list[int]]] = []
        self.threads: set[str] = set()

    def __call__(self, items: list[list[int]]) -> list[list[int]]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(items)
        time.sleep(self.delay_s)
        return [[2 * x for x in item] for item in items]


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_submissions_are_coalesced_in_order_off_the_loop():
    async def main():
        rec = Recorder(delay_s=0.02)
        stats: list[BatchStats] = []
        batcher = MicroBatcher(rec, size_of=len, max_size=1000, max_wait_ms=5, on_batch=stats.append)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit([i, i + 1]) for i in range(50)))
        await batcher.stop()
        return rec, stats, results

    rec, stats, results = _run(main())
    assert results == [[2 * i, 2 * i + 2] for i in range(50)]
    assert len(rec.batches) < 10  # 50 requests, a handful of model calls
    assert max(len(b) for b in rec.batches) > 10
    assert sum(s.requests for s in stats) == 50 and sum(s.items for s in stats) == 100
    assert all(name.startswith("batcher-") for name in rec.threads)
    assert threading.main_thread().name not in rec.threads


def test_batches_respect_the_size_cap_and_oversized_items_run_alone():
    async def main():
        rec = Recorder(delay_s=0.01)
        batcher = MicroBatcher(rec, size_of=len, max_size=10, max_wait_ms=5)
        await batcher.start()
        sizes = [3, 3, 3, 3, 25, 1, 4, 4]
        results = await asyncio.gather(*(batcher.submit(list(range(n))) for n in sizes))
        await batcher.stop()
        return rec, sizes, results

    rec, sizes, results = _run(main())
    assert [len(r) for r in results] == sizes
    for batch in rec.batches:
        total = sum(len(item) for item in batch)
        assert total <= 10 or len(batch) == 1


def test_a_lone_client_pays_no_batching_wait():
    async def main():
        batcher = MicroBatcher(Recorder(), size_of=len, max_size=64, max_wait_ms=500)
        await batcher.start()
        latencies = []
        for i in range(5):
            t0 = time.perf_counter()
            assert await batcher.submit([i]) == [2 * i]
            latencies.append(time.perf_counter() - t0)
        await batcher.stop()
        return latencies

    assert max(_run(main())) < 0.25  # far below the 500 ms max wait


def test_an_exception_fails_that_batch_only():
    calls = {"n": 0}

    def flaky(items):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return items

    async def main():
        batcher = MicroBatcher(flaky, size_of=len, max_size=8, max_wait_ms=0)
        await batcher.start()
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit([1])
        ok = await batcher.submit([2])
        await batcher.stop()
        with pytest.raises(RuntimeError, match="not running"):
            await batcher.submit([3])
        return ok

    assert _run(main()) == [2]


def test_cancelled_requests_do_not_break_the_batcher():
    async def main():
        batcher = MicroBatcher(Recorder(delay_s=0.05), size_of=len, max_size=100, max_wait_ms=1)
        await batcher.start()
        first = asyncio.create_task(batcher.submit([1]))
        await asyncio.sleep(0.01)
        doomed = asyncio.create_task(batcher.submit([2]))
        await asyncio.sleep(0)
        doomed.cancel()
        survivor = await batcher.submit([3])
        result = await first
        await batcher.stop()
        return result, survivor

    assert _run(main()) == ([2], [6])
