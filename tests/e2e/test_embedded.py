"""End to end in embedded mode: the same stages in one process over the in-memory bus and cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from riskwatch.v1 import events_pb2
from riskwatch_embedded.app import EmbeddedSystem
from riskwatch_embedded.config import EmbeddedSettings
from tests.support.clients import WsRecorder, add_push_camera, get_state, push_frames
from tests.support.frames import video_frames
from tests.support.stack import REPO, VIDEO, free_port

pytestmark = pytest.mark.e2e

FRAMES = 6


@pytest.fixture
async def system(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EmbeddedSystem]:
    monkeypatch.setenv("ALGO_GATEWAY__GRPC_PORT", "0")
    monkeypatch.setenv("ALGO_GATEWAY__HTTP_PORT", "0")
    monkeypatch.setenv("ALGO_CAMERAS__CAMERAS", "[]")
    monkeypatch.setenv("RW_LLM_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    embedded = EmbeddedSystem(EmbeddedSettings.load(REPO / "config"))
    await embedded.start()
    try:
        yield embedded
    finally:
        await embedded.stop()


async def test_frames_flow_through_every_stage_in_one_process(system: EmbeddedSystem) -> None:
    camera = "embedded-cam"
    topics = system.settings.kafka.topics
    frames = video_frames(VIDEO, FRAMES, camera, every=5, start=100)
    await add_push_camera(system.gateway.grpc_port, camera)
    async with WsRecorder(system.gateway.http_port, camera) as ws:
        responses = await push_frames(system.gateway.grpc_port, frames)
        assert [r.event.frame_id for r in responses] == [f.frame_id for f in frames]
        assert sum(len(r.event.detections) for r in responses) >= FRAMES * 2
        await ws.wait_for("detections", timeout=10)
        await ws.wait_for("risk_state", timeout=30, predicate=lambda m: m.get("version", 0) > 0)

    detection_events = [
        events_pb2.DetectionEvent.FromString(r.value) for r in system.bus.records(topics.detection_results.name)
    ]
    assert sorted(e.frame_id for e in detection_events) == [f.frame_id for f in frames]
    tasks = [events_pb2.AssessmentTask.FromString(r.value) for r in system.bus.records(topics.assessment_tasks.name)]
    assert tasks

    def llm_outcomes() -> list[events_pb2.AssessmentResult]:
        """Verdicts and failures: a `measured` record is the task generator's provisional one, besides them."""
        records = system.bus.records(topics.risk_assessment_results.name)
        results = [events_pb2.AssessmentResult.FromString(r.value) for r in records]
        return [r for r in results if r.WhichOneof("outcome") != "measured"]

    async with asyncio.timeout(30):  # the last verdicts may still be on their way
        while len(llm_outcomes()) < len(tasks):
            await asyncio.sleep(0.1)
    assert sorted(r.task_id for r in llm_outcomes()) == sorted(t.task_id for t in tasks)
    state = await get_state(system.gateway.grpc_port, camera)
    assert state.camera_id == camera and state.version > 0
