"""Real clients of the gateway for end-to-end tests: gRPC (PushFrames, AddCamera) and WebSocket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import websockets

from riskwatch.v1 import detector_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc


async def add_push_camera(grpc_port: int, camera_id: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        await stub.AddCamera(
            gateway_pb2.AddCameraRequest(camera=gateway_pb2.Camera(camera_id=camera_id, source="push"))
        )


async def push_frames(
    grpc_port: int, frames: list[detector_pb2.Frame], interval_s: float = 0.5
) -> list[gateway_pb2.PushFramesResponse]:
    """Send frames at a camera's pace over one PushFrames stream; one response per frame."""

    async def requests() -> AsyncIterator[gateway_pb2.PushFramesRequest]:
        for frame in frames:
            yield gateway_pb2.PushFramesRequest(frame=frame)
            await asyncio.sleep(interval_s)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        return [response async for response in stub.PushFrames(requests())]


async def get_state(grpc_port: int, camera_id: str) -> events_pb2.CameraRiskState:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        reply = await stub.GetCameraState(gateway_pb2.GetCameraStateRequest(camera_id=camera_id))
        return reply.state


class WsRecorder:
    """A WebSocket client subscribed to one camera that records every message it gets."""

    def __init__(self, http_port: int, camera_id: str) -> None:
        self.url = f"ws://127.0.0.1:{http_port}/ws"
        self.camera_id = camera_id
        self.messages: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def __aenter__(self) -> WsRecorder:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(15):
            await self._subscribed.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        async with websockets.connect(self.url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "subscribe", "cameras": [self.camera_id]}))
            self._subscribed.set()
            async for raw in ws:
                self.messages.append(json.loads(raw))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [
            m for m in self.messages if m.get("type") == kind and m.get("camera_id", self.camera_id) == self.camera_id
        ]

    async def wait_for(self, kind: str, timeout: float, predicate: Any = None) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for message in self.of_type(kind):
                    if predicate is None or predicate(message):
                        return message
                await asyncio.sleep(0.05)
