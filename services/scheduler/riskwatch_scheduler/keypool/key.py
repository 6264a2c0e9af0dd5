"""One key's mutable state: its QPS and RPM buckets, cooldown, in-flight count and the last minute's calls."""

from __future__ import annotations

import math
from collections import deque

from riskwatch.ratelimit import TIME_EPSILON, TokenBucket
from riskwatch_scheduler.keypool.lease import KeyState
from riskwatch_scheduler.keys_config import ApiKeyConfig

RECENT_WINDOW_S = 60.0


def bucket_capacity(limit_per_period: float, burst_fraction: float) -> float:
    # A share of what a provider's own bucket (one period's worth) holds: the burst lets the pool catch
    # up after the event loop stalls, and the rest of the provider's bucket absorbs network jitter.
    return max(1.0, burst_fraction * limit_per_period)


class PooledKey:
    """Mutable state of one key; only touched from the event loop (metrics read it from any thread)."""

    __slots__ = (
        "_calls",
        "_outcomes",
        "consecutive_failures",
        "cooldown_until",
        "disabled",
        "failure_epoch",
        "failures",
        "id",
        "in_flight",
        "index",
        "priority",
        "qps",
        "rpm",
        "successes",
    )

    def __init__(self, index: int, config: ApiKeyConfig, burst_fraction: float, now: float) -> None:
        self.index = index
        self.id = config.id
        self.priority = config.priority
        self.qps = TokenBucket(config.qps_limit, bucket_capacity(config.qps_limit, burst_fraction), now)
        self.rpm = TokenBucket(config.rpm_limit / 60.0, bucket_capacity(config.rpm_limit, burst_fraction), now)
        self.disabled = not config.enabled
        self.cooldown_until = -math.inf
        # The last lease granted when the latest counted failure came in: only later leases are news.
        self.failure_epoch = 0
        self.consecutive_failures = 0
        self.in_flight = 0
        self.successes = 0
        self.failures = 0
        self._calls: deque[float] = deque()
        self._outcomes: deque[tuple[float, bool]] = deque()

    def ready_at(self) -> float:
        """Earliest time this key may be used, ignoring in-flight calls (they are not a limit)."""
        if self.disabled:
            return math.inf
        return max(self.cooldown_until, self.qps.available_at(), self.rpm.available_at())

    def usable(self, now: float) -> bool:
        return self.ready_at() <= now + TIME_EPSILON

    def take(self, now: float) -> None:
        """Count one call on this key; the caller checked `usable` first."""
        self.qps.take(now)
        self.rpm.take(now)
        self.in_flight += 1
        self._calls.append(now)

    def calls_last_minute(self, now: float) -> int:
        calls, horizon = self._calls, now - RECENT_WINDOW_S
        while calls and calls[0] <= horizon:
            calls.popleft()
        return len(calls)

    def record(self, now: float, ok: bool) -> None:
        outcomes, horizon = self._outcomes, now - RECENT_WINDOW_S
        outcomes.append((now, ok))
        while outcomes and outcomes[0][0] <= horizon:
            outcomes.popleft()

    def success_rate(self, now: float) -> float | None:
        # tuple(deque) copies atomically under the GIL, so a metrics scrape from another thread is safe
        recent = [ok for t, ok in tuple(self._outcomes) if t > now - RECENT_WINDOW_S]
        return sum(recent) / len(recent) if recent else None

    def recent_call_count(self, now: float) -> int:
        """Like calls_last_minute but without pruning: safe to call from a metrics thread."""
        return sum(1 for t in tuple(self._calls) if t > now - RECENT_WINDOW_S)

    def state(self, now: float) -> KeyState:
        if self.disabled:
            return KeyState.DISABLED
        if self.cooldown_until > now:
            return KeyState.COOLING
        return KeyState.ENABLED
