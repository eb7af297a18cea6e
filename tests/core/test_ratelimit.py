"""egt.core.ratelimit: the token buckets, on a fake clock (exact arithmetic, no waiting)."""

from __future__ import annotations

import threading

from egt.core.ratelimit import RateLimiter


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_requests_per_minute_spaces_requests_after_a_one_second_burst():
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=120, clock=clock, sleep=clock.sleep)   # 2/s, bursts of 2
    times = []
    for _ in range(10):
        limiter.acquire()
        times.append(clock.now)
    assert times[:2] == [0.0, 0.0]
    assert [round(b - a, 6) for a, b in zip(times[1:], times[2:])] == [0.5] * 8
    assert round(limiter.waited_s, 6) == 4.0


def test_tokens_per_minute_charges_the_estimate_and_settles_with_the_usage():
    clock = FakeClock()
    limiter = RateLimiter(tokens_per_minute=60_000, clock=clock, sleep=clock.sleep)   # 1,000 tokens/s
    first = limiter.acquire(tokens=3_000)          # larger than the bucket: waits for a full one, goes into debt
    assert clock.now == 0.0 and limiter.tokens.level == -2_000
    limiter.settle(first, tokens=500)              # the server used 500: 2,500 come back
    assert limiter.tokens.level == 500
    limiter.acquire(tokens=1_000)                  # needs a full bucket: 0.5 s (without the correction: 3 s)
    assert clock.now == 0.5 and limiter.tokens.level == 0
    over = limiter.acquire(tokens=1_000)           # 1 s later
    limiter.settle(over, tokens=2_500)             # the estimate was low: the extra 1,500 are charged
    assert clock.now == 1.5 and limiter.tokens.level == -1_500


def test_both_limits_apply_and_none_is_unlimited():
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=6000, tokens_per_minute=6000, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        limiter.acquire(tokens=100)  # 100 requests/s allowed, but only 100 tokens/s
    assert clock.now == 2.0
    unlimited = RateLimiter(clock=clock, sleep=clock.sleep)
    assert not unlimited.active and unlimited.acquire(tokens=10**9).tokens == 0.0


def test_a_stop_event_ends_the_wait():
    limiter = RateLimiter(requests_per_minute=1)      # one request a minute
    limiter.acquire()
    stop = threading.Event()
    stop.set()
    grant = limiter.acquire(stop=stop)                # would wait 60 s
    assert grant.tokens == 0.0
