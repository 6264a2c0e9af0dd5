"""Camera risk state: latest verdict (or failure) per group, hysteresis, idempotent and order-safe updates."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum

from riskwatch import events
from riskwatch.domain import RiskLevel
from riskwatch.v1 import events_pb2
from riskwatch_aggregator.config import AggregatorConfig


class Outcome(StrEnum):
    """What applying one result did; everything but CHANGED leaves the visible state as it was."""

    CHANGED = "changed"
    UNCHANGED = "unchanged"  # same level and risk types as before
    DUPLICATE = "duplicate"  # a task id already applied (redelivery)
    STALE = "stale"  # its frame is not newer than the group's current verdict (out of order)
    HELD = "held"  # a lower level waiting out the de-escalation hold


@dataclass(slots=True)
class _Held:
    """Lower verdicts waiting out the hold before they may replace a higher one."""

    first_capture: float
    count: int


@dataclass(slots=True)
class CameraState:
    message: events_pb2.CameraRiskState
    held: dict[str, _Held] = field(default_factory=dict)
    recent_tasks: OrderedDict[str, None] = field(default_factory=OrderedDict)


class RiskStateBook:
    """All cameras' state in memory; `apply` says whether a result changed what operators see."""

    def __init__(self, config: AggregatorConfig) -> None:
        self._config = config
        self._cameras: dict[str, CameraState] = {}

    def known(self, camera_id: str) -> bool:
        return camera_id in self._cameras

    def cameras(self) -> list[str]:
        return sorted(self._cameras)

    def reset(self, camera_id: str, state: events_pb2.CameraRiskState | None) -> None:
        """Start a camera from its persisted state (after a restart), or empty."""
        message = events_pb2.CameraRiskState()
        if state is not None:
            message.CopyFrom(state)
        message.camera_id = camera_id
        self._cameras[camera_id] = CameraState(message)

    def forget(self, camera_id: str) -> None:
        self._cameras.pop(camera_id, None)

    def get(self, camera_id: str) -> events_pb2.CameraRiskState | None:
        cam = self._cameras.get(camera_id)
        return cam.message if cam else None

    def apply(self, result: events_pb2.AssessmentResult, now: float) -> Outcome:
        """Apply `result` at wall-clock `now`; escalation shows at once, de-escalation after the hold."""
        cam = self._cameras.get(result.camera_id)
        if cam is None:
            self.reset(result.camera_id, None)
            cam = self._cameras[result.camera_id]
        if result.task_id in cam.recent_tasks:
            return Outcome.DUPLICATE
        self._remember(cam, result.task_id)
        state = cam.message
        captured = events.seconds(result.capture_time)
        current = next((g for g in state.groups if g.group_id == result.group_id), None)
        if current is not None and captured <= events.seconds(current.capture_time):
            return Outcome.STALE
        changed = self._expire_groups(cam, now)
        if result.WhichOneof("outcome") != "verdict":
            return self._apply_failure(cam, current, result, now, changed)
        outcome = Outcome.CHANGED
        if current is not None and current.HasField("failure"):
            current.ClearField("failure")  # assessed again: what operators see is no longer stale
            changed = True
        if current is None:
            current = state.groups.add(group_id=result.group_id, since=events.timestamp(now))
            current.verdict.CopyFrom(result.verdict)
        else:
            old_level = RiskLevel.from_proto(current.verdict.risk_level)
            new_level = RiskLevel.from_proto(result.verdict.risk_level)
            if new_level < old_level and not self._may_deescalate(cam, result.group_id, captured):
                current.capture_time.CopyFrom(result.capture_time)  # still: older results stay stale
                return self._bump(state, result, now) if changed else Outcome.HELD
            cam.held.pop(result.group_id, None)
            if new_level != old_level:
                current.since.CopyFrom(events.timestamp(now))
            elif not _verdict_differs(current.verdict, result.verdict):
                outcome = Outcome.UNCHANGED
            current.verdict.CopyFrom(result.verdict)
        current.capture_time.CopyFrom(result.capture_time)
        current.task_id = result.task_id
        del current.member_track_ids[:]
        current.member_track_ids.extend(result.member_track_ids)
        if outcome is Outcome.UNCHANGED and not changed:
            return Outcome.UNCHANGED
        return self._bump(state, result, now)

    def _apply_failure(
        self,
        cam: CameraState,
        current: events_pb2.GroupRisk | None,
        result: events_pb2.AssessmentResult,
        now: float,
        changed: bool,
    ) -> Outcome:
        """Mark the group failed, keeping its last verdict (shown as stale): operators still see the last known risk,
        and that it is no longer being refreshed. Only a new failure kind changes the state: an LLM that keeps
        failing produces one change (and one alert) per group, not one per task."""
        failure = result.failure if result.HasField("failure") else events_pb2.Failure()
        if current is None:
            current = cam.message.groups.add(group_id=result.group_id, since=events.timestamp(now))
            new_kind = True
        else:
            new_kind = not current.HasField("failure") or current.failure.kind != failure.kind
        current.failure.CopyFrom(failure)
        current.capture_time.CopyFrom(result.capture_time)  # a verdict on an older frame would be no news now
        if not new_kind and not changed:
            return Outcome.UNCHANGED
        current.task_id = result.task_id
        del current.member_track_ids[:]
        current.member_track_ids.extend(result.member_track_ids)
        return self._bump(cam.message, result, now)

    def _remember(self, cam: CameraState, task_id: str) -> None:
        cam.recent_tasks[task_id] = None
        while len(cam.recent_tasks) > self._config.recent_task_ids:
            cam.recent_tasks.popitem(last=False)

    def _may_deescalate(self, cam: CameraState, group_id: str, captured: float) -> bool:
        held = cam.held.get(group_id)
        if held is None:
            held = cam.held[group_id] = _Held(captured, 0)
        held.count += 1
        after = self._config.deescalate_after
        return captured - held.first_capture >= self._config.deescalate_hold_s or (0 < after <= held.count)

    def _expire_groups(self, cam: CameraState, now: float) -> bool:
        state = cam.message
        keep = [g for g in state.groups if now - events.seconds(g.capture_time) < self._config.group_ttl_s]
        if len(keep) == len(state.groups):
            return False
        for gone in {g.group_id for g in state.groups} - {g.group_id for g in keep}:
            cam.held.pop(gone, None)
        kept = [events_pb2.GroupRisk.FromString(g.SerializeToString()) for g in keep]
        del state.groups[:]
        state.groups.extend(kept)
        return True

    @staticmethod
    def _bump(state: events_pb2.CameraRiskState, result: events_pb2.AssessmentResult, now: float) -> Outcome:
        state.max_level = max(
            (RiskLevel.from_proto(g.verdict.risk_level) for g in state.groups), default=RiskLevel.NONE
        ).proto
        state.version += 1
        state.last_task_id = result.task_id
        state.updated_time.CopyFrom(events.timestamp(now))
        return Outcome.CHANGED


def _verdict_differs(a: events_pb2.Verdict, b: events_pb2.Verdict) -> bool:
    return a.risk_level != b.risk_level or list(a.risk_types) != list(b.risk_types)
