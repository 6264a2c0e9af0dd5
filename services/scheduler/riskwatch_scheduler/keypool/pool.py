"""The pool: hands out leases within each key's limits, queues callers fairly, and learns from call outcomes."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry

from riskwatch.clock import SYSTEM_CLOCK, Clock, TimerHandle
from riskwatch_scheduler.keypool.errors import DeadlineExceeded, KeyPoolClosed, NoUsableKeys
from riskwatch_scheduler.keypool.key import PooledKey
from riskwatch_scheduler.keypool.lease import COOLING_OUTCOMES, KeyLease, KeySnapshot, KeyState, Outcome, OutcomeKind
from riskwatch_scheduler.keypool.metrics import PoolMetrics
from riskwatch_scheduler.keypool.strategies import SelectionStrategy, make_strategy
from riskwatch_scheduler.keys_config import ApiKeyConfig, ApiKeysConfig, CoolingConfig, SelectionStrategyName

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class _Waiter:
    future: asyncio.Future[KeyLease]
    exclude: frozenset[str]
    deadline: float
    since: float
    seq: int


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
        self._clock: Clock = clock or SYSTEM_CLOCK
        self._strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
        self._cooling = cooling or CoolingConfig()
        now = self._clock.now()
        self._keys = [PooledKey(i, k, burst_fraction, now) for i, k in enumerate(keys)]
        self._leases: dict[int, PooledKey] = {}
        self._last_lease_id = 0
        self._queue: deque[_Waiter] = deque()
        self._deadlines: list[tuple[float, int, _Waiter]] = []
        self._waiter_seq = itertools.count()
        self._timer: TimerHandle | None = None
        self._timer_at = math.inf
        self._closed = False
        self._metrics = PoolMetrics(registry)
        for key in self._keys:
            self._metrics.watch(key, self._clock)

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

    def _pick(self, usable: list[PooledKey], avoid: frozenset[str], deadline: float) -> PooledKey | None:
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

    def _grant(self, key: PooledKey, now: float) -> KeyLease:
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
        self._metrics.count_call(key.id, kind)
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
        if kind in COOLING_OUTCOMES:
            self._cool(key, lease, now, outcome.retry_after)
        elif kind is OutcomeKind.AUTH_ERROR:
            self._disable(key)
        else:
            return
        self._fail_hopeless_waiters()
        self._dispatch()

    def _cool(self, key: PooledKey, lease: KeyLease, now: float, retry_after: float | None) -> None:
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

    def _disable(self, key: PooledKey) -> None:
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
        self._metrics.unregister()
