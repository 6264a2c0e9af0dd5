"""kill -9 or SIGTERM of the detector while real frames are pushed through the gateway: every frame is answered,
none is lost.

A frame pushed over gRPC is answered either with its DetectionEvent — published to detection-results (and
acknowledged) before the answer — or with a FrameError naming the cause (the detector being down). On SIGTERM
the detector drains: it stops taking frames, answers those it accepted and exits 0. The ledger here
is per frame: answered with an event that is in Kafka, or answered with an error; never unanswered, never an event
the answer promised but Kafka lacks. The synthetic load of run_case keeps the rest of the pipeline accounted for.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from riskwatch import events
from riskwatch.v1 import events_pb2, gateway_pb2
from tests.faults.case import assert_case, kill_and_restart, run_case
from tests.faults.stack import FaultStack
from tests.support.clients import add_push_camera, push_frames
from tests.support.frames import video_frames
from tests.support.stack import VIDEO, wait_for_port

pytestmark = [pytest.mark.infra, pytest.mark.faults]

FRAMES = 24  # per camera, at 2 FPS: 12 s


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill9", "sigterm"])
async def test_detector_stopped_under_real_frames(stack: FaultStack, sig: signal.Signals) -> None:
    if "detector" not in stack.procs or stack.procs["detector"].poll() is not None:
        await asyncio.to_thread(stack.restart, "detector")
    await asyncio.to_thread(wait_for_port, stack.ports["detector_grpc"], 120.0, stack.procs["detector"])
    name = "kill9" if sig == signal.SIGKILL else "sigterm"
    cameras = [f"real-{name}-{stack.run_id}-{i}" for i in range(2)]
    for camera in cameras:
        await add_push_camera(stack.ports["gateway_grpc"], camera)
    frames = {
        c: await asyncio.to_thread(video_frames, VIDEO, FRAMES, c, 5, 100 + 37 * i) for i, c in enumerate(cameras)
    }
    answers: dict[str, list[gateway_pb2.PushFramesResponse]] = {}
    outcome: dict[str, Any] = {}

    async def push(camera: str) -> None:
        answers[camera] = await push_frames(stack.ports["gateway_grpc"], frames[camera], interval_s=0.5)

    async def fault() -> None:
        pushing = [asyncio.create_task(push(c)) for c in cameras]
        outcome.update(await kill_and_restart(stack, "detector", sig, at=4.0))
        await asyncio.gather(*pushing)

    report = await run_case(stack, f"{name}-detector", fault)
    if sig == signal.SIGKILL:
        assert outcome["exit_code"] == -signal.SIGKILL
    else:
        assert outcome["exit_code"] == 0, outcome["log"][-3000:]
        assert "detector stopped" in outcome["log"], outcome["log"][-3000:]

    published = {
        events_pb2.DetectionEvent.FromString(record.value).event_id
        for record in stack.readers[stack.topics["detection-results"]].records
        if record.key is not None and record.key.decode() in cameras
    }
    ledger: dict[str, int] = {"event": 0, "error": 0, "unanswered": 0, "event_not_in_kafka": 0}
    errors = set()
    for camera in cameras:
        got = answers[camera]
        ledger["unanswered"] += len(frames[camera]) - len(got)
        for answer in got:
            if answer.WhichOneof("result") == "event":
                ledger["event"] += 1
                if events.event_id(camera, answer.event.frame_id) not in published:
                    ledger["event_not_in_kafka"] += 1
            else:
                ledger["error"] += 1
                errors.add(answer.error.message[:120])
    print({"frames": ledger, "errors": sorted(errors)})
    assert ledger["unanswered"] == 0 and ledger["event_not_in_kafka"] == 0, (ledger, errors)
    assert all(message for message in errors), "a frame error without a reason"
    # Frames after the restart are detected again.
    assert all(answers[c][-1].WhichOneof("result") == "event" for c in cameras), (ledger, errors)
    assert_case(report)
