"""The key pool: strategies, pacing, cooldowns, disabling, waiting, deadlines and metrics, on a manual clock."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence

import pytest
from prometheus_client import CollectorRegistry

from riskwatch.clock import ManualClock, TimerHandle
from riskwatch_llmsim.limits import RateLimiter
from riskwatch_scheduler.keypool import (
    DeadlineExceeded,
    KeyLease,
    KeyPool,
    KeyPoolClosed,
    KeyState,
    NoUsableKeys,
    Outcome,
)
from riskwatch_scheduler.keys_config import ApiKeyConfig, CoolingConfig

FAST = 10_000.0  # a limit high enough never to matter


def key(
    key_id: str, *, qps: float = FAST, rpm: int = 1_000_000, priority: int = 1, enabled: bool = True
) -> ApiKeyConfig:
    return ApiKeyConfig.model_validate(
        {
            "id": key_id,
            "api_key": f"sk-secret-{key_id}-0123456789",
            "qps_limit": qps,
            "rpm_limit": rpm,
            "priority": priority,
            "enabled": enabled,
        }
    )


class CountingClock(ManualClock):
    """A manual clock that also counts how often the pool asks to be woken."""

    def __init__(self) -> None:
        super().__init__()
        self.timers_requested = 0

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        self.timers_requested += 1
        return super().call_at(when, callback)


def make_pool(
    keys: Sequence[ApiKeyConfig],
    strategy: str = "least_loaded",
    *,
    min_cooldown: float = 1.0,
    max_cooldown: float = 8.0,
    clock: ManualClock | None = None,
    registry: CollectorRegistry | None = None,
    burst_fraction: float = 1.0,
) -> tuple[KeyPool, ManualClock, CollectorRegistry]:
    """A pool on a manual clock; the full burst lets tests take many leases without time passing."""
    clock = clock or ManualClock()
    registry = registry or CollectorRegistry()
    pool = KeyPool(
        keys,
        strategy=strategy,
        cooling=CoolingConfig(min_cooldown=min_cooldown, max_cooldown=max_cooldown),
        clock=clock,
        registry=registry,
        burst_fraction=burst_fraction,
    )
    return pool, clock, registry


async def settle() -> None:
    """Let woken tasks run (a resolved future needs a few loop turns to resume its awaiter)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def advance(clock: ManualClock, seconds: float, step: float = 0.01) -> None:
    end = clock.now() + seconds
    while clock.now() < end:
        clock.advance_to(min(clock.now() + step, end))
        await settle()


async def take(pool: KeyPool, deadline: float = math.inf) -> KeyLease:
    return await pool.acquire(deadline)


def state_of(pool: KeyPool, key_id: str) -> KeyState:
    return next(s.state for s in pool.snapshot() if s.key_id == key_id)


def cooldown_of(pool: KeyPool, key_id: str) -> float:
    return next(s.cooldown_remaining for s in pool.snapshot() if s.key_id == key_id)


# --- strategies ----------------------------------------------------------------------------------


async def test_round_robin_rotates_through_every_key_in_order() -> None:
    pool, _, _ = make_pool([key(k) for k in "abcde"], "round_robin")
    held: list[KeyLease] = []
    chosen = []
    for i in range(50):
        lease = await take(pool)
        chosen.append(lease.key_id)
        # holding some leases must not disturb the rotation (it is not load-based)
        if i % 3 == 0:
            held.append(lease)
        else:
            pool.release(lease, Outcome.success())
    assert chosen == list("abcde") * 10


async def test_round_robin_skips_a_cooling_key_and_keeps_rotating() -> None:
    pool, clock, _ = make_pool([key(k) for k in "abcd"], "round_robin", min_cooldown=5)
    lease = await take(pool)
    assert lease.key_id == "a"
    pool.release(lease, Outcome.server_error())
    chosen = []
    for _ in range(9):
        lease = await take(pool)
        chosen.append(lease.key_id)
        pool.release(lease, Outcome.success())
    assert chosen == list("bcdbcdbcd")
    clock.advance(5)
    chosen = []
    for _ in range(8):
        lease = await take(pool)
        chosen.append(lease.key_id)
        pool.release(lease, Outcome.success())
    assert chosen == list("abcdabcd")


