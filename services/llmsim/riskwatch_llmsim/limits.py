"""Per-key request limits as a provider enforces them: a QPS and an RPM token bucket per key."""

from __future__ import annotations

from dataclasses import dataclass

from riskwatch.clock import SYSTEM_CLOCK, Clock
from riskwatch.ratelimit import TokenBucket

# the grace may forgive jitter but never a whole extra request: one request over the limit in a
# burst is always refused, however high the rate
MAX_GRACE_TOKENS = 0.5


@dataclass(frozen=True, slots=True)
class Admission:
    """The outcome of asking for one request's worth of capacity."""

    admitted: bool
    retry_after_s: float  # 0 when admitted
    limit_requests: float | None  # the binding limit, for the x-ratelimit-* headers
    remaining_requests: int


class RateLimiter:
    """Admits or refuses requests per key label; a refused request does not consume capacity.

    A key's bucket holds one period's worth of requests (at least one) and starts full.
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._qps: dict[str, TokenBucket] = {}
        self._rpm: dict[str, TokenBucket] = {}

    def try_acquire(self, label: str, qps: float | None, rpm: float | None, grace_s: float) -> Admission:
        now = self._clock.now()
        buckets: list[TokenBucket] = []
        if qps is not None:
            buckets.append(self._bucket(self._qps, label, qps, 1.0, now))
        if rpm is not None:
            buckets.append(self._bucket(self._rpm, label, rpm, 60.0, now))
        if not buckets:
            return Admission(admitted=True, retry_after_s=0.0, limit_requests=None, remaining_requests=0)
        wait_s = max(bucket.wait_s(now, min(grace_s, MAX_GRACE_TOKENS / bucket.rate)) for bucket in buckets)
        if wait_s > 0:
            return Admission(False, wait_s, rpm if rpm is not None else qps, self._remaining(buckets, now))
        for bucket in buckets:
            # within the grace a bucket may go slightly negative: the request borrowed from the future
            bucket.take(now)
        return Admission(True, 0.0, rpm if rpm is not None else qps, self._remaining(buckets, now))

    def reset(self) -> None:
        """Forget all buckets: every key starts again with full capacity."""
        self._qps.clear()
        self._rpm.clear()

    @staticmethod
    def _bucket(buckets: dict[str, TokenBucket], label: str, limit: float, period_s: float, now: float) -> TokenBucket:
        # a limit below one per period still has to admit a single request
        rate, capacity = limit / period_s, max(limit, 1.0)
        bucket = buckets.get(label)
        if bucket is None:
            bucket = buckets[label] = TokenBucket(rate, capacity, now)
        elif bucket.rate != rate or bucket.capacity != capacity:
            bucket.retune(rate, capacity, now)
        return bucket

    @staticmethod
    def _remaining(buckets: list[TokenBucket], now: float) -> int:
        # a hair of float error must not turn 4 tokens into 3
        return max(0, int(min(bucket.tokens(now) for bucket in buckets) + 1e-9))
