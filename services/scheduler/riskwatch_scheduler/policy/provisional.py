"""Detector-first alerts: a measured conflict past taskgen.yaml `provisional` bounds becomes a provisional result.

The task generator publishes it to risk-assessment-results as soon as it sees the frame (an AssessmentResult whose
outcome is `measured`), once per conflict episode of a group: again only when the level rises within the episode,
or when a new episode begins after the conflict stayed within the bounds for `episode_gap_s`. Its task id is the
one the group's task of that frame has (or, when the group is not sent for that frame, would have had; the
frame's TaskDecisions record says which): the LLM verdict for that task resolves it, and when that task is
superseded by a newer frame of the group (TaskDecisions `superseded_by`), the verdict for the newer frame does
(the aggregator matches a verdict to the group's provisional by group and capture time).
"""

from __future__ import annotations

from dataclasses import dataclass

from riskwatch import events
from riskwatch.domain import Conflict, RiskLevel
from riskwatch.v1 import events_pb2

NEAR_MISS = "near_miss"
# The `model` of a provisional result: a measurement, not a model's verdict.
MEASURED = "measured"


@dataclass(slots=True)
class Episode:
    """A group's conflict episode: the highest level published in it, and when it was last past the bounds."""

    level: RiskLevel
    last_past: float  # capture time, seconds


class ProvisionalEpisodes:
    """Which provisional results to publish: one per group per episode, again only when its level rises."""

    def __init__(self, episode_gap_s: float) -> None:
        self._gap_s = episode_gap_s
        self._episodes: dict[tuple[str, str], Episode] = {}

    def __len__(self) -> int:
        return len(self._episodes)

    def observe(self, key: tuple[str, str], level: RiskLevel, capture: float) -> bool:
        """Note that the group's conflict is past `level`'s bounds in a frame captured at `capture`; whether to
        publish a provisional result for it now."""
        episode = self._episodes.get(key)
        if episode is None or capture - episode.last_past > self._gap_s:
            self._episodes[key] = Episode(level, capture)
            return True
        episode.last_past = max(episode.last_past, capture)
        if level > episode.level:
            episode.level = level
            return True
        return False

    def forget(self, older_than: float) -> None:
        """Drop the episodes last past the bounds before `older_than` (capture time): they are over anyway."""
        for key in [k for k, e in self._episodes.items() if e.last_past < older_than]:
            del self._episodes[key]

    def forget_camera(self, camera_id: str) -> None:
        for key in [k for k in self._episodes if k[0] == camera_id]:
            del self._episodes[key]


def describe(conflict: events_pb2.Conflict) -> str:
    """The line an operator reads, e.g. 'pedestrian 3 and vehicle 7 head-on, TTC 0.8 s'."""
    try:
        return Conflict.from_proto(conflict).describe()
    except ValueError as error:  # a kind or category this build does not know: still an alert, with the pair
        return f"tracks {conflict.track_a} and {conflict.track_b} in conflict ({error})"


def measured_result(
    event: events_pb2.DetectionEvent, group: events_pb2.Group, level: RiskLevel, *, now: float
) -> events_pb2.AssessmentResult:
    """The provisional result of `group` (which has a conflict) in `event` at the measured `level`."""
    measured = events_pb2.MeasuredDanger(
        risk_level=level.proto,
        risk_types=[NEAR_MISS],
        description=describe(group.conflict),
        conflict=group.conflict,
    )
    return events_pb2.AssessmentResult(
        task_id=events.task_id(event.event_id, group.group_id),
        event_id=event.event_id,
        camera_id=event.camera_id,
        frame_id=event.frame_id,
        group_id=group.group_id,
        capture_time=event.capture_time,
        measured=measured,
        model=MEASURED,
        completed_time=events.timestamp(now),
        member_track_ids=group.member_track_ids,
    )
