"""Pending tasks, latest wins per (camera, group), released under an LLM budget with a fair share per camera."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from riskwatch.ratelimit import TokenBucket
from riskwatch.v1 import events_pb2
from riskwatch_scheduler.policy.triggers import Observation

BUDGET = "budget"
MIN_INTERVAL = "min_interval"
CAMERA_INTERVAL = "camera_interval"


class Resolved(NamedTuple):
    """How a pending task ended: the decision recorded for its group, and the serialised task if it was sent."""

    decision: events_pb2.GroupDecision
    task: bytes | None


@dataclass(slots=True)
class PendingTask:
    """A group that deserves a look, not yet sent. A newer frame of the same group replaces it."""

    camera_id: str
    group_id: str
    task: events_pb2.AssessmentTask
    reason: str
    priority: float
    capture: float  # capture time of the frame, seconds
    not_before: float  # the group's minimum interval
    observation: Observation
    # Why it was not sent at the last release (budget, min_interval, camera_interval).
    held: str = BUDGET
    # Completed by the task generator once the task is sent, superseded or expired. The detection record
    # waits for it, so it is acknowledged (and its decisions published) only when its groups are resolved.
    resolution: asyncio.Future[Resolved] | None = None


class FairShareQueue:
    """At most one pending task per (camera, group); `release` hands out tasks as the budget allows.

    Budget: a token bucket of `rate` tasks/s holding at most `burst` (rate 0 = unlimited).
    Fairness: start-time fair queueing over cameras — each camera has a virtual time that advances by
    1/weight per task sent; the backlogged camera with the smallest virtual time goes next (ties: the
    one whose best task has the higher priority), and within a camera the highest priority goes first.
    A camera that was idle re-enters at the current virtual time, so it cannot bank credit while idle.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        now: float,
        camera_interval: Callable[[str], float],
        camera_weight: Callable[[str], float],
    ) -> None:
        self._budget = TokenBucket(rate, burst, now) if rate > 0 else None
        self._camera_interval = camera_interval
        self._camera_weight = camera_weight
        self._pending: dict[str, dict[str, PendingTask]] = {}
        self._virtual: dict[str, float] = {}
        self._clock_v = 0.0
        self._camera_next: dict[str, float] = {}

    def __len__(self) -> int:
        return sum(len(groups) for groups in self._pending.values())

    def get(self, camera_id: str, group_id: str) -> PendingTask | None:
        return self._pending.get(camera_id, {}).get(group_id)

    def put(self, item: PendingTask, now: float) -> tuple[PendingTask, str] | None:
        """Queue `item`; returns the task it superseded and why that one was still waiting."""
        groups = self._pending.get(item.camera_id)
        if not groups:
            groups = self._pending.setdefault(item.camera_id, {})
            self._virtual[item.camera_id] = max(self._virtual.get(item.camera_id, 0.0), self._clock_v)
        old = groups.get(item.group_id)
        item.held = self.waiting_for(item, now)
        groups[item.group_id] = item
        return None if old is None else (old, old.held)

    def waiting_for(self, item: PendingTask, now: float) -> str:
        if item.not_before > now:
            return MIN_INTERVAL
        if self._camera_next.get(item.camera_id, 0.0) > now:
            return CAMERA_INTERVAL
        return BUDGET

    def forget(self, camera_id: str) -> bool:
        """Forget an idle camera's place in the fair share (not while it has tasks waiting); whether it went."""
        if camera_id in self._pending:
            return False
        self._virtual.pop(camera_id, None)
        self._camera_next.pop(camera_id, None)
        return True

    def expire(self, oldest_capture: float, now: float) -> list[tuple[PendingTask, str]]:
        """Drop tasks whose frame was captured before `oldest_capture` (the camera went quiet)."""
        gone: list[tuple[PendingTask, str]] = []
        for camera_id, groups in list(self._pending.items()):
            for group_id, item in list(groups.items()):
                if item.capture < oldest_capture:
                    gone.append((item, item.held))
                    del groups[group_id]
            if not groups:
                del self._pending[camera_id]
        return gone

    def release(self, now: float) -> list[PendingTask]:
        """The tasks to send now, in order, within the budget and the per-camera and per-group intervals."""
        out: list[PendingTask] = []
        budget = self._budget
        while budget is None or budget.wait_s(now) == 0:
            best: tuple[float, float, str, PendingTask] | None = None
            for camera_id, groups in self._pending.items():
                if self._camera_next.get(camera_id, 0.0) > now:
                    continue
                ready = [t for t in groups.values() if t.not_before <= now]
                if not ready:
                    continue
                top = max(ready, key=lambda t: (t.priority, -t.capture))
                key = (self._virtual[camera_id], -top.priority, camera_id, top)
                if best is None or key[:3] < best[:3]:
                    best = key
            if best is None:
                break
            virtual, _, camera_id, item = best
            groups = self._pending[camera_id]
            del groups[item.group_id]
            self._clock_v = virtual
            self._virtual[camera_id] = virtual + 1.0 / self._camera_weight(camera_id)
            interval = self._camera_interval(camera_id)
            if interval > 0:
                self._camera_next[camera_id] = now + interval
            if not groups:
                del self._pending[camera_id]
            if budget is not None:
                budget.take(now)
            out.append(item)
        for groups in self._pending.values():
            for item in groups.values():
                item.held = self.waiting_for(item, now)
        return out
