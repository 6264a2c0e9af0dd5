"""The token bucket admits exactly its rate after a full burst, says when the next token is due, and keeps what
was earned across a changed limit or a wall clock stepping back; the manual clock fires call-backs in order."""

from __future__ import annotations

import pytest

from riskwatch.clock import ManualClock
from riskwatch.ratelimit import TokenBucket


def test_a_full_bucket_admits_its_capacity_then_paces_at_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, capacity=3.0, now=0.0)
    assert [bucket.try_take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s(0.0) == pytest.approx(0.1)
    assert bucket.available_at() == pytest.approx(0.1)
    assert not bucket.try_take(0.09)
    assert bucket.try_take(0.1)
    # steady pacing exactly at the rate is never refused
    assert all(bucket.try_take(0.1 + i * 0.1) for i in range(1, 100))


def test_grace_counts_near_future_refill_as_there() -> None:
    bucket = TokenBucket(rate=10.0, capacity=1.0, now=0.0)
    bucket.take(0.0)
    assert not bucket.try_take(0.08)
    assert bucket.try_take(0.08, grace_s=0.02)
    # the borrowed token is owed: the next one is due a full interval after the one borrowed
    assert bucket.tokens(0.08) == pytest.approx(-0.2)
    assert bucket.wait_s(0.08) == pytest.approx(0.12)


def test_tokens_refill_to_capacity_and_no_further() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4.0, now=0.0)
    for _ in range(4):
        bucket.take(0.0)
    assert bucket.tokens(0.0) == pytest.approx(0.0)
    assert bucket.tokens(1.0) == pytest.approx(2.0)
    assert bucket.tokens(100.0) == pytest.approx(4.0)


def test_retune_keeps_earned_tokens_up_to_the_new_capacity() -> None:
    bucket = TokenBucket(rate=10.0, capacity=10.0, now=0.0)
    for _ in range(10):
        bucket.take(0.0)
    bucket.retune(rate=1.0, capacity=1.0, now=0.5)  # 5 tokens earned, 1 kept
    assert bucket.try_take(0.5)
    assert not bucket.try_take(0.5)
    assert bucket.wait_s(0.5) == pytest.approx(1.0)


def test_a_wall_clock_stepping_back_keeps_the_tokens() -> None:
    bucket = TokenBucket(rate=1.0, capacity=2.0, now=1000.0)
    bucket.take(1000.0)
    assert bucket.tokens(400.0) == pytest.approx(1.0)  # an hour's worth of refill is not owed
    assert bucket.try_take(400.0)
    assert not bucket.try_take(400.0)
    assert bucket.try_take(401.0)


def test_a_bucket_needs_a_rate_and_room_for_one_token() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0.0, capacity=1.0, now=0.0)
    with pytest.raises(ValueError):
        TokenBucket(rate=1.0, capacity=0.5, now=0.0)


def test_manual_clock_runs_due_callbacks_at_their_own_time_in_order() -> None:
    clock = ManualClock(10.0)
    fired: list[tuple[str, float]] = []
    clock.call_at(12.0, lambda: fired.append(("b", clock.now())))
    clock.call_at(11.0, lambda: fired.append(("a", clock.now())))
    cancelled = clock.call_at(11.5, lambda: fired.append(("x", clock.now())))
    cancelled.cancel()
    clock.call_at(20.0, lambda: fired.append(("late", clock.now())))
    clock.advance(5.0)
    assert fired == [("a", 11.0), ("b", 12.0)]
    assert clock.now() == 15.0
    with pytest.raises(ValueError):
        clock.advance_to(14.0)