async def test_weighted_shares_calls_in_proportion_to_priority_smoothly() -> None:
    priorities = {"a": 1, "b": 2, "c": 3, "d": 4}
    pool, _, _ = make_pool([key(k, priority=p) for k, p in priorities.items()], "weighted")
    chosen = []
    for _ in range(1000):
        lease = await take(pool)
        chosen.append(lease.key_id)
        pool.release(lease, Outcome.success())
    assert Counter(chosen) == {"a": 100, "b": 200, "c": 300, "d": 400}
    # smooth: every cycle of sum(priorities) choices already has the exact shares
    for start in range(0, 1000, 10):
        assert Counter(chosen[start : start + 10]) == priorities
    # and the heaviest key is never chosen more than twice in a row here
    assert max(len(run) for run in "".join(chosen).replace("a", " ").replace("b", " ").replace("c", " ").split()) <= 2


async def test_least_loaded_prefers_fewest_in_flight_then_fewest_recent_calls_then_priority() -> None:
    pool, clock, _ = make_pool([key("a"), key("b"), key("c")])
    first = [await take(pool) for _ in range(3)]
    assert [lease.key_id for lease in first] == ["a", "b", "c"]  # one each: fewest in flight
    pool.release(first[1], Outcome.success())
    again = await take(pool)
    assert again.key_id == "b"  # the only key with nothing in flight
    for lease in (first[0], first[2], again):
        pool.release(lease, Outcome.success())
    # all idle now; calls in the last minute: a=1, b=2, c=1 -> a (then c), never b
    chosen = []
    for _ in range(2):
        lease = await take(pool)
        chosen.append(lease.key_id)
        pool.release(lease, Outcome.success())
    assert chosen == ["a", "c"]
    # a minute later the history is forgotten and the order restarts from the first key
    clock.advance(61)
    lease = await take(pool)
    assert lease.key_id == "a"


async def test_least_loaded_breaks_ties_by_higher_priority() -> None:
    pool, _, _ = make_pool([key("low", priority=1), key("high", priority=3)])
    lease = await take(pool)
    assert lease.key_id == "high"


async def test_least_loaded_spreads_concurrent_calls_evenly() -> None:
    pool, _, _ = make_pool([key(k) for k in "abcd"])
    leases = [await take(pool) for _ in range(40)]
    assert Counter(lease.key_id for lease in leases) == {"a": 10, "b": 10, "c": 10, "d": 10}


# --- pacing --------------------------------------------------------------------------------------


async def run_saturated(
    pool: KeyPool, clock: ManualClock, seconds: float, workers: int = 50
) -> list[tuple[float, str]]:
    """Workers that take and immediately return leases as fast as the pool allows; the grant log."""
    grants: list[tuple[float, str]] = []

    async def worker() -> None:
        while True:
            try:
                lease = await pool.acquire(math.inf)
            except KeyPoolClosed:
                return
            grants.append((lease.acquired_at, lease.key_id))
            pool.release(lease, Outcome.success())

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    await settle()
    await advance(clock, seconds)
    pool.close()
    await asyncio.gather(*tasks)
    return [g for g in grants if g[0] < seconds]


def max_in_window(times: Sequence[float], window: float) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def test_pacing_uses_the_whole_quota_and_never_exceeds_a_providers_token_bucket() -> None:
    keys = [key("a", qps=5, rpm=6000), key("b", qps=2.5, rpm=6000), key("c", qps=10, rpm=120)]
    pool, clock, _ = make_pool(keys, burst_fraction=0.5)  # the production default
    grants = await run_saturated(pool, clock, seconds=60)
    by_key = {k.id: [t for t, kid in grants if kid == k.id] for k in keys}
    # the whole quota is used: rate x time, plus at most the burst (half a period's worth of calls);
    # c is bound by its rpm (2/s) once the burst of its per-minute bucket (60 calls) is spent
    assert 5 * 60 <= len(by_key["a"]) <= 5 * 60 + 2.5
    assert 2.5 * 60 <= len(by_key["b"]) <= 2.5 * 60 + 1.25
    assert 2 * 60 <= len(by_key["c"]) <= 2 * 60 + 60
    # a token bucket's bound: never more than burst + rate x window in any window
    assert max_in_window(by_key["a"], 1.0) <= 2.5 + 5
    assert max_in_window(by_key["b"], 10.0) <= 1.25 + 25
    assert max_in_window(by_key["c"], 1.0) <= 5 + 10
    assert max_in_window(by_key["c"], 60.0) <= 60 + 120
    # a provider enforcing exactly these limits as token buckets (the simulator's limiter) admits every call
    provider_clock = ManualClock()
    provider = RateLimiter(provider_clock)
    for t, key_id in sorted(grants):
        provider_clock.advance_to(t)
        limits = next(k for k in keys if k.id == key_id)
        admission = provider.try_acquire(key_id, limits.qps_limit, limits.rpm_limit, grace_s=0.0)
        assert admission.admitted, f"{key_id} at t={t:.3f} would get a 429"


