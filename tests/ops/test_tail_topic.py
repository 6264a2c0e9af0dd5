"""scripts/tail_topic.py against the real Kafka: decoded records as JSON lines, filtered by camera."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from riskwatch.v1 import events_pb2
from tests.support.stack import BOOTSTRAP, REPO

pytestmark = pytest.mark.infra

SCRIPT = REPO / "scripts" / "tail_topic.py"


def tail(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--bootstrap-servers", BOOTSTRAP],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_decisions_tasks_and_dead_letters_are_readable(topic_factory: Callable[..., str]) -> None:
    decisions, tasks = topic_factory("tail-decisions", partitions=2), topic_factory("tail-tasks", partitions=2)
    dead = f"{tasks}.dlq"
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})  # kept referenced until the future resolves
    admin.create_topics([NewTopic(dead, 1, 1)])[dead].result(30)
    env = {
        "ALGO_KAFKA__TOPICS__TASK_DECISIONS__NAME": decisions,
        "ALGO_KAFKA__TOPICS__ASSESSMENT_TASKS__NAME": tasks,
    }
    skipped = events_pb2.TaskDecisions(event_id="cam-a:7", camera_id="cam-a", frame_id=7)
    skipped.groups.add(
        group_id="g1",
        task_id="cam-a:7/g1",
        decision=events_pb2.DECISION_SUPERSEDED,
        reason="budget",
        superseded_by="cam-a:8/g1",
    )
    task = events_pb2.AssessmentTask(task_id="cam-a:8/g1", camera_id="cam-a", crop_jpeg=b"\xff\xd8" + b"x" * 998)
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    producer.produce(decisions, key="cam-a", value=skipped.SerializeToString())
    producer.produce(decisions, key="cam-b", value=events_pb2.TaskDecisions(event_id="cam-b:1").SerializeToString())
    producer.produce(decisions, key="cam-a", value=b"\xff\xfe not protobuf")
    producer.produce(tasks, key="cam-a", value=task.SerializeToString())
    producer.produce(dead, key="cam-a", value=b"garbage", headers=[("error", b"DecodeError: not a valid task")])
    assert producer.flush(30) == 0

    shown = lines(tail(env, decisions, "--camera", "cam-a", "--from-beginning", "--idle", "3"))
    assert [r["key"] for r in shown] == ["cam-a", "cam-a"]
    (group,) = shown[0]["value"]["groups"]
    assert group == {
        "group_id": "g1",
        "task_id": "cam-a:7/g1",
        "decision": "DECISION_SUPERSEDED",
        "reason": "budget",
        "superseded_by": "cam-a:8/g1",
    }
    assert "not a valid TaskDecisions" in shown[1]["error"] and "value" not in shown[1]

    (sent,) = lines(tail(env, tasks, "--from-beginning", "--max", "1"))
    assert sent["value"]["crop_jpeg"] == "<1000 bytes>" and sent["value"]["task_id"] == "cam-a:8/g1"

    (letter,) = lines(tail(env, dead, "--from-beginning", "--max", "1"))
    assert letter["headers"] == {"error": "DecodeError: not a valid task"} and letter["value"] == "<7 bytes>"


def test_an_unknown_topic_names_the_known_ones() -> None:
    result = tail({}, "no-such-topic", "--max", "1")
    assert result.returncode == 2 and "task-decisions" in result.stderr and "detection-results.dlq" in result.stderr
    assert "task-decisions.dlq" not in result.stderr  # nothing consumes it, so it has no dead-letter topic
