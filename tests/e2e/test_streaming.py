"""End to end in streaming mode: real frames through every service as its own process, over real Kafka and Redis."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from riskwatch.cache import RedisCache, keys
from riskwatch.v1 import events_pb2
from tests.support.clients import WsRecorder, add_push_camera, push_frames
from tests.support.frames import video_frames
from tests.support.stack import REDIS_URL, REPO, VIDEO, Stack
from tests.support.topics import TopicReader

pytestmark = [pytest.mark.infra, pytest.mark.e2e]

FRAMES = 6


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(log_dir=REPO / "test-artifacts" / "e2e-streaming")
    try:
        s.start_all()
        yield s
    except Exception:
        print(s.logs())
        raise
    finally:
        s.stop_all()


def read_topic(topic: str, expect_at_least: int, timeout: float = 60.0, settle: float = 2.0) -> list[bytes]:
    """Every record of `topic`, once `expect_at_least` arrived and `settle` s more passed (late duplicates)."""
    with TopicReader(topic) as reader:
        reader.read_until(lambda records: len(records) >= expect_at_least, timeout, settle)
        return reader.values


async def test_frames_flow_through_every_stage(stack: Stack) -> None:
    camera = f"e2e-{stack.run_id}"
    frames = video_frames(VIDEO, FRAMES, camera, every=5, start=100)
    await add_push_camera(stack.ports["gateway_grpc"], camera)
    async with WsRecorder(stack.ports["gateway_http"], camera) as ws:
        responses = await push_frames(stack.ports["gateway_grpc"], frames)

        # Detections come back over gRPC for each frame, with real boxes from the real model.
        assert [r.event.frame_id for r in responses] == [f.frame_id for f in frames]
        assert sum(len(r.event.detections) for r in responses) >= FRAMES * 2
        assert all(r.event.camera_id == camera for r in responses)

        # The WebSocket client sees detections, then a risk update.
        await ws.wait_for("detections", timeout=10)
        await ws.wait_for("risk_state", timeout=30, predicate=lambda m: m.get("version", 0) > 0)

    # Exactly one DetectionEvent per frame in Kafka.
    detection_events = [
        events_pb2.DetectionEvent.FromString(v) for v in read_topic(stack.topics["detection-results"], FRAMES)
    ]
    assert sorted(e.frame_id for e in detection_events if e.camera_id == camera) == [f.frame_id for f in frames]

    # One AssessmentResult per task.
    expected_tasks = sum(len(r.event.groups) for r in responses)
    tasks = [
        events_pb2.AssessmentTask.FromString(v) for v in read_topic(stack.topics["assessment-tasks"], expected_tasks)
    ]
    results = [
        events_pb2.AssessmentResult.FromString(v)
        for v in read_topic(stack.topics["risk-assessment-results"], len(tasks))
    ]
    assert tasks, "the task generator produced no tasks"
    assert sorted(r.task_id for r in results) == sorted(t.task_id for t in tasks)
    assert all(r.WhichOneof("outcome") == "verdict" for r in results), [r.failure for r in results]

    # The camera's state is in Redis.
    cache = RedisCache(REDIS_URL, prefix=stack.redis_prefix)
    try:
        state = events_pb2.CameraRiskState.FromString(await cache.get(keys.camera_state(camera)) or b"")
    finally:
        await cache.close()
    assert state.camera_id == camera and state.version > 0 and state.groups


def test_grpcurl_lists_gateway_and_detector_services(stack: Stack, grpcurl: Path) -> None:
    for port, service in (
        (stack.ports["gateway_grpc"], "riskwatch.v1.GatewayService"),
        (stack.ports["detector_grpc"], "riskwatch.v1.DetectorService"),
    ):
        done = subprocess.run(
            [str(grpcurl), "-plaintext", f"127.0.0.1:{port}", "list"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        listed = done.stdout.split()
        assert service in listed and "grpc.health.v1.Health" in listed
        assert "grpc.reflection.v1alpha.ServerReflection" in listed or "grpc.reflection.v1.ServerReflection" in listed
