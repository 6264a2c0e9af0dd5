"""Per-key request limits as a provider enforces them: a QPS and an RPM token bucket per key."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]

# the grace may forgive jitter but never a whole extra request: one request over the limit in a
# burst is always refused, however high the rate
MAX_GRACE_TOKENS = 0.5
# float refill arithmetic lands a hair short of a whole token at exactly the right moment
EPSILON_TOKENS = 1e-9


@dataclass(slots=True)
class TokenBucket:
    """Holds up to `capacity` requests' worth of tokens, refilled continuously at `rate` per second."""

    limit: float
    period_s: float
    capacity: float
    rate: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, limit: float, period_s: float, now: float) -> TokenBucket:
        # a limit below one per period still has to admit a single request
        capacity = max(limit, 1.0)
        return cls(limit, period_s, capacity=capacity, rate=limit / period_s, tokens=capacity, updated=now)

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait_s(self, grace_s: float) -> float:
        """Seconds until one token is available, counting `grace_s` of refill (at most half a token) as there."""
        deficit = 1.0 - self.tokens - min(grace_s * self.rate, MAX_GRACE_TOKENS) - EPSILON_TOKENS
        return max(0.0, deficit / self.rate)

    def retune(self, limit: float) -> None:
        """Apply a changed limit, keeping the tokens already earned (capped by the new capacity)."""
        self.limit = limit
        self.capacity = max(limit, 1.0)
        self.rate = limit / self.period_s
        self.tokens = min(self.tokens, self.capacity)


@dataclass(frozen=True, slots=True)
class Admission:
    """The outcome of asking for one request's worth of capacity."""

    admitted: bool
    retry_after_s: float  # 0 when admitted
    limit_requests: float | None  # the binding limit, for the x-ratelimit-* headers
    remaining_requests: int


class RateLimiter:
    """Admits or refuses requests per key label; a refused request does not consume capacity."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._qps: dict[str, TokenBucket] = {}
        self._rpm: dict[str, TokenBucket] = {}

    def try_acquire(self, label: str, qps: float | None, rpm: float | None, grace_s: float) -> Admission:
        now = self._clock()
        buckets: list[TokenBucket] = []
        if qps is not None:
            buckets.append(self._bucket(self._qps, label, qps, 1.0, now))
        if rpm is not None:
            buckets.append(self._bucket(self._rpm, label, rpm, 60.0, now))
        if not buckets:
            return Admission(admitted=True, retry_after_s=0.0, limit_requests=None, remaining_requests=0)
        wait_s = max(bucket.wait_s(grace_s) for bucket in buckets)
        if wait_s > 0:
            return Admission(False, wait_s, rpm if rpm is not None else qps, self._remaining(buckets))
        for bucket in buckets:
            # within the grace a bucket may go slightly negative: the request borrowed from the future
            bucket.tokens -= 1.0
        return Admission(True, 0.0, rpm if rpm is not None else qps, self._remaining(buckets))

    def reset(self) -> None:
        """Forget all buckets: every key starts again with full capacity."""
        self._qps.clear()
        self._rpm.clear()

    @staticmethod
    def _bucket(buckets: dict[str, TokenBucket], label: str, limit: float, period_s: float, now: float) -> TokenBucket:
        bucket = buckets.get(label)
        if bucket is None:
            bucket = buckets[label] = TokenBucket.full(limit, period_s, now)
        bucket.refill(now)
        if bucket.limit != limit:
            bucket.retune(limit)
        return bucket

    @staticmethod
    def _remaining(buckets: list[TokenBucket]) -> int:
        return max(0, int(min(bucket.tokens for bucket in buckets)))