async def test_waiting_does_not_poll() -> None:
    clock = CountingClock()
    pool, _, _ = make_pool([key("a", qps=1)], min_cooldown=30, max_cooldown=30, clock=clock)
    lease = await take(pool)
    pool.release(lease, Outcome.server_error())
    waiters = [asyncio.create_task(take(pool)) for _ in range(100)]
    await settle()
    requested = clock.timers_requested
    await advance(clock, 29.9, step=0.05)
    # 100 waiters, 600 clock steps: still no new timer, and nobody woken
    assert clock.timers_requested == requested <= 2
    assert not any(w.done() for w in waiters)
    await advance(clock, 0.2)
    assert sum(w.done() for w in waiters) == 1  # one token, one waiter woken
    for w in waiters:
        w.cancel()
    await settle()


async def test_waiters_are_served_first_come_first_served() -> None:
    pool, clock, _ = make_pool([key("a", qps=1)])
    await take(pool)
    order: list[str] = []

    async def waiter(name: str) -> None:
        await take(pool)
        order.append(name)

    tasks = []
    for name in "ABCDE":
        tasks.append(asyncio.create_task(waiter(name)))
        await settle()
    await advance(clock, 5.0)
    await asyncio.gather(*tasks)
    assert order == list("ABCDE")


async def test_many_calls_in_flight_on_one_key_are_allowed() -> None:
    pool, _, _ = make_pool([key("a", qps=100, rpm=6000)], burst_fraction=0.5)
    leases = [await take(pool) for _ in range(50)]  # the burst, without returning any
    assert {lease.key_id for lease in leases} == {"a"}
    assert pool.snapshot()[0].in_flight == 50


# --- cooldowns -----------------------------------------------------------------------------------


async def test_cooldown_grows_exponentially_is_clamped_and_resets_on_success() -> None:
    pool, clock, _ = make_pool([key("a")], min_cooldown=1, max_cooldown=8)
    seen = []
    for outcome in [
        Outcome.server_error(),
        Outcome.timeout(),
        Outcome.rate_limited(),
        Outcome.server_error(),
        Outcome.server_error(),
    ]:
        lease = await take(pool)
        pool.release(lease, outcome)
        seen.append(cooldown_of(pool, "a"))
        assert state_of(pool, "a") is KeyState.COOLING
        clock.advance(seen[-1])
        assert state_of(pool, "a") is KeyState.ENABLED
    assert seen == [1, 2, 4, 8, 8]
    lease = await take(pool)
    pool.release(lease, Outcome.success())
    lease = await take(pool)
    pool.release(lease, Outcome.server_error())
    assert cooldown_of(pool, "a") == 1


async def test_calls_failing_together_count_as_one_failure() -> None:
    pool, _, _ = make_pool([key("a")], min_cooldown=1, max_cooldown=60)
    leases = [await take(pool) for _ in range(10)]
    for lease in leases:
        pool.release(lease, Outcome.server_error())
    snapshot = pool.snapshot()[0]
    assert snapshot.consecutive_failures == 1
    assert snapshot.cooldown_remaining == 1
    assert snapshot.failures == 10


async def test_retry_after_is_honoured_even_beyond_the_backoff() -> None:
    pool, clock, _ = make_pool([key("a")], min_cooldown=1, max_cooldown=4)
    lease = await take(pool)
    pool.release(lease, Outcome.rate_limited(retry_after=7.5))
    assert cooldown_of(pool, "a") == 7.5
    waiter = asyncio.create_task(take(pool, deadline=20))
    await advance(clock, 7.4)
    assert not waiter.done()
    await advance(clock, 0.1)
    assert waiter.done()
    assert (await waiter).acquired_at == pytest.approx(7.5)
    # a Retry-After shorter than the backoff does not shorten it
    pool.release(await waiter, Outcome.rate_limited(retry_after=0.1))
    assert cooldown_of(pool, "a") == 2


