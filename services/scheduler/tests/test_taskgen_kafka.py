"""The task generator as a Stage on real Kafka, consuming detections *and* results (`make infra-up`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from riskwatch import events
from riskwatch.bus import Consumer, Stage
from riskwatch.bus.kafka import KafkaBus
from riskwatch.clock import ManualClock
from riskwatch.domain import RiskLevel
from riskwatch.v1 import events_pb2
from riskwatch_scheduler.config import SchedulerSettings
from riskwatch_scheduler.taskgen import TaskGenerator
from tests.support.stack import BOOTSTRAP

pytestmark = pytest.mark.infra

T0 = 1_800_000_000.0


def detection(frame: int) -> bytes:
    group = events_pb2.Group(
        group_id="g1", member_track_ids=[1, 2], features=events_pb2.GroupFeatures(pedestrians=2, density=0.3)
    )
    event = events_pb2.DetectionEvent(
        event_id=events.event_id("cam-1", frame),
        camera_id="cam-1",
        frame_id=frame,
        capture_time=events.timestamp(T0 + frame),
        groups=[group],
    )
    return event.SerializeToString()


async def next_tasks(consumer: Consumer, count: int, timeout: float = 20.0) -> list[events_pb2.AssessmentTask]:
    got: list[events_pb2.AssessmentTask] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got += [events_pb2.AssessmentTask.FromString(r.value) for r in await consumer.poll(timeout_s=0.5)]
    return got


async def until(check: Callable[[], bool | Awaitable[bool]], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            outcome = check()
            if outcome if isinstance(outcome, bool) else await outcome:
                return
            await asyncio.sleep(0.05)


async def test_results_on_the_second_topic_set_the_refresh_interval_and_garbage_is_dead_lettered(
    topic_factory: Callable[..., str],
) -> None:
    detections, results, tasks, decided, dead = (
        topic_factory(prefix, partitions=1)
        for prefix in ("tg-detections", "tg-results", "tg-tasks", "tg-decisions", "tg-dlq")
    )
    settings = SchedulerSettings.model_validate(
        {
            "kafka": {
                "topics": {
                    "detection_results": {"name": detections},
                    "risk_assessment_results": {"name": results},
                    "assessment_tasks": {"name": tasks},
                    "task_decisions": {"name": decided},
                },
            },
            # a calm group, sent as new and refreshed as its verdict says
            "taskgen": {"refresh_s": {"high": 3, "unassessed": 30}, "send_new_groups": "always"},
        }
    )
    clock = ManualClock(T0)
    generator = TaskGenerator(settings, clock=clock.now)
    bus = KafkaBus(BOOTSTRAP)
    group = f"tg-{uuid.uuid4().hex[:10]}"
    stage = Stage(
        "task-generator",
        bus,
        bus.consumer(group, [detections, results]),  # what TaskGeneratorApp must subscribe to
        generator.handle,
        dead_letter_topic=lambda _topic: dead,
        group=group,
    )
    out = bus.consumer(f"reader-{uuid.uuid4().hex[:10]}", [tasks])
    dlq = bus.consumer(f"reader-{uuid.uuid4().hex[:10]}", [dead])
    decisions = bus.consumer(f"reader-{uuid.uuid4().hex[:10]}", [decided])
    await stage.start()
    try:
        await bus.publish(detections, "cam-1", detection(0))
        (first,) = await next_tasks(out, 1)
        assert (first.reason, first.task_id) == ("new", "cam-1:0/g1")

        result = events_pb2.AssessmentResult(
            task_id=first.task_id, camera_id="cam-1", group_id="g1", capture_time=first.capture_time
        )
        result.verdict.risk_level = events_pb2.RISK_LEVEL_HIGH
        await bus.publish(results, "cam-1", result.SerializeToString())
        await until(lambda: generator.last_verdict("cam-1", "g1") == RiskLevel.HIGH)

        clock.advance_to(T0 + 3)  # nothing changed, but a high verdict is refreshed after 3 s (unassessed: 30 s)
        await bus.publish(detections, "cam-1", detection(3))
        (refresh,) = await next_tasks(out, 1)
        assert (refresh.reason, refresh.frame_id) == ("refresh", 3)
        records: list[events_pb2.TaskDecisions] = []
        async with asyncio.timeout(20):
            while len(records) < 2:
                records += [events_pb2.TaskDecisions.FromString(r.value) for r in await decisions.poll(timeout_s=0.5)]
        assert [(d.event_id, [(g.task_id, g.reason) for g in d.groups]) for d in records] == [
            ("cam-1:0", [("cam-1:0/g1", "new")]),
            ("cam-1:3", [("cam-1:3/g1", "refresh")]),
        ]

        await bus.publish(detections, "cam-1", b"\x00 not a DetectionEvent \xff")
        async with asyncio.timeout(20):
            dead_lettered: list[bytes] = []
            while not dead_lettered:
                dead_lettered = [r.value for r in await dlq.poll(timeout_s=0.5)]
        assert dead_lettered == [b"\x00 not a DetectionEvent \xff"]
    finally:
        await stage.stop()
        await out.close()
        await dlq.close()
        await decisions.close()
        await bus.close()
