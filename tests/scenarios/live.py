"""Scenarios live through embedded mode, in real time, to a WebSocket client (the online half of the bench).

`EmbeddedSystem` runs every real stage in one process with the scripted backend in place of the model. Each
scenario instance is a push camera, calibrated through the gateway's gRPC API as an operator would; its frames go
over one PushFrames stream each at the scenario's frame rate, each stamped with the time it is sent (its capture
time). A WebSocket client subscribed to every camera records each alert with its arrival time, so
`provisional_latencies` is frame capture → provisional alert received, through detector, task generator,
aggregator and gateway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from riskwatch import events
from riskwatch.v1 import detector_pb2, gateway_pb2, gateway_pb2_grpc
from riskwatch_embedded.app import EmbeddedSystem
from riskwatch_embedded.config import EmbeddedSettings
from tests.scenarios.backend import ScenarioBackend
from tests.scenarios.replay import calibration_of, scenario_frame
from tests.scenarios.scoring import Flag, ScenarioRun, Seen
from tests.scenarios.world import Camera
from tests.support.clients import WsRecorder, add_push_camera

START_DELAY_S = 1.0  # between the last frame being prepared and the first being sent


@dataclass(frozen=True, slots=True)
class LiveResult:
    seen: list[Seen]
    alerts: list[dict[str, Any]]  # every non-replayed alert, with "received_at" added
    starts: dict[str, float]  # wall-clock capture time of each camera's scenario time 0

    def provisional(self) -> list[dict[str, Any]]:
        return [a for a in self.alerts if a.get("provisional")]

    def provisional_latencies(self) -> list[float]:
        return [a["received_at"] - a["capture_time"] for a in self.provisional() if a.get("capture_time")]

    def provisional_flags(self) -> list[Flag]:
        """Each provisional alert as a flag of the pair its conflict names, at the scenario time of its frame."""
        frames = {(s.run.camera_id, s.event.frame_id): s for s in self.seen}
        flags = []
        for alert in self.provisional():
            frame = frames.get((alert["camera_id"], alert["frame_id"]))
            conflict = alert.get("conflict")
            if frame is None or conflict is None:
                continue
            a, b = frame.user_of(conflict["track_a"]), frame.user_of(conflict["track_b"])
            if a is not None and b is not None and a != b:
                flags.append(Flag(frame.run.camera_id, frame.t_s, (min(a, b), max(a, b)), "provisional"))
        return flags


async def live_run(
    runs: Sequence[ScenarioRun], settings: EmbeddedSettings, camera: Camera, *, drain_s: float = 4.0
) -> LiveResult:
    """Every run at once, in real time, through a fresh EmbeddedSystem; `drain_s` waits for the last verdicts."""
    backend = ScenarioBackend()
    system = EmbeddedSystem(settings, backend=backend)
    calibration = calibration_of(camera)
    # Frames are prepared (boxes registered, PNGs encoded) before the clock starts.
    prepared = {
        run.camera_id: [
            scenario_frame(run, i, backend=backend, camera=camera, calibration=calibration, t0=0.0)
            for i in range(len(run.rendering.frames))
        ]
        for run in runs
    }
    await system.start()
    try:
        grpc_port, http_port = system.gateway.grpc_port, system.gateway.http_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            for run in runs:
                await add_push_camera(grpc_port, run.camera_id)
                await stub.SetCalibration(
                    gateway_pb2.SetCalibrationRequest(camera_id=run.camera_id, calibration=calibration)
                )
            async with WsRecorder(http_port, detections=False) as ws:
                start = time.time() + START_DELAY_S
                pushed = await asyncio.gather(*(_push(stub, run, prepared[run.camera_id], start) for run in runs))
                await asyncio.sleep(drain_s)
            alerts = [
                {**m.message, "received_at": m.received_at}
                for m in ws.received
                if m.message.get("type") == "alert" and not m.message.get("replay")
            ]
    finally:
        await system.stop()
    if backend.unknown:
        raise RuntimeError(f"{backend.unknown} frames reached the backend without registered boxes")
    return LiveResult([s for frames in pushed for s in frames], alerts, {run.camera_id: start for run in runs})


async def _push(
    stub: gateway_pb2_grpc.GatewayServiceStub, run: ScenarioRun, frames: list[detector_pb2.Frame], start: float
) -> list[Seen]:
    """One camera's frames over one PushFrames stream, each sent at (and stamped with) its capture time."""

    async def requests() -> AsyncIterator[gateway_pb2.PushFramesRequest]:
        for frame, rendered in zip(frames, run.rendering.frames, strict=True):
            capture = start + rendered.time_s
            await asyncio.sleep(max(0.0, capture - time.time()))
            frame.capture_time.CopyFrom(events.timestamp(capture))
            yield gateway_pb2.PushFramesRequest(frame=frame)

    seen = []
    async for response in stub.PushFrames(requests()):
        if response.HasField("event"):
            rendered = run.rendering.frames[response.event.frame_id - 1]
            seen.append(Seen(run, rendered.time_s, response.event, rendered.users))
    return seen
