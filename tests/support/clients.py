"""Real clients of the gateway for end-to-end tests: gRPC (PushFrames, AddCamera) and WebSocket."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
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
        reply: gateway_pb2.GetCameraStateResponse = await stub.GetCameraState(
            gateway_pb2.GetCameraStateRequest(camera_id=camera_id)
        )
        return reply.state


@dataclass(frozen=True)
class WsMessage:
    received_at: float  # time.time() on arrival
    connection: int  # 1 for the first connection, 2 after the first reconnect, ...
    message: dict[str, Any]


class WsRecorder:
    """The one WebSocket client of the tests and benches: subscribed to `cameras` (none: every camera, "*"), it
    records every message with its arrival time and connection; with `reconnect` it reconnects whenever the
    gateway goes away (otherwise it stops when the connection closes, saying why in `closed`)."""

    def __init__(
        self, http_port: int, *cameras: str, detections: bool = True, reconnect: bool = False, ready_s: float = 30.0
    ) -> None:
        self.url = f"ws://127.0.0.1:{http_port}/ws"
        self.cameras = cameras
        self.received: list[WsMessage] = []
        self.connections = 0
        self.closed: str | None = None
        self._subscribe: dict[str, Any] = {"type": "subscribe", "cameras": list(cameras) or "*"}
        if not detections:
            self._subscribe["detections"] = False
        self._reconnect = reconnect
        self._ready_s = ready_s
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def __aenter__(self) -> WsRecorder:
        self._task = asyncio.create_task(self._run())
        try:
            async with asyncio.timeout(self._ready_s):
                await self._subscribed.wait()
        except TimeoutError:
            await self.__aexit__()
            raise TimeoutError(f"no subscription to {self.url} within {self._ready_s} s") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            try:
                async with websockets.connect(self.url, max_size=None, open_timeout=5) as ws:
                    await ws.send(json.dumps(self._subscribe))
                    self.connections += 1
                    connection = self.connections
                    async for raw in ws:
                        message = json.loads(raw)
                        self.received.append(WsMessage(time.time(), connection, message))
                        if message.get("type") == "subscribed":
                            self._subscribed.set()
                if not self._reconnect:
                    self.closed = "closed by the gateway"
                    return
            except (OSError, websockets.ConnectionClosed, websockets.InvalidHandshake, TimeoutError) as exc:
                # Before the first subscription the gateway may still be binding its listener: retry regardless.
                if not self._reconnect and self._subscribed.is_set():
                    self.closed = repr(exc)
                    return
            await asyncio.sleep(0.3)

    def of_type(self, kind: str, camera: str | None = None) -> list[dict[str, Any]]:
        """The messages of `kind`, of `camera` (default: the one subscribed to, if one; messages naming no camera
        count)."""
        camera = camera or (self.cameras[0] if len(self.cameras) == 1 else None)
        return [
            m.message
            for m in self.received
            if m.message.get("type") == kind and (camera is None or m.message.get("camera_id", camera) == camera)
        ]

    async def wait_for(
        self, kind: str, timeout: float, predicate: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for message in self.of_type(kind):
                    if predicate is None or predicate(message):
                        return message
                await asyncio.sleep(0.05)

    def kinds(self) -> Counter[str]:
        return Counter(m.message.get("type", "") for m in self.received)

    def last_version(self, camera: str) -> int:
        states = [m for m in self.of_type("risk_state", camera) if m.get("camera_id") == camera]
        return int(states[-1]["version"]) if states else 0

    def violations(self, cameras: Collection[str]) -> list[str]:
        """Duplicates or regressions a client of `cameras` would notice."""
        problems = []
        previous: dict[str, tuple[int, int]] = {}
        alerts: Counter[tuple[str, str]] = Counter()  # (camera, alert id)
        for m in self.received:
            camera = m.message.get("camera_id")
            if not isinstance(camera, str) or camera not in cameras:
                continue
            kind = m.message.get("type")
            if kind == "risk_state":
                version = int(m.message["version"])
                if camera in previous:
                    prev_connection, prev_version = previous[camera]
                    # Within one connection strictly increasing; a reconnect may repeat the current state once.
                    if version < prev_version or (version == prev_version and m.connection == prev_connection):
                        problems.append(f"{camera}: risk_state version {version} after {prev_version}")
                previous[camera] = (m.connection, version)
            elif kind == "alert" and not m.message.get("replay"):
                alerts[camera, _alert_id(m.message)] += 1
        problems += [f"{camera}: alert {task} sent {n} times" for (camera, task), n in alerts.items() if n > 1]
        return problems


def _alert_id(alert: dict[str, Any]) -> str:
    """An alert's identity in the JSON a client gets (as riskwatch_aggregator.state.alert_id on the proto): its task id;
    a provisional one also by its level, since a task's provisional may be raised again; and its resolution, as the
    verdict that resolves a provisional shares its task id."""
    key = str(alert["task_id"])
    if alert.get("provisional"):
        key += f"#measured:{alert.get('risk_level')}"
    if alert.get("provisional_resolution"):
        key += f"#{alert['provisional_resolution']}"
    return key
