"""kill -9 and an immediate restart of the task generator: with `kafka.instance_id` (static group membership) its
partition is back in work as soon as the process is, not after the session timeout.

Runs a task generator of its own (own topics, one partition, own group) twice, once without and once with an
instance id, under the same load: a DetectionEvent every 0.2 s whose groups change every frame, so each frame
becomes tasks at once. The outage is the longest time any event waited between capture and its task.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import pytest
from confluent_kafka import Producer

from riskwatch import events
from riskwatch.bus.stage import STAGE_FAILED
from riskwatch.v1 import events_pb2
from tests.faults.infra import CLIENT_LOG, QUIET_READER
from tests.faults.load import crop_jpeg, detection_event
from tests.faults.stack import FaultStack, probe_env, start_task_generator
from tests.support.topics import TopicReader

pytestmark = [pytest.mark.infra, pytest.mark.faults]

SESSION_TIMEOUT_S = 12.0
LOAD_S = 10.0 + SESSION_TIMEOUT_S
KILL_AT_S = 3.0


def generator_env(stack: FaultStack, probe: str, instance_id: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """The environment of a task generator with topics (created here) and a group of its own; and the topics."""
    topics = {"events": f"{probe}-detection-results", "tasks": f"{probe}-assessment-tasks"}
    env = probe_env(stack, probe)
    env.update(
        {
            "ALGO_KAFKA__CONSUMER_PROPERTIES": json.dumps(
                {"session.timeout.ms": str(int(SESSION_TIMEOUT_S * 1000)), "heartbeat.interval.ms": "1000"}
            ),
            # Every frame's groups become tasks at once, and none expires while the partition is idle.
            "ALGO_TASKGEN__MIN_GROUP_INTERVAL_S": "0",
            "ALGO_TASKGEN__LLM_BUDGET_PER_S": "0",
            "ALGO_TASKGEN__MAX_TASK_AGE_S": "600",
        }
    )
    if instance_id is not None:
        env["ALGO_KAFKA__INSTANCE_ID"] = instance_id
    return env, topics


async def outage_after_kill_9(stack: FaultStack, name: str, instance_id: str | None) -> dict[str, Any]:
    """Publish events for LOAD_S s, kill -9 and restart the generator at KILL_AT_S; how long events waited."""
    assert stack.infra is not None
    bootstrap = stack.infra.bootstrap
    probe = f"{name}-{stack.run_id}"
    env, topics = generator_env(stack, probe, instance_id)
    log = f"{probe}.log"
    generator = start_task_generator(stack, env, log)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "logger": CLIENT_LOG})
    camera = f"{probe}-cam"
    crop = crop_jpeg(0)
    reader = TopicReader(topics["tasks"], bootstrap, QUIET_READER)
    published = 0
    killed_at = 0.0
    try:
        await asyncio.sleep(4.0)  # joined its group (first join, identical in both runs)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < LOAD_S:
            published += 1
            event = detection_event(camera, 0, published, crop)
            producer.produce(topics["events"], key=camera, value=event.SerializeToString())
            producer.poll(0)
            if not killed_at and elapsed >= KILL_AT_S:
                generator.send_signal(signal.SIGKILL)
                await asyncio.to_thread(generator.wait, 30)
                killed_at = elapsed
                generator = start_task_generator(stack, env, log)
            await asyncio.sleep(0.2)
        assert producer.flush(30) == 0
        expected = {events.event_id(camera, frame) for frame in range(1, published + 1)}
        waited: dict[str, float] = {}
        deadline = time.monotonic() + 3 * SESSION_TIMEOUT_S
        while set(waited) != expected and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(reader.catch_up)
            for value in reader.values:
                task = events_pb2.AssessmentTask.FromString(value)
                delay = events.seconds(task.created_time) - events.seconds(task.capture_time)
                waited[task.event_id] = min(delay, waited.get(task.event_id, delay))
        assert set(waited) == expected, f"events without a task: {sorted(expected - set(waited))[:5]}"
        return {
            "instance_id": instance_id,
            "events": published,
            "killed_at_s": round(killed_at, 1),
            "outage_s": round(max(waited.values()), 2),
        }
    finally:
        reader.close()
        generator.send_signal(signal.SIGTERM)
        await asyncio.to_thread(generator.wait, 30)


async def test_a_restarted_static_member_resumes_without_waiting_for_the_session_timeout(stack: FaultStack) -> None:
    dynamic = await outage_after_kill_9(stack, "dynamic-member", None)
    static = await outage_after_kill_9(stack, "static-member", "replica-1")
    print({"session_timeout_s": SESSION_TIMEOUT_S, "dynamic": dynamic, "static": static})
    # Dynamic: the partition waits for the dead member's session to expire. Static: only for the new process.
    assert dynamic["outage_s"] >= SESSION_TIMEOUT_S * 0.8, dynamic
    assert static["outage_s"] < SESSION_TIMEOUT_S * 0.6, static


async def test_of_two_replicas_sharing_an_instance_id_the_older_exits_instead_of_idling(stack: FaultStack) -> None:
    """A configuration mistake must be loud: the fenced replica stops with status 3 and says why."""
    probe = f"fenced-{stack.run_id}"
    env, _topics = generator_env(stack, probe, "same-name")
    older = start_task_generator(stack, env, f"{probe}-older.log")
    newer = None
    try:
        await asyncio.sleep(5.0)  # the older one joined its group
        mark = stack.log_size(f"{probe}-older")
        newer = start_task_generator(stack, env, f"{probe}-newer.log")
        code = await asyncio.to_thread(older.wait, 60)
        said = stack.log_since(f"{probe}-older", mark)
        assert code == STAGE_FAILED, said[-3000:]
        assert "fenced" in said and "exiting with status 3" in said, said[-3000:]
        assert newer.poll() is None, "the newer replica should keep running"
    finally:
        for proc in (older, newer):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 30)
