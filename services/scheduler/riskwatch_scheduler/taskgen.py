"""Task generator: turns each DetectionEvent into AssessmentTasks for the groups worth an LLM look."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import Counter
from riskwatch import events
from riskwatch.bus import Outgoing, Record
from riskwatch.errors import DecodeError
from riskwatch.v1 import events_pb2

from riskwatch_scheduler.config import SchedulerSettings

log = logging.getLogger(__name__)

TASKS_GENERATED = Counter(
    "riskwatch_tasks_generated_total", "Assessment tasks sent to the LLM scheduler", ["camera_id", "reason"]
)
GROUPS_SKIPPED = Counter(
    "riskwatch_groups_skipped_total", "Groups not sent for assessment, by reason", ["camera_id", "reason"]
)


def decode_detection_event(record: Record) -> events_pb2.DetectionEvent:
    event = events.decode(events_pb2.DetectionEvent, record.value, what=record.where)
    if not event.camera_id or not event.event_id:
        raise DecodeError(f"{record.where}: DetectionEvent without camera_id or event_id")
    return event


def risk_score(features: events_pb2.GroupFeatures) -> float:
    """A cheap 0..1 guess at how risky a group is; orders tasks when the LLM budget is short."""
    score = 0.0
    if features.HasField("min_ped_vehicle_distance"):
        score = max(score, 1.0 / (1.0 + max(features.min_ped_vehicle_distance, 0.0)))
    score = max(score, min(features.density / 4.0, 1.0) * 0.6)
    return round(score, 4)


class TaskGenerator:
    """Stage handler: DetectionEvent in, one AssessmentTask per eligible group out."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self._topic = settings.kafka.topics.assessment_tasks.name
        self._deadline_s = settings.kafka.scheduler.task_deadline_s
        self._min_group_size = settings.taskgen.min_group_size

    async def handle(self, record: Record) -> Sequence[Outgoing]:
        event = decode_detection_event(record)
        outgoing = []
        for group in event.groups:
            if len(group.member_track_ids) < self._min_group_size:
                GROUPS_SKIPPED.labels(event.camera_id, "too_small").inc()
                continue
            task = self.task_for(event, group, reason="new")
            outgoing.append(Outgoing(self._topic, event.camera_id, task.SerializeToString()))
            TASKS_GENERATED.labels(event.camera_id, task.reason).inc()
        return outgoing

    def task_for(
        self, event: events_pb2.DetectionEvent, group: events_pb2.Group, reason: str
    ) -> events_pb2.AssessmentTask:
        capture = events.seconds(event.capture_time)
        return events_pb2.AssessmentTask(
            task_id=events.task_id(event.event_id, group.group_id),
            event_id=event.event_id,
            camera_id=event.camera_id,
            frame_id=event.frame_id,
            group_id=group.group_id,
            member_track_ids=group.member_track_ids,
            features=group.features,
            crop_jpeg=group.crop_jpeg,
            priority=risk_score(group.features),
            capture_time=event.capture_time,
            created_time=events.timestamp(),
            deadline=events.timestamp(capture + self._deadline_s),
            reason=reason,
        )
