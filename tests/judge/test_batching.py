"""egt.judge.batching.Batcher: batches fill up or wait, the queue is bounded (all or nothing), identical jobs run
once, a failing job fails alone, timed-out jobs are dropped, stop() drains. A plain function stands in for the
model here (the service's tests run the real judge through it)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from egt.judge.batching import Batcher, QueueFull


class Recorder:
    """run_batch that doubles numbers, records each batch, and can be held closed by a gate."""

    def __init__(self, delay_s: float = 0.0):
        self.batches: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.delay_s = delay_s

    def __call__(self, payloads):
        self.gate.wait()
        self.batches.append(list(payloads))
        time.sleep(self.delay_s)
        if any(p == "bad" for p in payloads):
            raise ValueError("bad job")
        return [p * 2 for p in payloads]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_batches_up_to_the_size():
    rec = Recorder()
    rec.gate.clear()
    batcher = Batcher(rec, max_batch_size=4, max_batch_wait_ms=50, max_queue=100)
    batcher.start()

    async def main():
        tasks = [asyncio.create_task(batcher.submit([i])) for i in range(10)]
        await asyncio.sleep(0.1)
        rec.gate.set()
        return await asyncio.gather(*tasks)

    assert run(main()) == [[2 * i] for i in range(10)]
    batcher.stop()
    assert [len(b) for b in rec.batches] == [4, 4, 2]  # the first batch waited, full; the rest as they came
    assert sorted(p for b in rec.batches for p in b) == list(range(10))


def test_a_lone_job_waits_at_most_the_batch_wait():
    rec = Recorder()
    batcher = Batcher(rec, max_batch_size=64, max_batch_wait_ms=30, max_queue=100)
    batcher.start()
    started = time.perf_counter()
    assert run(batcher.submit([1])) == [2]
    assert time.perf_counter() - started < 2.0
    batcher.stop()


def test_the_queue_is_bounded_and_refuses_all_or_nothing():
    rec = Recorder()
    rec.gate.clear()
    batcher = Batcher(rec, max_batch_size=1, max_batch_wait_ms=0, max_queue=3)
    batcher.start()

    async def main():
        first = asyncio.create_task(batcher.submit([1]))       # taken by the worker, held at the gate
        await asyncio.sleep(0.05)
        second = asyncio.create_task(batcher.submit([2, 3]))   # waits in the queue (2 of 3 places)
        await asyncio.sleep(0.05)
        try:
            with pytest.raises(QueueFull) as refused:
                await asyncio.wait_for(batcher.submit([4, 5]), 2)  # needs 2, 1 left: refused at once, none queued
            assert refused.value.retry_after_s >= 1 and batcher.depth == 2
        finally:
            rec.gate.set()
        return await first, await second

    assert run(main()) == ([2], [4, 6])
    batcher.stop()
    assert batcher.stats.refused == 1


def test_identical_jobs_run_once_and_come_back_from_the_cache():
    rec = Recorder(delay_s=0.05)
    batcher = Batcher(rec, max_batch_size=8, max_batch_wait_ms=20, max_queue=100, cache_size=2)
    batcher.start()

    async def main():
        together = await asyncio.gather(batcher.submit([1, 1], keys=["a", "a"]), batcher.submit([1], keys=["a"]))
        again = await batcher.submit([1], keys=["a"])
        return together, again

    together, again = run(main())
    assert together == [[2, 2], [2]] and again == [2]
    assert sum(len(b) for b in rec.batches) == 1
    assert batcher.stats.deduplicated == 2 and batcher.stats.cache_hits == 1
    # the cache is bounded (LRU)
    run(batcher.submit([2, 3, 4], keys=["b", "c", "d"]))
    assert len(batcher._cache) == 2
    batcher.stop()


def test_a_failing_job_fails_alone():
    rec = Recorder()
    batcher = Batcher(rec, max_batch_size=8, max_batch_wait_ms=30, max_queue=100)
    batcher.start()

    async def main():
        return await asyncio.gather(batcher.submit([1]), batcher.submit(["bad"]), batcher.submit([3]),
                                    return_exceptions=True)

    good, bad, other = run(main())
    batcher.stop()
    assert good == [2] and other == [6]
    assert isinstance(bad, ValueError)


def test_a_timed_out_request_drops_its_queued_jobs():
    rec = Recorder()
    rec.gate.clear()
    batcher = Batcher(rec, max_batch_size=1, max_batch_wait_ms=0, max_queue=10)
    batcher.start()

    async def main():
        held = asyncio.create_task(batcher.submit([1]))
        await asyncio.sleep(0.05)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.submit([7, 8]), 0.05)
        rec.gate.set()
        return await held

    assert run(main()) == [2]
    batcher.stop()
    assert [p for b in rec.batches for p in b] == [1]  # 7 and 8 never ran


def test_stop_finishes_the_queued_jobs():
    rec = Recorder(delay_s=0.02)
    batcher = Batcher(rec, max_batch_size=2, max_batch_wait_ms=0, max_queue=100)
    batcher.start()
    results = []

    async def main():
        task = asyncio.create_task(batcher.submit(list(range(6))))
        await asyncio.sleep(0.01)
        threading.Thread(target=batcher.stop).start()
        results.extend(await task)

    run(main())
    assert results == [0, 2, 4, 6, 8, 10]
