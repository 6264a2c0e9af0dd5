"""Test helpers for the gateway and for end-to-end tests: a fake detector, settings on ephemeral ports,
sample frames, risk states as the aggregator publishes them, and WebSocket reading helpers."""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from websockets.asyncio.client import ClientConnection

from riskwatch.cache import Cache, keys
from riskwatch.errors import InvalidFrame
from riskwatch.events import event_id, timestamp
from riskwatch.v1 import detector_pb2, events_pb2
from riskwatch_gateway.config import CameraConfig, CamerasConfig, GatewayConfig, GatewaySettings, SourcesConfig

if TYPE_CHECKING:
    from riskwatch_gateway.app import GatewayApp

# The tests' `start_gateway` fixture: settings (or the test defaults) in, a started gateway out.
GatewayFactory = Callable[..., Awaitable["GatewayApp"]]

Message = dict[str, Any]


class FakeDetector:
    """Answers every frame with one pedestrian, one car and a group of both; b"bad" images are invalid."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.frames: list[detector_pb2.Frame] = []
        self.delay_s = delay_s

    async def detect(self, frame: detector_pb2.Frame) -> events_pb2.DetectionEvent:
        if not frame.image or frame.image.startswith(b"bad"):
            raise InvalidFrame(f"camera {frame.camera_id} frame {frame.frame_id}: not an image")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.frames.append(frame)
        image = cv2.imdecode(np.frombuffer(frame.image, np.uint8), cv2.IMREAD_COLOR)
        height, width = image.shape[:2] if image is not None else (0, 0)
        return events_pb2.DetectionEvent(
            event_id=event_id(frame.camera_id, frame.frame_id),
            camera_id=frame.camera_id,
            frame_id=frame.frame_id,
            capture_time=frame.capture_time,
            image_width=width,
            image_height=height,
            detections=[
                events_pb2.Detection(
                    track_id=1,
                    class_name="person",
                    category=events_pb2.CATEGORY_PEDESTRIAN,
                    confidence=0.9,
                    box=events_pb2.BoundingBox(x1=10, y1=20, x2=40, y2=100),
                ),
                events_pb2.Detection(
                    track_id=2,
                    class_name="car",
                    category=events_pb2.CATEGORY_VEHICLE,
                    confidence=0.8,
                    box=events_pb2.BoundingBox(x1=50, y1=40, x2=150, y2=110),
                ),
            ],
            groups=[
                events_pb2.Group(
                    group_id="g1",
                    member_track_ids=[1, 2],
                    box=events_pb2.BoundingBox(x1=10, y1=20, x2=150, y2=110),
                    features=events_pb2.GroupFeatures(
                        vehicles=1, pedestrians=1, density=0.5, min_ped_vehicle_distance=0.3
                    ),
                )
            ],
            detector_latency_ms=1.0,
            model="fake",
            detected_time=timestamp(),
        )


def make_settings(cameras: list[CameraConfig] | None = None, **gateway: Any) -> GatewaySettings:
    fields: dict[str, Any] = {"grpc_port": 0, "http_port": 0, "heartbeat_interval_s": 0.5, "status_interval_s": 0.5}
    # Tests read the clips they write under the temporary directory (pytest's tmp_path).
    fields["sources"] = SourcesConfig(media_roots=[Path(tempfile.gettempdir()), Path("var/data")])
    # A state directory of its own (made only when something is written there); a restart test passes its own.
    fields["state_dir"] = Path(tempfile.gettempdir()) / f"riskwatch-gateway-state-{uuid.uuid4().hex}"
    fields.update(gateway)
    return GatewaySettings(gateway=GatewayConfig(**fields), cameras=CamerasConfig(cameras=cameras or []))


def jpeg(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return bytes(data.tobytes())


def risk_state(
    camera_id: str,
    version: int,
    level: events_pb2.RiskLevel.ValueType = events_pb2.RISK_LEVEL_HIGH,
    group_id: str = "g1",
) -> events_pb2.CameraRiskState:
    return events_pb2.CameraRiskState(
        camera_id=camera_id,
        max_level=level,
        version=version,
        updated_time=timestamp(),
        last_task_id=f"{camera_id}:1/{group_id}",
        groups=[
            events_pb2.GroupRisk(
                group_id=group_id,
                task_id=f"{camera_id}:1/{group_id}",
                member_track_ids=[1, 2],
                verdict=events_pb2.Verdict(
                    risk_level=level,
                    risk_types=["vehicle_pedestrian_conflict"],
                    description="a pedestrian steps in front of a car",
                    confidence=0.8,
                    involved_track_ids=[1, 2],
                ),
            )
        ],
    )


async def publish_state(cache: Cache, state: events_pb2.CameraRiskState) -> None:
    """What the aggregator does on every change: latest state first, then the push."""
    data = state.SerializeToString()
    await cache.set(keys.camera_state(state.camera_id), data)
    await cache.publish(keys.RISK_STATE_CHANNEL, data)


async def publish_alert(cache: Cache, alert: events_pb2.AssessmentResult) -> None:
    """What the aggregator does with a new alert: append it to the camera's stream first, then the push."""
    data = alert.SerializeToString()
    await cache.stream_add(keys.camera_alerts(alert.camera_id), data, maxlen=100)
    await cache.publish(keys.ALERTS_CHANNEL, data)


async def send(ws: ClientConnection, message: Message | str) -> None:
    await ws.send(message if isinstance(message, str) else json.dumps(message))


async def recv_until(
    ws: ClientConnection, match: Callable[[Message], bool], timeout: float = 5.0, seen: list[Message] | None = None
) -> Message:
    """The first message for which `match` is true; the ones before it are appended to `seen`."""

    async def loop() -> Message:
        while True:
            message: Message = json.loads(await ws.recv())
            if match(message):
                return message
            if seen is not None:
                seen.append(message)

    return await asyncio.wait_for(loop(), timeout)


def of_type(kind: str, **fields: Any) -> Callable[[Message], bool]:
    return lambda m: m.get("type") == kind and all(m.get(k) == v for k, v in fields.items())
