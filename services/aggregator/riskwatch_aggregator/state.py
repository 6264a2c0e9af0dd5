"""Camera risk state: latest verdict (or failure) per group, provisional measured danger, hysteresis, idempotent and
order-safe updates, and the alerts each change makes.

Provisional danger. A `measured` result (the task generator's measurement of a conflict past its bounds, published
before any LLM has looked) raises its group at once to at least the measured level and is an alert of its own. The
next LLM verdict of the group — of the same task, or of a frame not older than the measurement — resolves it: the
alert of that verdict carries CONFIRMED, UPGRADED or DISMISSED and is pushed whatever its level, so a client sees the
provisional closed, and the group takes the verdict's level at once. The raise was a measurement, not a verdict, so
the de-escalation hold does not keep it; the hold still compares the resolving verdict with the LLM verdict underneath
(`GroupRisk.llm_verdict`). A verdict of an older frame updates that LLM verdict and leaves the provisional standing;
so does a failure. A provisional that no verdict resolves within `provisional_ttl_s` of its frame expires: the group
falls back to its last LLM verdict and an alert of the measured danger with resolution EXPIRED closes it, so an
operator is never left with a provisional forever. A higher measurement replaces a standing provisional (a new
alert, the same closing); an equal or lower one changes nothing. It all lives in the persisted GroupRisk, so a restart
keeps it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeAlias

from riskwatch import events
from riskwatch.domain import RiskLevel
from riskwatch.v1 import events_pb2
from riskwatch_aggregator.config import AggregatorConfig

# A verdict at or above this level is an alert (pushed to clients, kept in the camera's alert stream).
ALERT_LEVEL = RiskLevel.LOW
# The levels a measured danger may have: below the alert level it would raise nothing and close nothing.
_MEASURED_LEVELS = frozenset(int(level.proto) for level in RiskLevel if level >= ALERT_LEVEL)

Resolution: TypeAlias = events_pb2.ProvisionalResolution.ValueType


class Outcome(StrEnum):
    """What applying one result did; everything but CHANGED leaves the visible state as it was."""

    CHANGED = "changed"
    UNCHANGED = "unchanged"  # same level and risk types as before, or a measurement not above the standing one
    DUPLICATE = "duplicate"  # a result already applied (redelivery)
    STALE = "stale"  # its frame is not newer than what the group already rests on (out of order)
    HELD = "held"  # a lower level waiting out the de-escalation hold
    INVALID = "invalid"  # a measured danger below the alert level (or at one this build does not know)


@dataclass(frozen=True, slots=True)
class Closed:
    """A provisional closed: how, and the seconds from the capture of the frame it was measured on."""

    resolution: Resolution
    after_s: float


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying a result (or expiring provisionals) did, and the alerts to push for it, in order."""

    outcome: Outcome
    alerts: tuple[events_pb2.AssessmentResult, ...] = ()
    closed: tuple[Closed, ...] = ()


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


@dataclass(slots=True)
class _Changes:
    """What one call changed so far: whether the state did, and the alerts and closings it makes."""

    changed: bool = False
    alerts: list[events_pb2.AssessmentResult] = field(default_factory=list)
    closed: list[Closed] = field(default_factory=list)


def result_key(result: events_pb2.AssessmentResult) -> str:
    """A result's identity for de-duplication: its task id, as a task has one LLM outcome; a measured result is apart
    from it and also named by its level, since a task's provisional may be raised again before its verdict."""
    if result.WhichOneof("outcome") == "measured":
        return f"{result.task_id}#measured:{_level(result.measured.risk_level).label}"
    return result.task_id


def alert_id(alert: events_pb2.AssessmentResult) -> str:
    """An alert's identity in the camera's stream: its result's, and how it closed a provisional if it did (an
    expired provisional's alert is its measured result again)."""
    if alert.provisional_resolution == events_pb2.PROVISIONAL_RESOLUTION_UNSPECIFIED:
        return result_key(alert)
    return f"{result_key(alert)}#{resolution_name(alert.provisional_resolution)}"


def resolution_name(resolution: Resolution) -> str:
    """'confirmed', 'upgraded', 'dismissed' or 'expired' (metric labels, alert ids)."""
    return events_pb2.ProvisionalResolution.Name(resolution).removeprefix("PROVISIONAL_RESOLUTION_").lower()


