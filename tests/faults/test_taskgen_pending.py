"""kill -9 of the task generator while a group's task is pending (waiting out its minimum interval) loses nothing.

A triggered group waits as a *pending* task (min_group_interval_s, budget); the DetectionEvent that produced it
is acknowledged only once that task is sent, superseded or expired, so its offset is not committed while the task
exists only in memory. After a crash Kafka redelivers it and the restarted generator decides about it afresh.

This runs its own task generator (its own topics and group) with a 30 s minimum interval so the pending task is
certain to exist at the kill.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from riskwatch import events
from riskwatch.v1 import events_pb2
from tests.faults.infra import CLIENT_LOG, QUIET_READER
from tests.faults.load import crop_jpeg, detection_event
from tests.faults.stack import FaultStack, probe_env, start_task_generator
from tests.support.topics import TopicReader

pytestmark = [pytest.mark.infra, pytest.mark.faults]


def _committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "logger": CLIENT_LOG})
    try:
        return int(consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset)
    finally:
        consumer.close()


async def test_pending_task_survives_kill_9(stack: FaultStack) -> None:
    assert stack.infra is not None
    bootstrap = stack.infra.bootstrap
    probe = f"probe-{stack.run_id}"
    topics = {"events": f"{probe}-detection-results", "tasks": f"{probe}-assessment-tasks"}
    group = f"{probe}-taskgen"
    env = probe_env(stack, probe)
    env.update(
        {
            "ALGO_TASKGEN__MIN_GROUP_INTERVAL_S": "30",
            # Frame 4 waits out the interval, then is redelivered after the crash: neither may expire it.
            "ALGO_TASKGEN__MAX_TASK_AGE_S": "600",
        }
    )
    generator = start_task_generator(stack, env, "probe-task-generator.log")
    camera = f"{probe}-cam"
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "logger": CLIENT_LOG}
    )
    crop = crop_jpeg(0)
    reader = TopicReader(topics["tasks"], bootstrap, QUIET_READER)
    try:
        # Frame 1: a new group, sent at once. Frames 2-4: new members each (membership trigger), each waiting out
        # the 30 s interval; the newest (frame 4) is the pending task.
        for frame in range(1, 5):
            event = detection_event(camera, 0, frame, crop)
            producer.produce(topics["events"], key=camera, value=event.SerializeToString())
            producer.flush(30)
            await asyncio.sleep(0.3 if frame > 1 else 3.0)
        await asyncio.sleep(2.0)  # several commit intervals
        await asyncio.to_thread(reader.catch_up)
        sent = [events_pb2.AssessmentTask.FromString(v).task_id for v in reader.values]
        pending = events.task_id(events.event_id(camera, 4), "g1")
        assert events.task_id(events.event_id(camera, 1), "g1") in sent and pending not in sent, sent
        # Frames 2-3 were superseded by frame 4 (counted as skipped) and are committed; frame 4 (offset 3) waits for
        # its group's task, so it is not.
        assert await asyncio.to_thread(_committed, bootstrap, group, topics["events"]) == 3

        # Frame 4's task exists only in the generator's memory. Crash, restart (now without the long interval).
        generator.send_signal(signal.SIGKILL)
        generator.wait(timeout=30)
        env["ALGO_TASKGEN__MIN_GROUP_INTERVAL_S"] = "0"
        generator = start_task_generator(stack, env, "probe-task-generator.log")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await asyncio.to_thread(reader.catch_up)
            sent = [events_pb2.AssessmentTask.FromString(v).task_id for v in reader.values]
            if pending in sent:
                break
            await asyncio.sleep(0.5)
        # Frame 4 was redelivered, so the latest look at the group still reaches the LLM.
        assert pending in sent, f"{pending} lost: committed before its task was published; tasks seen: {sent}"
    finally:
        reader.close()
        if generator.poll() is None:
            generator.send_signal(signal.SIGTERM)
            try:
                generator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                generator.kill()