# --- disabling -----------------------------------------------------------------------------------


async def test_a_rejected_key_is_disabled_with_a_warning_naming_only_its_id(caplog: pytest.LogCaptureFixture) -> None:
    pool, _, registry = make_pool([key(k) for k in "abc"], "round_robin")
    lease = await take(pool)
    assert lease.key_id == "a"
    with caplog.at_level(logging.DEBUG):
        pool.release(lease, Outcome.auth_error())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "a" in warnings[0].getMessage() and "disabled" in warnings[0].getMessage()
    assert "sk-secret" not in caplog.text
    assert state_of(pool, "a") is KeyState.DISABLED
    assert registry.get_sample_value("api_key_state", {"key_id": "a", "state": "disabled"}) == 1
    assert registry.get_sample_value("api_key_state", {"key_id": "a", "state": "enabled"}) == 0
    chosen = []
    for _ in range(20):
        lease = await take(pool)
        chosen.append(lease.key_id)
        pool.release(lease, Outcome.success())
    assert Counter(chosen) == {"b": 10, "c": 10}


async def test_all_keys_disabled_raises_no_usable_keys() -> None:
    pool, _, _ = make_pool([key("a"), key("b", enabled=False)])
    lease = await take(pool)
    pool.release(lease, Outcome.auth_error())
    with pytest.raises(NoUsableKeys, match=r"^All API keys are cooling down or disabled"):
        await take(pool, deadline=10)


async def test_a_waiter_learns_at_once_when_the_last_key_is_disabled() -> None:
    pool, _, _ = make_pool([key("a", qps=1)])
    first = await take(pool)
    waiter = asyncio.create_task(take(pool, deadline=30))
    await settle()
    pool.release(first, Outcome.auth_error())
    await settle()
    assert waiter.done()
    with pytest.raises(NoUsableKeys):
        waiter.result()


# --- waiting and deadlines -----------------------------------------------------------------------


async def test_when_every_key_is_cooling_callers_wait_then_succeed() -> None:
    pool, clock, _ = make_pool([key("a"), key("b")], min_cooldown=2)
    for _ in range(2):
        lease = await take(pool)
        pool.release(lease, Outcome.server_error())
    assert {s.state for s in pool.snapshot()} == {KeyState.COOLING}
    waiters = [asyncio.create_task(take(pool, deadline=5)) for _ in range(10)]
    await advance(clock, 1.9)
    assert not any(w.done() for w in waiters)
    await advance(clock, 0.2)
    leases = [await w for w in waiters]
    assert Counter(lease.key_id for lease in leases) == {"a": 5, "b": 5}


async def test_keys_at_their_rate_limit_give_deadline_exceeded_never_no_usable_keys() -> None:
    pool, clock, _ = make_pool([key("a", qps=1), key("b", qps=1)])
    await take(pool)
    await take(pool)
    waiter = asyncio.create_task(take(pool, deadline=0.5))
    await advance(clock, 0.4)
    assert not waiter.done()
    await advance(clock, 0.2)
    with pytest.raises(DeadlineExceeded, match="at their rate limit"):
        waiter.result()
    assert clock.now() >= 0.5


async def test_a_deadline_already_passed_fails_at_once() -> None:
    pool, clock, _ = make_pool([key("a")])
    clock.advance(10)
    with pytest.raises(DeadlineExceeded):
        await take(pool, deadline=9)


async def test_cooling_past_the_deadline_is_no_usable_keys_but_within_it_waits() -> None:
    pool, clock, _ = make_pool([key("a")], min_cooldown=8)
    lease = await take(pool)
    pool.release(lease, Outcome.server_error())
    with pytest.raises(NoUsableKeys):
        await take(pool, deadline=5)
    waiter = asyncio.create_task(take(pool, deadline=10))
    await advance(clock, 8.05)
    assert waiter.done()
    assert (await waiter).key_id == "a"


