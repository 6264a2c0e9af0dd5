"""The API key pool: per-key QPS/RPM pacing, selection strategies, cooldowns, failover and fair waiting."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from riskwatch.errors import RiskwatchError

from .keys_config import ApiKeyConfig, ApiKeysConfig, CoolingConfig, SelectionStrategyName

log = logging.getLogger(__name__)

RECENT_WINDOW_S = 60.0
# Timers may fire a hair early; a token this close to due counts as available (no extra wake-up).
_TIME_EPSILON = 1e-6
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)


# --- clocks -------------------------------------------------------------------------------------


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic time in seconds plus a way to be called back at a given time on that clock."""

    def now(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle: ...


class MonotonicClock:
    """Real time: `time.monotonic()`, with call-backs scheduled on the running asyncio loop."""

    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, when - time.monotonic()), callback)


@dataclass(eq=False, slots=True)
class _ManualTimer:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that only moves when told to, firing due call-backs in order; for tests and simulations."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _ManualTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _ManualTimer(when, callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, running each due call-back at its own time."""
        self.advance_to(self._now + seconds)

    def advance_to(self, target: float) -> None:
        """Move time forward to `target`, running each due call-back at its own time."""
        if target < self._now:
            raise ValueError("a clock cannot go backwards")
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
        self._now = target

    def next_timer(self) -> float | None:
        """When the earliest pending call-back is due, if any."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None


# --- token buckets ------------------------------------------------------------------------------


class TokenBucket:
    """A token bucket kept as GCRA (one 'theoretical arrival time'), so checking costs no refill loop.

    Our own rather than aiolimiter's: the pool needs a non-blocking take, the time the next token is
    due (to sleep exactly that long) and an injected clock, none of which `AsyncLimiter` offers.
    """

    __slots__ = ("_interval", "_tat", "_tolerance", "capacity", "rate")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("a token bucket needs rate > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self._interval = 1.0 / rate
        self._tolerance = (capacity - 1.0) * self._interval
        self._tat = now  # a full bucket

    def available_at(self) -> float:
        """The earliest time one token can be taken."""
        return self._tat - self._tolerance

    def try_take(self, now: float) -> bool:
        if now + _TIME_EPSILON < self._tat - self._tolerance:
            return False
        self._tat = max(self._tat, now) + self._interval
        return True


def _bucket_capacity(limit_per_period: float, burst_fraction: float) -> float:
    # A share of what a provider's own bucket (one period's worth) holds: the burst lets the pool catch
    # up after the event loop stalls, and the rest of the provider's bucket absorbs network jitter.
    return max(1.0, burst_fraction * limit_per_period)


# --- leases, outcomes, snapshots, errors --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyLease:
    """Permission to make one call with one key; give it back with `KeyPool.release`. Holds no secret."""

    key_id: str
    lease_id: int
    acquired_at: float


class OutcomeKind(StrEnum):
    SUCCESS = "success"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    AUTH_ERROR = "auth_error"
    OTHER_ERROR = "other_error"
    # the call was given up by us (cancelled, or cut short by the task's deadline): says nothing about the key
    ABANDONED = "abandoned"


_COOLING_OUTCOMES = frozenset({OutcomeKind.RATE_LIMITED, OutcomeKind.SERVER_ERROR, OutcomeKind.TIMEOUT})


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a call made under a lease ended."""

    kind: OutcomeKind
    retry_after: float | None = None

    @classmethod
    def success(cls) -> Outcome:
        return _SUCCESS

    @classmethod
    def rate_limited(cls, retry_after: float | None = None) -> Outcome:
        return cls(OutcomeKind.RATE_LIMITED, retry_after)

    @classmethod
    def server_error(cls) -> Outcome:
        return _SERVER_ERROR

    @classmethod
    def timeout(cls) -> Outcome:
        return _TIMEOUT

    @classmethod
    def auth_error(cls) -> Outcome:
        return _AUTH_ERROR

    @classmethod
    def other_error(cls) -> Outcome:
        return _OTHER_ERROR

    @classmethod
    def abandoned(cls) -> Outcome:
        return _ABANDONED


