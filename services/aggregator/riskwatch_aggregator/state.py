"""Camera risk state: latest verdict per group, hysteresis, idempotent and order-safe updates."""

from __future__ import annotations

from dataclasses import dataclass, field

from riskwatch import events
from riskwatch.v1 import events_pb2

from riskwatch_aggregator.config import AggregatorConfig


@dataclass
class _Pending:
    """A lower verdict waiting out the hold before it may replace a higher one."""

    verdict: events_pb2.Verdict
    first_seen: float
    count: int


@dataclass
class CameraState:
    camera_id: str
    message: events_pb2.CameraRiskState
    pending: dict[str, _Pending] = field(default_factory=dict)


class RiskStateBook:
    """All cameras' state in memory; `apply` says whether a result changed what operators see."""

    def __init__(self, config: AggregatorConfig) -> None:
        self._config = config
        self._cameras: dict[str, CameraState] = {}

    def known(self, camera_id: str) -> bool:
        return camera_id in self._cameras

    def restore(self, state: events_pb2.CameraRiskState) -> None:
        """Seed a camera from its persisted state (after a restart)."""
        if state.camera_id not in self._cameras:
            self._cameras[state.camera_id] = CameraState(state.camera_id, state)

    def get(self, camera_id: str) -> events_pb2.CameraRiskState | None:
        cam = self._cameras.get(camera_id)
        return cam.message if cam else None

    def apply(self, result: events_pb2.AssessmentResult, now: float) -> events_pb2.CameraRiskState | None:
        """The new state if `result` changed it; None for failures, duplicates, stale or held-back results."""
        if result.WhichOneof("outcome") != "verdict":
            return None
        cam = self._cameras.setdefault(
            result.camera_id, CameraState(result.camera_id, events_pb2.CameraRiskState(camera_id=result.camera_id))
        )
        state = cam.message
        current = next((g for g in state.groups if g.group_id == result.group_id), None)
        captured = events.seconds(result.capture_time)
        if current is not None and captured <= events.seconds(current.capture_time):
            return None  # a redelivery (same task) or an out-of-order older result
        changed = self._expire_groups(state, now)
        new_level = events.RISK_ORDER[result.verdict.risk_level]
        if current is None:
            current = state.groups.add(group_id=result.group_id, since=events.timestamp(now))
            current.verdict.CopyFrom(result.verdict)
            changed = True
        else:
            old_level = events.RISK_ORDER[current.verdict.risk_level]
            if new_level < old_level and not self._may_deescalate(cam, result, now):
                current.capture_time.CopyFrom(result.capture_time)
                return self._bump(state, result, now) if changed else None
            cam.pending.pop(result.group_id, None)
            if new_level != old_level:
                current.since.CopyFrom(events.timestamp(now))
            changed = changed or new_level != old_level or _verdict_differs(current.verdict, result.verdict)
            current.verdict.CopyFrom(result.verdict)
        current.capture_time.CopyFrom(result.capture_time)
        current.task_id = result.task_id
        del current.member_track_ids[:]
        current.member_track_ids.extend(result.member_track_ids)
        return self._bump(state, result, now) if changed else None

    def _may_deescalate(self, cam: CameraState, result: events_pb2.AssessmentResult, now: float) -> bool:
        pending = cam.pending.get(result.group_id)
        if pending is None:
            cam.pending[result.group_id] = _Pending(result.verdict, now, 1)
            return self._config.deescalate_hold_s == 0 or self._config.deescalate_after <= 1
        pending.count += 1
        return (
            now - pending.first_seen >= self._config.deescalate_hold_s or pending.count >= self._config.deescalate_after
        )

    def _expire_groups(self, state: events_pb2.CameraRiskState, now: float) -> bool:
        keep = [
            g
            for g in state.groups
            if now - events.seconds(g.capture_time) < self._config.group_ttl_s or not g.HasField("capture_time")
        ]
        if len(keep) == len(state.groups):
            return False
        kept = [events_pb2.GroupRisk.FromString(g.SerializeToString()) for g in keep]
        del state.groups[:]
        state.groups.extend(kept)
        return True

    @staticmethod
    def _bump(
        state: events_pb2.CameraRiskState, result: events_pb2.AssessmentResult, now: float
    ) -> events_pb2.CameraRiskState:
        state.max_level = max(
            (g.verdict.risk_level for g in state.groups),
            key=events.RISK_ORDER.__getitem__,
            default=events_pb2.RISK_LEVEL_NONE,
        )
        state.version += 1
        state.last_task_id = result.task_id
        state.updated_time.CopyFrom(events.timestamp(now))
        return state


def _verdict_differs(a: events_pb2.Verdict, b: events_pb2.Verdict) -> bool:
    return a.risk_level != b.risk_level or list(a.risk_types) != list(b.risk_types)
