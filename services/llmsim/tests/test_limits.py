"""Token buckets admit exactly the configured rate and say truthfully when capacity frees."""

from __future__ import annotations

import pytest

from riskwatch.clock import ManualClock
from riskwatch_llmsim.limits import RateLimiter

T0 = 1000.0


def test_qps_burst_then_exact_pacing_is_never_refused() -> None:
    clock = ManualClock(T0)
    limiter = RateLimiter(clock)
    for _ in range(5):
        assert limiter.try_acquire("k", qps=5, rpm=None, grace_s=0).admitted
    for _ in range(100):
        clock.advance(0.2)
        assert limiter.try_acquire("k", qps=5, rpm=None, grace_s=0).admitted


def test_qps_overrun_is_refused_with_time_until_a_token() -> None:
    clock = ManualClock(T0)
    limiter = RateLimiter(clock)
    for _ in range(5):
        limiter.try_acquire("k", qps=5, rpm=None, grace_s=0)
    clock.advance(0.05)
    refused = limiter.try_acquire("k", qps=5, rpm=None, grace_s=0)
    assert not refused.admitted
    assert refused.retry_after_s == pytest.approx(0.15)
    clock.advance(0.15)
    assert limiter.try_acquire("k", qps=5, rpm=None, grace_s=0).admitted


def test_refused_requests_do_not_consume_capacity() -> None:
    clock = ManualClock(T0)
    limiter = RateLimiter(clock)
    limiter.try_acquire("k", qps=1, rpm=None, grace_s=0)
    for _ in range(10):
        assert not limiter.try_acquire("k", qps=1, rpm=None, grace_s=0).admitted
    clock.advance(1.0)
    assert limiter.try_acquire("k", qps=1, rpm=None, grace_s=0).admitted


def test_grace_admits_slightly_early_requests_only() -> None:
    clock = ManualClock(T0)
    limiter = RateLimiter(clock)
    for _ in range(10):
        limiter.try_acquire("k", qps=10, rpm=None, grace_s=0.02)
    clock.advance(0.09)  # 10 ms early for the next token
    assert limiter.try_acquire("k", qps=10, rpm=None, grace_s=0.02).admitted
    # but an eleventh request in the same instant as the burst is still an overrun
    assert not limiter.try_acquire("k", qps=10, rpm=None, grace_s=0.02).admitted


def test_rpm_binds_when_tighter_than_qps() -> None:
    clock = ManualClock(T0)
    limiter = RateLimiter(clock)
    for _ in range(3):
        assert limiter.try_acquire("k", qps=10, rpm=3, grace_s=0).admitted
        clock.advance(0.5)
    refused = limiter.try_acquire("k", qps=10, rpm=3, grace_s=0)
    assert not refused.admitted
    # 1.5 s elapsed since the burst began: half a minute's worth of refill is 20 s per token
    assert refused.retry_after_s == pytest.approx(20.0 - 1.5)


def test_keys_are_independent() -> None:
    limiter = RateLimiter(ManualClock(T0))
    assert limiter.try_acquire("a", qps=1, rpm=None, grace_s=0).admitted
    assert limiter.try_acquire("b", qps=1, rpm=None, grace_s=0).admitted
    assert not limiter.try_acquire("a", qps=1, rpm=None, grace_s=0).admitted


def test_grace_never_forgives_a_whole_request() -> None:
    limiter = RateLimiter(ManualClock(T0))
    # 50 ms at 100 qps would be five tokens; the grace is capped at half of one
    admitted = [limiter.try_acquire("k", qps=100, rpm=None, grace_s=0.05).admitted for _ in range(101)]
    assert admitted.count(False) == 1


def test_changed_limit_applies_to_existing_bucket() -> None:
    clock = ManualClock(T0)
    limiter = RateLimiter(clock)
    for _ in range(10):
        limiter.try_acquire("k", qps=10, rpm=None, grace_s=0)
    clock.advance(0.5)
    # the tokens earned at 10 qps are kept, but only up to the new capacity of one
    assert limiter.try_acquire("k", qps=1, rpm=None, grace_s=0).admitted
    assert not limiter.try_acquire("k", qps=1, rpm=None, grace_s=0).admitted
    clock.advance(0.9)
    assert not limiter.try_acquire("k", qps=1, rpm=None, grace_s=0).admitted
    clock.advance(0.1)
    assert limiter.try_acquire("k", qps=1, rpm=None, grace_s=0).admitted


def test_unlimited_always_admits() -> None:
    limiter = RateLimiter(ManualClock(T0))
    assert all(limiter.try_acquire("k", qps=None, rpm=None, grace_s=0).admitted for _ in range(1000))