class RiskStateBook:
    """All cameras' state in memory; `apply` says whether a result changed what operators see, and what to push."""

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

    def has_provisional(self, camera_id: str) -> bool:
        """Whether a provisional of the camera still stands (it must not be forgotten before it is closed)."""
        cam = self._cameras.get(camera_id)
        return cam is not None and any(g.HasField("provisional") for g in cam.message.groups)

    def expire(self, camera_id: str, now: float) -> Applied:
        """Expire the camera's provisionals past `provisional_ttl_s` and its groups past `group_ttl_s` at `now`."""
        cam = self._cameras.get(camera_id)
        if cam is None:
            return Applied(Outcome.UNCHANGED)
        changes = self._expire(cam, now)
        if not changes.changed:
            return Applied(Outcome.UNCHANGED)
        last = changes.alerts[-1].task_id if changes.alerts else cam.message.last_task_id
        return self._bump(cam.message, last, now, changes)

    def apply(self, result: events_pb2.AssessmentResult, now: float) -> Applied:
        """Apply `result` at wall-clock `now`; escalation shows at once, de-escalation after the hold."""
        cam = self._cameras.get(result.camera_id)
        if cam is None:
            self.reset(result.camera_id, None)
            cam = self._cameras[result.camera_id]
        kind = result.WhichOneof("outcome")
        if kind == "measured" and result.measured.risk_level not in _MEASURED_LEVELS:
            return Applied(Outcome.INVALID)
        key = result_key(result)
        if key in cam.recent_tasks:
            return Applied(Outcome.DUPLICATE)
        self._remember(cam, key)
        # Expired first, so a provisional past its time is closed by expiry, not by a verdict that came too late.
        changes = self._expire(cam, now)
        current = next((g for g in cam.message.groups if g.group_id == result.group_id), None)
        if kind == "measured":
            outcome = self._apply_measured(cam, current, result, now, changes)
        elif kind == "verdict":
            outcome = self._apply_verdict(cam, current, result, now, changes)
        else:
            outcome = self._apply_failure(cam, current, result, now, changes)
        if outcome is Outcome.CHANGED or changes.changed:
            return self._bump(cam.message, result.task_id, now, changes)
        return Applied(outcome)

    # ---- one result ------------------------------------------------------------------------------
    def _apply_measured(
        self,
        cam: CameraState,
        current: events_pb2.GroupRisk | None,
        result: events_pb2.AssessmentResult,
        now: float,
        changes: _Changes,
    ) -> Outcome:
        """Raise the group to at least the measured level, as a provisional that the next verdict resolves."""
        if current is None:
            current = _add_group(cam.message, result, now)
        elif events.seconds(result.capture_time) <= _last_capture(current):
            return Outcome.STALE  # a verdict, failure or measurement of a frame not older is already applied
        elif current.HasField("provisional"):
            if _level(result.measured.risk_level) <= _level(current.provisional.risk_level):
                return Outcome.UNCHANGED  # the standing provisional already says as much
        elif current.HasField("verdict"):
            current.llm_verdict.CopyFrom(current.verdict)
        shown = _level(current.verdict.risk_level)
        current.provisional.CopyFrom(result.measured)
        current.provisional_task_id = result.task_id
        current.provisional_capture_time.CopyFrom(result.capture_time)
        _show_provisional(current)
        if _level(current.verdict.risk_level) != shown:
            current.since.CopyFrom(events.timestamp(now))
        _set_members(current, result)
        changes.alerts.append(result)
        return Outcome.CHANGED

    def _apply_verdict(
        self,
        cam: CameraState,
        current: events_pb2.GroupRisk | None,
        result: events_pb2.AssessmentResult,
        now: float,
        changes: _Changes,
    ) -> Outcome:
        captured = events.seconds(result.capture_time)
        new_level = _level(result.verdict.risk_level)
        if current is None:
            current = _add_group(cam.message, result, now)
            current.verdict.CopyFrom(result.verdict)
            _set_assessed(current, result)
            if new_level >= ALERT_LEVEL:
                changes.alerts.append(result)
            return Outcome.CHANGED
        resolves = current.HasField("provisional") and (
            result.task_id == current.provisional_task_id
            or captured >= events.seconds(current.provisional_capture_time)
        )
        if not resolves and captured <= events.seconds(current.capture_time):
            return Outcome.STALE
        shown = _level(current.verdict.risk_level)
        resolution: Resolution | None = None
        if resolves:
            measured = _level(current.provisional.risk_level)
            resolution = (
                events_pb2.PROVISIONAL_RESOLUTION_CONFIRMED
                if new_level == measured
                else events_pb2.PROVISIONAL_RESOLUTION_UPGRADED
                if new_level > measured
                else events_pb2.PROVISIONAL_RESOLUTION_DISMISSED
            )
            changes.closed.append(Closed(resolution, max(now - events.seconds(current.provisional_capture_time), 0.0)))
            _end_provisional(current)  # what remains is the LLM verdict underneath, which this one replaces
        outcome = self._replace_verdict(cam, current, result)
        if current.HasField("provisional"):
            _show_provisional(current)
        if _level(current.verdict.risk_level) != shown:
            current.since.CopyFrom(events.timestamp(now))
        if resolution is not None:
            alert = events_pb2.AssessmentResult()
            alert.CopyFrom(result)
            alert.provisional_resolution = resolution
            changes.alerts.append(alert)  # always: the client must see its provisional closed
            return Outcome.CHANGED
        if outcome is Outcome.CHANGED and new_level >= ALERT_LEVEL:
            changes.alerts.append(result)
        return outcome

    def _replace_verdict(
        self, cam: CameraState, current: events_pb2.GroupRisk, result: events_pb2.AssessmentResult
    ) -> Outcome:
        """Put `result`'s verdict in place of the group's LLM verdict (`llm_verdict` while a provisional stands,
        else `verdict`), unless the de-escalation hold keeps the higher one."""
        underneath = current.HasField("provisional")
        base = current.llm_verdict if underneath else current.verdict
        had_verdict = current.HasField("llm_verdict" if underneath else "verdict")
        captured = events.seconds(result.capture_time)
        outcome = Outcome.UNCHANGED
        if current.HasField("failure"):
            current.ClearField("failure")  # assessed again: what operators see is no longer stale
            outcome = Outcome.CHANGED
        old_level, new_level = _level(base.risk_level), _level(result.verdict.risk_level)
        if had_verdict and new_level < old_level and not self._may_deescalate(cam, result.group_id, captured):
            _advance_capture(current, result)  # still: older results stay stale
            return outcome if outcome is Outcome.CHANGED else Outcome.HELD
        cam.held.pop(result.group_id, None)
        if not had_verdict or _verdict_differs(base, result.verdict):
            outcome = Outcome.CHANGED
        base.CopyFrom(result.verdict)
        _set_assessed(current, result)
        return outcome

    def _apply_failure(
        self,
        cam: CameraState,
        current: events_pb2.GroupRisk | None,
        result: events_pb2.AssessmentResult,
        now: float,
        changes: _Changes,
    ) -> Outcome:
        """Mark the group failed, keeping its last verdict (shown as stale): operators still see the last known risk,
        and that it is no longer being refreshed. Only a new failure kind changes the state: an LLM that keeps
        failing produces one change (and one alert) per group, not one per task. A standing provisional stays: it
        expires if no verdict comes."""
        failure = result.failure if result.HasField("failure") else events_pb2.Failure()
        if current is None:
            current = _add_group(cam.message, result, now)
            new_kind = True
        elif events.seconds(result.capture_time) <= events.seconds(current.capture_time):
            return Outcome.STALE
        else:
            new_kind = not current.HasField("failure") or current.failure.kind != failure.kind
        current.failure.CopyFrom(failure)
        current.capture_time.CopyFrom(result.capture_time)  # a verdict on an older frame would be no news now
        if not new_kind:
            return Outcome.UNCHANGED
        current.task_id = result.task_id
        _set_members(current, result)
        changes.alerts.append(result)
        return Outcome.CHANGED

    # ---- time ------------------------------------------------------------------------------------
    def _expire(self, cam: CameraState, now: float) -> _Changes:
        """Close provisionals past provisional_ttl_s (an EXPIRED alert each), then drop groups past group_ttl_s; a
        provisional is closed by group_ttl_s at the latest, so none leaves with its group unclosed."""
        changes = _Changes()
        state = cam.message
        ttl = min(self._config.provisional_ttl_s, self._config.group_ttl_s)
        for group in state.groups:
            if not group.HasField("provisional"):
                continue
            measured_at = events.seconds(group.provisional_capture_time)
            if now - measured_at < ttl:
                continue
            changes.alerts.append(_expired_alert(state.camera_id, group, now))
            changes.closed.append(Closed(events_pb2.PROVISIONAL_RESOLUTION_EXPIRED, now - measured_at))
            shown = _level(group.verdict.risk_level)
            _end_provisional(group)
            if _level(group.verdict.risk_level) != shown:
                group.since.CopyFrom(events.timestamp(now))
            changes.changed = True
        # Deleted in place: other groups' messages stay the ones the caller holds.
        for index in reversed(range(len(state.groups))):
            group = state.groups[index]
            if now - _last_capture(group) >= self._config.group_ttl_s:
                cam.held.pop(group.group_id, None)
                del state.groups[index]
                changes.changed = True
        return changes

    def _remember(self, cam: CameraState, key: str) -> None:
        cam.recent_tasks[key] = None
        while len(cam.recent_tasks) > self._config.recent_task_ids:
            cam.recent_tasks.popitem(last=False)

    def _may_deescalate(self, cam: CameraState, group_id: str, captured: float) -> bool:
        held = cam.held.get(group_id)
        if held is None:
            held = cam.held[group_id] = _Held(captured, 0)
        held.count += 1
        after = self._config.deescalate_after
        return captured - held.first_capture >= self._config.deescalate_hold_s or (0 < after <= held.count)

    @staticmethod
    def _bump(state: events_pb2.CameraRiskState, task_id: str, now: float, changes: _Changes) -> Applied:
        state.max_level = max((_level(g.verdict.risk_level) for g in state.groups), default=RiskLevel.NONE).proto
        state.version += 1
        state.last_task_id = task_id
        state.updated_time.CopyFrom(events.timestamp(now))
        return Applied(Outcome.CHANGED, tuple(changes.alerts), tuple(changes.closed))