async def test_exclude_avoids_a_key_but_falls_back_when_it_is_the_only_hope() -> None:
    pool, clock, _ = make_pool([key("a"), key("b")], min_cooldown=2)
    assert (await pool.acquire(math.inf, {"a"})).key_id == "b"
    # b cools for 2 s: a caller avoiding a waits for b instead of taking a...
    lease = await pool.acquire(math.inf, {"a"})
    pool.release(lease, Outcome.server_error())
    waiter = asyncio.create_task(pool.acquire(5, {"a"}))
    await advance(clock, 1.0)
    assert not waiter.done()
    await advance(clock, 1.1)
    assert (await waiter).key_id == "b"
    # ...but if b cannot serve before the deadline, the avoided key is better than nothing
    pool.release(await pool.acquire(math.inf, {"a"}), Outcome.server_error())  # b cools again (4 s)
    assert (await pool.acquire(clock.now() + 1, {"a"})).key_id == "a"


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    pool, clock, _ = make_pool([key("a", qps=1)])
    first = await take(pool)
    waiter = asyncio.create_task(take(pool))
    await settle()
    assert pool.waiting == 1
    waiter.cancel()
    await settle()
    assert pool.waiting == 0
    pool.release(first, Outcome.success())
    await advance(clock, 1.0)
    assert pool.snapshot()[0].in_flight == 0
    assert (await take(pool)).key_id == "a"


async def test_close_wakes_waiters_and_unregisters_metrics() -> None:
    registry = CollectorRegistry()
    pool, _, _ = make_pool([key("a", qps=1)], registry=registry)
    await take(pool)
    waiter = asyncio.create_task(take(pool))
    await settle()
    pool.close()
    await settle()
    with pytest.raises(KeyPoolClosed):
        waiter.result()
    assert registry.get_sample_value("api_key_cooldown_seconds", {"key_id": "a"}) is None
    make_pool([key("a")], registry=registry)  # the names are free again


# --- leases, metrics, secrets --------------------------------------------------------------------


async def test_a_lease_cannot_be_returned_twice() -> None:
    pool, _, _ = make_pool([key("a")])
    lease = await take(pool)
    pool.release(lease, Outcome.success())
    with pytest.raises(ValueError, match="not active"):
        pool.release(lease, Outcome.success())


async def test_metrics_and_snapshot_report_each_key() -> None:
    pool, clock, registry = make_pool([key("a"), key("b")], "round_robin", min_cooldown=3)
    assert math.isnan(registry.get_sample_value("api_key_success_rate", {"key_id": "a"}) or 0.0)
    for outcome in (Outcome.success(), Outcome.success(), Outcome.success(), Outcome.server_error()):
        lease = await take(pool)
        clock.advance(0.5)
        pool.release(lease, outcome)
    sample = registry.get_sample_value
    assert sample("llm_calls_total", {"key_id": "a", "outcome": "success"}) == 2
    assert sample("llm_calls_total", {"key_id": "b", "outcome": "server_error"}) == 1
    assert sample("api_key_success_rate", {"key_id": "a"}) == 1.0
    assert sample("api_key_success_rate", {"key_id": "b"}) == 0.5
    assert sample("api_key_cooldown_seconds", {"key_id": "b"}) == 3.0
    assert sample("api_key_state", {"key_id": "b", "state": "cooling"}) == 1
    assert sample("llm_latency_seconds_count") == 4
    assert sample("llm_latency_seconds_bucket", {"le": "0.5"}) == 4
    a, b = pool.snapshot()
    assert (a.key_id, a.state, a.in_flight, a.calls_last_minute, a.successes, a.failures) == (
        "a",
        KeyState.ENABLED,
        0,
        2,
        2,
        0,
    )
    assert (b.state, b.cooldown_remaining, b.successes, b.failures, b.success_rate) == (
        KeyState.COOLING,
        3.0,
        1,
        1,
        0.5,
    )
    clock.advance(61)
    assert pool.snapshot()[0].calls_last_minute == 0
    assert pool.snapshot()[0].success_rate is None


async def test_an_abandoned_call_neither_cools_nor_counts_against_the_key() -> None:
    pool, _, registry = make_pool([key("a")])
    lease = await take(pool)
    pool.release(lease, Outcome.abandoned())
    snapshot = pool.snapshot()[0]
    assert (snapshot.state, snapshot.failures, snapshot.successes, snapshot.in_flight) == (KeyState.ENABLED, 0, 0, 0)
    assert registry.get_sample_value("llm_calls_total", {"key_id": "a", "outcome": "abandoned"}) == 1


async def test_no_secret_in_leases_snapshots_or_configs() -> None:
    config = key("a")
    pool, _, _ = make_pool([config])
    lease = await take(pool)
    text = " ".join([repr(lease), str(lease), repr(pool.snapshot()), repr(config), str(config)])
    assert "sk-secret" not in text
