"""Dynamic batching for the reward service: concurrent requests share model calls, through a bounded queue.

    batcher = Batcher(run_batch, max_batch_size=16, max_batch_wait_ms=5, max_queue=256, workers=1)
    batcher.start()
    results = await batcher.submit(jobs, keys)     # from the event loop; QueueFull when it cannot take them
    batcher.stop()                                 # after the last request: finishes what was taken, then returns

Jobs (one oriented judgement each) wait in one FIFO queue. A worker thread takes the oldest job,
then waits until the queue holds `max_batch_size` jobs or `max_batch_wait_ms` have passed since
that job arrived, and runs them as one batch (`run_batch(jobs) -> results`, same order). The local
judge has one worker (one model); an endpoint backend has `workers` = its concurrency, each
sending batches of one. A batch that raises is rerun one job at a time, so one bad job fails only
itself.

Admission is all or nothing: a request whose jobs do not all fit in the `max_queue` free places is
refused at once (`QueueFull`, with a Retry-After estimate from the recent throughput), never
queued forever; the service answers 503. `cancel` drops a timed-out request's jobs that have not
started (a job several requests wait for runs while one of them still waits).

Deduplication and cache (`cache_size` > 0): jobs with equal keys (the pair's content and the
settings) that are queued or running at the same time run once, and finished results are kept in a
bounded LRU cache, so identical requests get identical answers without judging again. All of this
state lives on the event loop's thread; the worker threads only take jobs and hand results back
with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence


class QueueFull(Exception):
    """The queue cannot take a request's jobs now; try again after `retry_after_s`."""

    def __init__(self, waiting: int, wanted: int, capacity: int, retry_after_s: float):
        self.waiting, self.wanted, self.capacity, self.retry_after_s = waiting, wanted, capacity, retry_after_s
        super().__init__(f"the judge's queue holds {waiting} of {capacity} judgements; this request needs {wanted}")


@dataclass(eq=False)
class _Job:
    payload: Any
    key: Hashable | None
    future: asyncio.Future
    enqueued: float
    waiters: int = 1
    started: bool = False
    cancelled: bool = False


@dataclass
class BatchStats:
    """Counters the service exports to /metrics (read by its collector)."""

    batches: int = 0
    jobs: int = 0
    cache_hits: int = 0
    deduplicated: int = 0
    refused: int = 0
    batch_sizes: list[int] = field(default_factory=list)  # drained by the metrics observer


