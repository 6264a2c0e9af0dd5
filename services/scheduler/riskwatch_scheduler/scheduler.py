"""LLM scheduler: one AssessmentResult per AssessmentTask, calling the vision LLM through the key pool."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from riskwatch import events
from riskwatch.bus import Outgoing, Record
from riskwatch.domain import FailureKind, PromptFeatures
from riskwatch.errors import DecodeError
from riskwatch.telemetry.metrics import END_TO_END_LATENCY
from riskwatch.v1 import events_pb2
from riskwatch_scheduler.llm_client import Assessment, LlmClient
from riskwatch_scheduler.metrics import TASK_OUTCOMES, TASKS_IN_FLIGHT

log = logging.getLogger(__name__)


def decode_task(record: Record) -> events_pb2.AssessmentTask:
    task = events.decode(events_pb2.AssessmentTask, record.value, what=record.where)
    if not task.task_id or not task.camera_id:
        raise DecodeError(f"{record.where}: AssessmentTask without task_id or camera_id")
    return task


class LlmScheduler:
    """Stage handler: AssessmentTask in, exactly one AssessmentResult out (a verdict or a typed failure)."""

    def __init__(self, llm: LlmClient, results_topic: str) -> None:
        self._llm = llm
        self._topic = results_topic

    async def handle(self, record: Record) -> Sequence[Outgoing]:
        task = decode_task(record)
        result = await self.assess(task)
        return [Outgoing(self._topic, task.camera_id, result.SerializeToString())]

    async def assess(self, task: events_pb2.AssessmentTask) -> events_pb2.AssessmentResult:
        remaining = events.seconds(task.deadline) - time.time()
        if remaining <= 0:
            TASK_OUTCOMES.labels("expired").inc()
            return self._result(task, failure=(FailureKind.DEADLINE_EXCEEDED, "task expired before it was started"))
        TASKS_IN_FLIGHT.inc()
        try:
            assessment = await self._llm.assess(
                camera_id=task.camera_id,
                features=PromptFeatures.from_task(task).to_dict(),
                crop_jpeg=task.crop_jpeg,
                deadline=time.monotonic() + remaining,
            )
        finally:
            TASKS_IN_FLIGHT.dec()
        TASK_OUTCOMES.labels("assessed" if assessment.verdict else assessment.failure_kind or "failed").inc()
        return self._result(task, assessment=assessment)

    def _result(
        self,
        task: events_pb2.AssessmentTask,
        assessment: Assessment | None = None,
        failure: tuple[FailureKind, str] | None = None,
    ) -> events_pb2.AssessmentResult:
        result = events_pb2.AssessmentResult(
            task_id=task.task_id,
            event_id=task.event_id,
            camera_id=task.camera_id,
            frame_id=task.frame_id,
            group_id=task.group_id,
            capture_time=task.capture_time,
            member_track_ids=task.member_track_ids,
            completed_time=events.timestamp(),
        )
        if assessment is not None:
            result.model = assessment.model or ""
            result.key_id = assessment.key_id or ""
            result.llm_latency_ms = assessment.latency_s * 1000
            result.attempts = assessment.attempts
            if assessment.verdict is not None:
                v = assessment.verdict
                result.verdict.CopyFrom(
                    events_pb2.Verdict(
                        risk_level=v.risk_level.proto,
                        risk_types=v.risk_types,
                        description=v.description,
                        confidence=v.confidence,
                        involved_track_ids=v.involved_track_ids,
                    )
                )
            else:
                failure = (assessment.failure_kind or FailureKind.LLM_ERROR, assessment.failure_message or "")
        if failure is not None:
            kind, message = failure
            result.failure.CopyFrom(events_pb2.Failure(kind=kind.proto, message=message))
        END_TO_END_LATENCY.labels("assessed").observe(time.time() - events.seconds(task.capture_time))
        return result
