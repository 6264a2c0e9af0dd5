"""The token bucket every pacer uses (the key pool, the simulated provider, the task budget), kept as GCRA.

Our own rather than a library's: callers need a non-blocking take, the time the next token is due (to sleep
exactly that long or to answer Retry-After), a take that may borrow a little ahead (the simulator's grace), a
limit changed in place and time passed in by the caller (a manual clock in tests). aiolimiter only blocks,
`limits` and `token-bucket` read the system clock themselves, and pyrate-limiter keeps a log of every call.
"""

from __future__ import annotations

__all__ = ["TIME_EPSILON", "TokenBucket"]

# Timers may fire a hair early and float arithmetic lands a hair short: a token this close to due is there.
TIME_EPSILON = 1e-6


class TokenBucket:
    """Holds up to `capacity` tokens, refilled continuously at `rate` per second; starts full.

    Kept as one 'theoretical arrival time' (GCRA), so checking costs no refill arithmetic. Times are the
    caller's clock in seconds; a clock that steps back (wall time) keeps the tokens already earned.
    """

    __slots__ = ("_interval", "_last", "_tat", "_tolerance", "capacity", "rate")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = 0.0
        self.capacity = 0.0
        self._interval = self._tolerance = 0.0
        self._set_limits(rate, capacity)
        self._tat = now  # a full bucket
        self._last = now

    def _set_limits(self, rate: float, capacity: float) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("a token bucket needs rate > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self._interval = 1.0 / rate
        self._tolerance = (capacity - 1.0) * self._interval

    def _observe(self, now: float) -> None:
        if now < self._last:
            self._tat -= self._last - now
        self._last = now

    def available_at(self) -> float:
        """The earliest time one token can be taken (on the clock of the latest call)."""
        return self._tat - self._tolerance

    def wait_s(self, now: float, grace_s: float = 0.0) -> float:
        """Seconds until one token is there, counting `grace_s` of future refill as there already; 0 = now."""
        self._observe(now)
        wait = self._tat - self._tolerance - grace_s - now
        return wait if wait > TIME_EPSILON else 0.0

    def take(self, now: float) -> None:
        """Take one token, borrowing from the future when there is none (later takes wait that much longer)."""
        self._observe(now)
        self._tat = max(self._tat, now) + self._interval

    def try_take(self, now: float, grace_s: float = 0.0) -> bool:
        """Take one token if `wait_s(now, grace_s)` is 0."""
        if self.wait_s(now, grace_s) > 0:
            return False
        self.take(now)
        return True

    def tokens(self, now: float) -> float:
        """Tokens there now (negative while a borrowed one is being paid back)."""
        self._observe(now)
        return self.capacity - max(0.0, self._tat - now) * self.rate

    def retune(self, rate: float, capacity: float, now: float) -> None:
        """Apply changed limits, keeping the tokens already earned (at most the new capacity) or owed."""
        tokens = min(self.tokens(now), capacity)
        self._set_limits(rate, capacity)
        self._tat = now + (capacity - tokens) * self._interval
