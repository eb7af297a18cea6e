"""Requests-per-minute and tokens-per-minute limits shared by every worker thread (token buckets).

    limiter = RateLimiter(requests_per_minute=500, tokens_per_minute=200_000)
    grant = limiter.acquire(tokens=3_000)     # blocks until both buckets allow it
    ...send the request...
    limiter.settle(grant, tokens=2_140)       # the usage the server reported (0 when it failed)

Why proactive: a hosted API that is sent more than its limit answers 429, and every 429 costs a retry
and a backoff sleep; staying under the limit is cheaper than recovering from it. The token charge of a
request is only an estimate before it is sent (prompt size + its completion budget), so `settle`
corrects the bucket with the usage the server reports: the unused part of the budget comes back.

Each bucket holds one second of its rate (at least one request) and refills continuously. A request
waits until its bucket is full enough for it -- or full, when it is larger than one second's worth --
and then takes what it needs, so the level may go below zero; later requests wait that debt off.
Over any long window the rate never exceeds the limit; a burst is at most one second's worth.
`clock` and `sleep` are injectable so the tests check the arithmetic without waiting.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable


class _Bucket:
    def __init__(self, per_minute: float, now: float):
        self.rate_per_s = per_minute / 60.0
        self.capacity = max(1.0, self.rate_per_s)
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate_per_s)
        self.updated = now

    def wait_s(self, amount: float) -> float:
        """Seconds until the bucket can give `amount` (0 when it can now)."""
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate_per_s


@dataclass
class Grant:
    tokens: float = 0.0


class RateLimiter:
    """Token buckets for requests/min and tokens/min; either limit may be None (unlimited)."""

    def __init__(self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], object] = time.sleep):
        now = clock()
        self.requests = _Bucket(requests_per_minute, now) if requests_per_minute else None
        self.tokens = _Bucket(tokens_per_minute, now) if tokens_per_minute else None
        self.clock, self.sleep = clock, sleep
        self.waited_s = 0.0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.requests is not None or self.tokens is not None

    def acquire(self, tokens: float = 0.0, stop: threading.Event | None = None) -> Grant:
        """Block until one request of about `tokens` tokens may be sent; returns what was charged.

        With `stop` given, waiting ends early when it is set (the caller checks it)."""
        if not self.active:
            return Grant(0.0)
        while True:
            with self._lock:
                now = self.clock()
                wait = 0.0
                for bucket, amount in ((self.requests, 1.0), (self.tokens, tokens)):
                    if bucket is not None:
                        bucket.refill(now)
                        wait = max(wait, bucket.wait_s(amount))
                if wait <= 0:
                    if self.requests is not None:
                        self.requests.level -= 1.0
                    if self.tokens is not None:
                        self.tokens.level -= tokens
                    return Grant(tokens if self.tokens is not None else 0.0)
                self.waited_s += wait
            if stop is not None:
                if stop.wait(wait):
                    return Grant(0.0)
            else:
                self.sleep(wait)

    def settle(self, grant: Grant, tokens: float) -> None:
        """Correct the token bucket with the tokens the request really used."""
        if self.tokens is None or not grant.tokens:
            return
        with self._lock:
            self.tokens.refill(self.clock())
            self.tokens.level = min(self.tokens.capacity, self.tokens.level + grant.tokens - tokens)
            grant.tokens = 0.0