def _level(value: int) -> RiskLevel:
    return RiskLevel.from_proto(value)


def _add_group(
    state: events_pb2.CameraRiskState, result: events_pb2.AssessmentResult, now: float
) -> events_pb2.GroupRisk:
    return state.groups.add(group_id=result.group_id, since=events.timestamp(now))


def _last_capture(group: events_pb2.GroupRisk) -> float:
    """The newest frame the group rests on: its last LLM result's or its last measurement's."""
    return max(events.seconds(group.capture_time), events.seconds(group.provisional_capture_time))


def _show_provisional(group: events_pb2.GroupRisk) -> None:
    """`verdict` = the higher of the LLM verdict underneath and the measured danger."""
    measured = group.provisional
    if group.HasField("llm_verdict") and _level(group.llm_verdict.risk_level) >= _level(measured.risk_level):
        group.verdict.CopyFrom(group.llm_verdict)
        return
    pair = [measured.conflict.track_a, measured.conflict.track_b] if measured.HasField("conflict") else []
    group.verdict.CopyFrom(
        events_pb2.Verdict(
            risk_level=measured.risk_level,
            risk_types=measured.risk_types,
            description=measured.description,
            involved_track_ids=pair,
        )
    )


def _end_provisional(group: events_pb2.GroupRisk) -> None:
    """Back to the LLM verdict underneath (none if there was none); the measurement's task and frame stay."""
    if group.HasField("llm_verdict"):
        group.verdict.CopyFrom(group.llm_verdict)
    else:
        group.ClearField("verdict")
    group.ClearField("provisional")
    group.ClearField("llm_verdict")