_SUCCESS = Outcome(OutcomeKind.SUCCESS)
_SERVER_ERROR = Outcome(OutcomeKind.SERVER_ERROR)
_TIMEOUT = Outcome(OutcomeKind.TIMEOUT)
_AUTH_ERROR = Outcome(OutcomeKind.AUTH_ERROR)
_OTHER_ERROR = Outcome(OutcomeKind.OTHER_ERROR)
_ABANDONED = Outcome(OutcomeKind.ABANDONED)


class KeyState(StrEnum):
    ENABLED = "enabled"
    COOLING = "cooling"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """One key's state for dashboards and metrics (never its secret)."""

    key_id: str
    state: KeyState
    priority: int
    cooldown_remaining: float
    in_flight: int
    calls_last_minute: int
    successes: int
    failures: int
    consecutive_failures: int
    success_rate: float | None  # over the last minute; None when there were no completed calls


class KeyPoolError(RiskwatchError):
    """Root of the key pool's errors."""


class DeadlineExceeded(KeyPoolError):
    """No key could be used before the caller's deadline."""


class NoUsableKeys(KeyPoolError):
    """Every key is disabled, or cooling down until after the caller's deadline."""


class KeyPoolClosed(KeyPoolError):
    """The pool was closed while waiting, or before the call."""


# --- per-key state ------------------------------------------------------------------------------


class _Key:
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
        self.qps = TokenBucket(config.qps_limit, _bucket_capacity(config.qps_limit, burst_fraction), now)
        self.rpm = TokenBucket(config.rpm_limit / 60.0, _bucket_capacity(config.rpm_limit, burst_fraction), now)
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
        return self.ready_at() <= now + _TIME_EPSILON

    def take(self, now: float) -> None:
        self.qps.try_take(now)
        self.rpm.try_take(now)
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


# --- selection strategies -----------------------------------------------------------------------


