"""Time for whatever paces or waits: the Clock protocol, the monotonic system clock, a manual clock for tests."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "MonotonicClock", "TimerHandle"]


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


# It holds no state, so every default can share it.
SYSTEM_CLOCK = MonotonicClock()


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