class Batcher:
    def __init__(self, run_batch: Callable[[list], Sequence], *, max_batch_size: int = 16,
                 max_batch_wait_ms: float = 5.0, max_queue: int = 256, workers: int = 1, cache_size: int = 0,
                 on_batch: Callable[[int, float], None] | None = None):
        if max_batch_size < 1 or max_queue < 1 or workers < 1:
            raise ValueError("max_batch_size, max_queue and workers must be >= 1")
        self.run_batch = run_batch
        self.max_batch_size, self.max_wait_s = max_batch_size, max_batch_wait_ms / 1000.0
        self.max_queue, self.workers, self.cache_size = max_queue, workers, cache_size
        self.on_batch = on_batch  # (batch size, seconds): called on the worker thread
        self.stats = BatchStats()
        self._queue: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._running = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: dict[Hashable, _Job] = {}
        self._cache: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()
        self._recent: collections.deque[tuple[float, int]] = collections.deque(maxlen=64)  # (end time, jobs)

    # ------------------------------------------------------------ state

    @property
    def depth(self) -> int:
        """Jobs waiting (not yet taken by a worker)."""
        return len(self._queue)

    @property
    def running(self) -> int:
        return self._running

    def start(self) -> None:
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"egt-judge-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float | None = None) -> None:
        """Let the workers finish the batch in hand and every queued job, then end them."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout_s)

    def retry_after_s(self) -> float:
        """Seconds until the queue should have room: waiting jobs over the recent throughput (1 s at least)."""
        if len(self._recent) >= 2:
            span = self._recent[-1][0] - self._recent[0][0]
            done = sum(n for _, n in list(self._recent)[1:])
            if span > 0 and done:
                return max(1.0, (self.depth + self.max_batch_size) / (done / span))
        return 1.0

    # ------------------------------------------------------------ submitting (event loop thread)

    async def submit(self, payloads: Sequence, keys: Sequence[Hashable | None] | None = None) -> list:
        """Results of `payloads` in order; QueueFull if the new jobs do not fit; the job's error if it failed."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        keys = list(keys) if keys is not None and self.cache_size > 0 else [None] * len(payloads)
        futures: list[asyncio.Future] = []
        new: list[_Job] = []
        joined: list[_Job] = []
        now = time.monotonic()
        for payload, key in zip(payloads, keys):
            if key is not None and key in self._cache:
                self._cache.move_to_end(key)
                done = loop.create_future()
                done.set_result(self._cache[key])
                futures.append(done)
                self.stats.cache_hits += 1
                continue
            if key is not None and key in self._inflight:
                job = self._inflight[key]
            elif key is not None and (job := next((j for j in new if j.key == key), None)) is not None:
                pass
            else:
                job = _Job(payload, key, loop.create_future(), now, waiters=0)
                new.append(job)
            job.waiters += 1
            joined.append(job)
            futures.append(job.future)
        with self._cond:
            if len(self._queue) + len(new) > self.max_queue:
                for job in joined:
                    job.waiters -= 1
                self.stats.refused += 1
                raise QueueFull(len(self._queue), len(new), self.max_queue, self.retry_after_s())
            self._queue.extend(new)
            self._cond.notify_all()
        self.stats.deduplicated += len(joined) - len(new)
        for job in new:
            if job.key is not None:
                self._inflight[job.key] = job
        try:
            return list(await asyncio.gather(*[asyncio.shield(f) for f in futures]))
        except asyncio.CancelledError:
            self.cancel(joined)
            raise

    def cancel(self, jobs: Sequence[_Job]) -> None:
        """Give up waiting for `jobs`; those nobody else waits for and not yet started are dropped."""
        for job in jobs:
            job.waiters -= 1
            if job.waiters <= 0 and not job.started:
                job.cancelled = True
                if job.key is not None and self._inflight.get(job.key) is job:
                    del self._inflight[job.key]

    # ------------------------------------------------------------ the workers

    def _take(self) -> list[_Job] | None:
        """The next batch (None when stopping and nothing is left)."""
        with self._cond:
            while True:
                while self._queue and self._queue[0].cancelled:
                    self._queue.popleft()
                if self._queue:
                    deadline = self._queue[0].enqueued + self.max_wait_s
                    while len(self._queue) < self.max_batch_size and not self._stopping:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    batch = []
                    while self._queue and len(batch) < self.max_batch_size:
                        job = self._queue.popleft()
                        if not job.cancelled:
                            job.started = True
                            batch.append(job)
                    if batch:
                        self._running += len(batch)
                        return batch
                    continue
                if self._stopping:
                    return None
                self._cond.wait()

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            started = time.monotonic()
            outcomes = self._run([job.payload for job in batch])
            elapsed = time.monotonic() - started
            with self._cond:
                self._running -= len(batch)
                self._recent.append((time.monotonic(), len(batch)))
            self.stats.batches += 1
            self.stats.jobs += len(batch)
            if self.on_batch is not None:
                self.on_batch(len(batch), elapsed)
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._deliver, batch, outcomes)

    def _run(self, payloads: list) -> list[tuple[bool, Any]]:
        """(ok, result or exception) per payload; a failed batch is rerun one payload at a time."""
        try:
            results = list(self.run_batch(payloads))
            if len(results) != len(payloads):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(payloads)} jobs")
            return [(True, r) for r in results]
        except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
            if len(payloads) == 1:
                return [(False, exc)]
            return [self._run([p])[0] for p in payloads]

    def _deliver(self, batch: list[_Job], outcomes: list[tuple[bool, Any]]) -> None:
        for job, (ok, value) in zip(batch, outcomes):
            if job.key is not None:
                if self._inflight.get(job.key) is job:
                    del self._inflight[job.key]
                if ok:
                    self._cache[job.key] = value
                    self._cache.move_to_end(job.key)
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
            if job.future.done() or (not ok and job.waiters <= 0):  # nobody left to tell
                continue
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)
