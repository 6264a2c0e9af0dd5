"""LLM scheduler: one AssessmentResult per AssessmentTask, calling the vision LLM through the key pool."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from riskwatch import events
from riskwatch.bus import Outgoing, Record
from riskwatch.domain import FailureKind, PromptFeatures
from riskwatch.telemetry.metrics import END_TO_END_LATENCY
from riskwatch.v1 import events_pb2
from riskwatch_scheduler.llm_client import Assessment, LlmClient
from riskwatch_scheduler.metrics import TASK_OUTCOMES, TASKS_IN_FLIGHT, UNKNOWN_RISK_TYPES

log = logging.getLogger(__name__)

# A failing LLM fails every task alike: each failure kind is logged at most once per this many seconds, with a count.
FAILURE_LOG_INTERVAL_S = 60.0


class FailureLog:
    """Logs a failure kind when first seen, then once per interval with how many there were and the latest reason."""

    def __init__(self, interval_s: float = FAILURE_LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._logged_at: dict[FailureKind, float] = {}
        self._unlogged: dict[FailureKind, int] = {}

    def failed(self, kind: FailureKind, message: str, camera_id: str) -> None:
        now = self._clock()
        count = self._unlogged.get(kind, 0) + 1
        last = self._logged_at.get(kind)
        if last is not None and now - last < self._interval_s:
            self._unlogged[kind] = count
            return
        self._logged_at[kind] = now
        self._unlogged[kind] = 0
        since = "" if last is None else f" in the last {now - last:.0f} s"
        log.warning(
            "assessment failed (%s): %d task(s)%s; latest, camera %s: %s",
            kind.value,
            count,
            since,
            camera_id,
            message,
            extra={"camera_id": camera_id, "failure_kind": kind.value},
        )


def decode_task(record: Record) -> events_pb2.AssessmentTask:
    return events.decode(events_pb2.AssessmentTask, record.value, what=record.where, required=("task_id", "camera_id"))


class LlmScheduler:
    """Stage handler: AssessmentTask in, exactly one AssessmentResult out (a verdict or a typed failure)."""

    def __init__(self, llm: LlmClient, results_topic: str, failures: FailureLog | None = None) -> None:
        self._llm = llm
        self._topic = results_topic
        self._failures = failures or FailureLog()

    async def handle(self, record: Record) -> Sequence[Outgoing]:
        task = decode_task(record)
        result = await self.assess(task)
        return [Outgoing(self._topic, task.camera_id, result.SerializeToString())]

    async def assess(self, task: events_pb2.AssessmentTask) -> events_pb2.AssessmentResult:
        remaining = events.seconds(task.deadline) - time.time()
        if remaining <= 0:
            TASK_OUTCOMES.labels("expired").inc()
            reason = "task expired before it was started"
            self._failures.failed(FailureKind.DEADLINE_EXCEEDED, reason, task.camera_id)
            return self._result(task, failure=(FailureKind.DEADLINE_EXCEEDED, reason))
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
        if assessment.verdict is not None and assessment.verdict.unknown_risk_types:
            UNKNOWN_RISK_TYPES.inc(assessment.verdict.unknown_risk_types)
        if assessment.failure is not None:
            self._failures.failed(assessment.failure.kind, assessment.failure.message, task.camera_id)
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