def _expired_alert(camera_id: str, group: events_pb2.GroupRisk, now: float) -> events_pb2.AssessmentResult:
    """The alert that closes an expired provisional: its measured danger again, resolution EXPIRED."""
    return events_pb2.AssessmentResult(
        task_id=group.provisional_task_id,
        camera_id=camera_id,
        group_id=group.group_id,
        capture_time=group.provisional_capture_time,
        measured=group.provisional,
        completed_time=events.timestamp(now),
        member_track_ids=group.member_track_ids,
        provisional_resolution=events_pb2.PROVISIONAL_RESOLUTION_EXPIRED,
    )


def _advance_capture(group: events_pb2.GroupRisk, result: events_pb2.AssessmentResult) -> None:
    """The group's last assessed frame becomes `result`'s unless it is older (a resolving verdict may be)."""
    if events.seconds(result.capture_time) > events.seconds(group.capture_time):
        group.capture_time.CopyFrom(result.capture_time)


def _set_assessed(group: events_pb2.GroupRisk, result: events_pb2.AssessmentResult) -> None:
    _advance_capture(group, result)
    group.task_id = result.task_id
    _set_members(group, result)


def _set_members(group: events_pb2.GroupRisk, result: events_pb2.AssessmentResult) -> None:
    del group.member_track_ids[:]
    group.member_track_ids.extend(result.member_track_ids)


def _verdict_differs(a: events_pb2.Verdict, b: events_pb2.Verdict) -> bool:
    return a.risk_level != b.risk_level or list(a.risk_types) != list(b.risk_types)