class CandidateKey(Protocol):
    """What a strategy may look at when choosing a key."""

    @property
    def index(self) -> int: ...
    @property
    def id(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    def calls_last_minute(self, now: float) -> int: ...


K = TypeVar("K", bound=CandidateKey)


class SelectionStrategy(Protocol):
    """Chooses one of the keys usable right now; `candidates` is non-empty and in configuration order."""

    name: str

    def choose(self, candidates: Sequence[K], now: float) -> K: ...


class LeastLoaded:
    """Fewest calls in flight, then fewest calls in the last minute, then the higher priority, then order."""

    name = SelectionStrategyName.LEAST_LOADED.value

    def choose(self, candidates: Sequence[K], now: float) -> K:
        return min(candidates, key=lambda k: (k.in_flight, k.calls_last_minute(now), -k.priority, k.index))


class RoundRobin:
    """True rotation: the next usable key after the one chosen last, in configuration order."""

    name = SelectionStrategyName.ROUND_ROBIN.value

    def __init__(self) -> None:
        self._next_index = 0

    def choose(self, candidates: Sequence[K], now: float) -> K:
        chosen = next((k for k in candidates if k.index >= self._next_index), candidates[0])
        self._next_index = chosen.index + 1
        return chosen


class Weighted:
    """Smooth weighted round-robin (as nginx): each key's share of choices is proportional to its priority."""

    name = SelectionStrategyName.WEIGHTED.value

    def __init__(self) -> None:
        self._current: dict[int, int] = {}

    def choose(self, candidates: Sequence[K], now: float) -> K:
        current = self._current
        total = 0
        chosen = candidates[0]
        best = -math.inf
        for k in candidates:
            weight = current.get(k.index, 0) + k.priority
            current[k.index] = weight
            total += k.priority
            if weight > best:
                chosen, best = k, weight
        current[chosen.index] -= total
        return chosen


def make_strategy(name: SelectionStrategyName | str) -> SelectionStrategy:
    strategies: dict[SelectionStrategyName, Callable[[], SelectionStrategy]] = {
        SelectionStrategyName.LEAST_LOADED: LeastLoaded,
        SelectionStrategyName.ROUND_ROBIN: RoundRobin,
        SelectionStrategyName.WEIGHTED: Weighted,
    }
    return strategies[SelectionStrategyName(name)]()


# --- metrics ------------------------------------------------------------------------------------


class _PoolMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.registry = registry
        self.success_rate = Gauge(
            "api_key_success_rate",
            "Share of an API key's calls that succeeded over the last minute (NaN when idle)",
            ["key_id"],
            registry=registry,
        )
        self.state = Gauge(
            "api_key_state",
            "1 for the state an API key is in, 0 for the others",
            ["key_id", "state"],
            registry=registry,
        )
        self.cooldown = Gauge(
            "api_key_cooldown_seconds",
            "Seconds until a cooling API key may be used again",
            ["key_id"],
            registry=registry,
        )
        self.calls = Counter("llm_calls", "LLM calls by API key and outcome", ["key_id", "outcome"], registry=registry)
        self.latency = Histogram(
            "llm_latency_seconds", "Duration of one LLM call", buckets=LATENCY_BUCKETS, registry=registry
        )

    def collectors(self) -> tuple[Gauge | Counter | Histogram, ...]:
        return (self.success_rate, self.state, self.cooldown, self.calls, self.latency)


# --- the pool -----------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Waiter:
    future: asyncio.Future[KeyLease]
    exclude: frozenset[str]
    deadline: float
    since: float
    seq: int = field(default=0)


class KeyPool:
    """Hands out leases on API keys within each key's QPS and RPM limits, and learns from call outcomes.

    Callers that find no usable key queue FIFO; a single timer wakes the pool when the earliest key
    becomes usable (token due, cooldown over) or a waiter's deadline passes, and only the waiters that
    get a key are woken. Several calls may be in flight on one key: the rate limits are the only bound.
    """

    def __init__(
        self,
        keys: Sequence[ApiKeyConfig],
        *,
        strategy: SelectionStrategy | SelectionStrategyName | str = SelectionStrategyName.LEAST_LOADED,
        cooling: CoolingConfig | None = None,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = REGISTRY,
        burst_fraction: float = 0.5,
    ) -> None:
        if not keys:
            raise ValueError("a key pool needs at least one key")
        if not 0 < burst_fraction <= 1:
            raise ValueError("burst_fraction must be in (0, 1]")
        if len({k.id for k in keys}) != len(keys):
            raise ValueError("key ids must be unique")
        self._clock: Clock = clock or MonotonicClock()
        self._strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
        self._cooling = cooling or CoolingConfig()
        now = self._clock.now()
        self._keys = [_Key(i, k, burst_fraction, now) for i, k in enumerate(keys)]
        self._by_id = {k.id: k for k in self._keys}
        self._leases: dict[int, _Key] = {}
        self._last_lease_id = 0
        self._queue: deque[_Waiter] = deque()
        self._deadlines: list[tuple[float, int, _Waiter]] = []
        self._waiter_seq = itertools.count()
        self._timer: TimerHandle | None = None
        self._timer_at = math.inf
        self._closed = False
        self._metrics = _PoolMetrics(registry)
        self._calls_children: dict[tuple[str, OutcomeKind], Counter] = {}
        for key in self._keys:
            self._bind_gauges(key)

    @classmethod
    def from_config(
        cls,
        config: ApiKeysConfig,
        *,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> KeyPool:
        return cls(
            config.keys,
            strategy=config.selection_strategy,
            cooling=config.cooling,
            clock=clock,
            registry=registry,
        )

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def strategy(self) -> SelectionStrategy:
        return self._strategy

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(k.id for k in self._keys)

    @property
    def waiting(self) -> int:
        """Callers currently queued for a key."""
        return sum(1 for w in self._queue if not w.future.done())

    # -- acquiring -------------------------------------------------------------------------------

    async def acquire(self, deadline: float, exclude: Iterable[str] = frozenset()) -> KeyLease:
        """A lease on a usable key, waiting (FIFO, without polling) until one is usable or `deadline`.

        `exclude` names keys to avoid (e.g. the one that just failed); it is ignored when no other key
        could serve before the deadline. Raises DeadlineExceeded, NoUsableKeys or KeyPoolClosed.
        """
        if self._closed:
            raise KeyPoolClosed("the key pool is closed")
        now = self._clock.now()
        if now >= deadline:
            raise DeadlineExceeded("the deadline had already passed when a key was requested")
        self._raise_if_hopeless(deadline)
        avoid = frozenset(exclude)
        if not self._queue:
            key = self._pick([k for k in self._keys if k.usable(now)], avoid, deadline)
            if key is not None:
                return self._grant(key, now)
        future: asyncio.Future[KeyLease] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(future, avoid, deadline, now, next(self._waiter_seq))
        self._queue.append(waiter)
        heapq.heappush(self._deadlines, (deadline, waiter.seq, waiter))
        self._dispatch()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            # Served in the same loop turn as the cancellation: give the unused lease back.
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(future.result(), Outcome.abandoned())
            raise

    def _pick(self, usable: list[_Key], avoid: frozenset[str], deadline: float) -> _Key | None:
        if not usable:
            return None
        candidates = usable
        if avoid:
            candidates = [k for k in usable if k.id not in avoid]
            if not candidates:
                # Wait for a key we were not told to avoid, unless none can be used before the deadline.
                if any(k.id not in avoid and k.ready_at() <= deadline for k in self._keys):
                    return None
                candidates = usable
        return self._strategy.choose(candidates, self._clock.now())

    def _grant(self, key: _Key, now: float) -> KeyLease:
        key.take(now)
        self._last_lease_id += 1
        lease = KeyLease(key.id, self._last_lease_id, now)
        self._leases[lease.lease_id] = key
        return lease

    def _raise_if_hopeless(self, deadline: float) -> None:
        if self._earliest_cooldown_end() > deadline:
            raise NoUsableKeys(self._hopeless_message())

    def _earliest_cooldown_end(self) -> float:
        """When the first key that is not disabled stops cooling (inf when all are disabled)."""
        return min((k.cooldown_until for k in self._keys if not k.disabled), default=math.inf)

    def _hopeless_message(self) -> str:
        disabled = sum(1 for k in self._keys if k.disabled)
        cooling = len(self._keys) - disabled
        return f"All API keys are cooling down or disabled ({disabled} disabled, {cooling} cooling past the deadline)"

    # -- waking waiters --------------------------------------------------------------------------

    def _dispatch(self) -> None:
        now = self._clock.now()
        self._expire(now)
        self._serve(now)
        self._arm(now)

    def _expire(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and (deadlines[0][0] <= now or deadlines[0][2].future.done()):
            _, _, waiter = heapq.heappop(deadlines)
            if not waiter.future.done():
                waiter.future.set_exception(
                    DeadlineExceeded(
                        f"no API key could be used before the deadline (waited {now - waiter.since:.3f} s; "
                        f"{self._busy_summary(now)})"
                    )
                )

    def _busy_summary(self, now: float) -> str:
        states = [k.state(now) for k in self._keys]
        return (
            f"{states.count(KeyState.ENABLED)} at their rate limit, "
            f"{states.count(KeyState.COOLING)} cooling, {states.count(KeyState.DISABLED)} disabled"
        )

    def _serve(self, now: float) -> None:
        queue = self._queue
        while queue and queue[0].future.done():
            queue.popleft()
        if not queue:
            return
        usable = [k for k in self._keys if k.usable(now)]
        if not usable:
            return
        for waiter in queue:
            if waiter.future.done():
                continue
            key = self._pick(usable, waiter.exclude, waiter.deadline)
            if key is None:
                continue
            waiter.future.set_result(self._grant(key, now))
            if not key.usable(now):
                usable.remove(key)
                if not usable:
                    break
        while queue and queue[0].future.done():
            queue.popleft()

    def _arm(self, now: float) -> None:
        if not self._queue:
            return
        wake = min((t for t in (k.ready_at() for k in self._keys) if t > now), default=math.inf)
        if self._deadlines:
            wake = min(wake, self._deadlines[0][0])
        if wake == math.inf or wake >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = wake
        self._timer = self._clock.call_at(wake, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, math.inf
        if not self._closed:
            self._dispatch()

    def _fail_hopeless_waiters(self) -> None:
        earliest = self._earliest_cooldown_end()
        message = None
        for waiter in self._queue:
            if not waiter.future.done() and earliest > waiter.deadline:
                message = message or self._hopeless_message()
                waiter.future.set_exception(NoUsableKeys(message))

    # -- releasing -------------------------------------------------------------------------------

    def release(self, lease: KeyLease, outcome: Outcome) -> None:
        """Return a lease and report how its call ended; failures cool or disable the key."""
        key = self._leases.pop(lease.lease_id, None)
        if key is None:
            raise ValueError(f"lease {lease.lease_id} on key {lease.key_id} is not active (released twice?)")
        now = self._clock.now()
        key.in_flight -= 1
        kind = outcome.kind
        self._calls_child(key.id, kind).inc()
        if kind is OutcomeKind.ABANDONED:
            return
        self._metrics.latency.observe(max(0.0, now - lease.acquired_at))
        key.record(now, kind is OutcomeKind.SUCCESS)
        if kind is OutcomeKind.SUCCESS:
            key.successes += 1
            # A success of a call sent before the latest failure is old news and does not end the streak.
            if lease.lease_id > key.failure_epoch:
                key.consecutive_failures = 0
            return
        key.failures += 1
        if kind in _COOLING_OUTCOMES:
            self._cool(key, lease, now, outcome.retry_after)
        elif kind is OutcomeKind.AUTH_ERROR:
            self._disable(key)
        else:
            return
        self._fail_hopeless_waiters()
        self._dispatch()

    def _cool(self, key: _Key, lease: KeyLease, now: float, retry_after: float | None) -> None:
        # Calls already in flight when a key starts failing fail together; they are one piece of news,
        # so only a call sent after the previous failure lengthens the backoff.
        if lease.lease_id > key.failure_epoch:
            key.consecutive_failures += 1
            key.failure_epoch = self._last_lease_id
        cooling = self._cooling
        backoff = cooling.min_cooldown * 2.0 ** min(key.consecutive_failures - 1, 60)
        backoff = min(max(backoff, cooling.min_cooldown), cooling.max_cooldown)
        if retry_after is not None and retry_after > backoff:
            backoff = retry_after
        key.cooldown_until = max(key.cooldown_until, now + backoff)

    def _disable(self, key: _Key) -> None:
        if key.disabled:
            return
        key.disabled = True
        log.warning(
            "API key %s disabled: the provider rejected it (HTTP 401/403); traffic moves to the other keys",
            key.id,
        )

    # -- observing -------------------------------------------------------------------------------

    def snapshot(self) -> tuple[KeySnapshot, ...]:
        now = self._clock.now()
        return tuple(
            KeySnapshot(
                key_id=k.id,
                state=k.state(now),
                priority=k.priority,
                cooldown_remaining=max(0.0, k.cooldown_until - now) if not k.disabled else 0.0,
                in_flight=k.in_flight,
                calls_last_minute=k.recent_call_count(now),
                successes=k.successes,
                failures=k.failures,
                consecutive_failures=k.consecutive_failures,
                success_rate=k.success_rate(now),
            )
            for k in self._keys
        )

    def _calls_child(self, key_id: str, kind: OutcomeKind) -> Counter:
        child = self._calls_children.get((key_id, kind))
        if child is None:
            child = self._calls_children[(key_id, kind)] = self._metrics.calls.labels(key_id, kind.value)
        return child

    def _bind_gauges(self, key: _Key) -> None:
        # Computed at scrape time: nothing to update on the hot path, and cooldowns count down by themselves.
        clock, metrics = self._clock, self._metrics

        def success_rate() -> float:
            rate = key.success_rate(clock.now())
            return math.nan if rate is None else rate

        metrics.success_rate.labels(key.id).set_function(success_rate)
        metrics.cooldown.labels(key.id).set_function(
            lambda: 0.0 if key.disabled else max(0.0, key.cooldown_until - clock.now())
        )
        for state in KeyState:
            metrics.state.labels(key.id, state.value).set_function(self._state_indicator(key, state))

    def _state_indicator(self, key: _Key, state: KeyState) -> Callable[[], float]:
        clock = self._clock
        return lambda: 1.0 if key.state(clock.now()) is state else 0.0

    # -- closing ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Fail every waiter with KeyPoolClosed, stop the timer and unregister the metrics."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        for waiter in self._queue:
            if not waiter.future.done():
                waiter.future.set_exception(KeyPoolClosed("the key pool was closed"))
        self._queue.clear()
        self._deadlines.clear()
        registry = self._metrics.registry
        if registry is not None:
            for collector in self._metrics.collectors():
                registry.unregister(collector)
