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
    """Answers every frame with one pedestrian, one car and a group of both (or with `respond(frame)` when given);
    b"bad" images are invalid."""

    def __init__(
        self,
        delay_s: float = 0.0,
        respond: Callable[[detector_pb2.Frame], events_pb2.DetectionEvent] | None = None,
    ) -> None:
        self.frames: list[detector_pb2.Frame] = []
        self.delay_s = delay_s
        self.respond = respond

    async def detect(self, frame: detector_pb2.Frame) -> events_pb2.DetectionEvent:
        if not frame.image or frame.image.startswith(b"bad"):
            raise InvalidFrame(f"camera {frame.camera_id} frame {frame.frame_id}: not an image")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.frames.append(frame)
        if self.respond is not None:
            return self.respond(frame)
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


# near_miss_event: a pedestrian (track 1) walking east at 1.5 m/s and a car (track 2) driving west at 6 m/s on the
# same line, 14 m apart at t = 0, seen by a camera at 20 px per metre (ground x = (u - 100) / 20, y = (400 - v) / 20)
# in a 640×480 image. Their gap closes at 7.5 m/s, so the time to collision is (14 - 7.5 t) / 7.5 s.
NEAR_MISS_PX_PER_M = 20.0
NEAR_MISS_MIN_SAMPLES = 3  # the fake's tracks are estimated from their third frame on (5 frames a second)


def near_miss_ttc_s(t: float) -> float:
    return (14.0 - 7.5 * t) / 7.5


def _moving_detection(
    track_id: int,
    category: events_pb2.Category.ValueType,
    *,
    x_m: float,
    velocity_m_s: float,
    size_px: tuple[float, float],
    samples: int,
    calibrated: bool,
) -> events_pb2.Detection:
    u, v = 100.0 + NEAR_MISS_PX_PER_M * x_m, 300.0
    width, height = size_px
    detection = events_pb2.Detection(
        track_id=track_id,
        class_name="person" if category == events_pb2.CATEGORY_PEDESTRIAN else "car",
        category=category,
        confidence=0.9,
        box=events_pb2.BoundingBox(x1=u - width / 2, y1=v - height, x2=u + width / 2, y2=v),
    )
    kinematics = detection.kinematics
    kinematics.samples = samples
    kinematics.history_s = (samples - 1) * 0.2
    if samples < NEAR_MISS_MIN_SAMPLES:
        return detection
    speed_px = abs(velocity_m_s) * NEAR_MISS_PX_PER_M
    kinematics.estimated = True
    kinematics.ground_point_px.CopyFrom(events_pb2.Vector2(x=u, y=v))
    kinematics.velocity_px_s.CopyFrom(events_pb2.Vector2(x=velocity_m_s * NEAR_MISS_PX_PER_M, y=0.0))
    kinematics.speed_px_s = speed_px
    kinematics.speed_box_s = speed_px / (width * height) ** 0.5
    kinematics.heading_deg = 90.0 if velocity_m_s > 0 else 270.0
    if calibrated:
        kinematics.ground_point_m.CopyFrom(events_pb2.Vector2(x=x_m, y=5.0))
        kinematics.velocity_m_s.CopyFrom(events_pb2.Vector2(x=velocity_m_s, y=0.0))
        kinematics.speed_m_s = abs(velocity_m_s)
        kinematics.ground_heading_deg = kinematics.heading_deg
    return detection


def near_miss_event(camera_id: str, frame_id: int, t: float, *, calibrated: bool = True) -> events_pb2.DetectionEvent:
    """The detector's answer at time `t` (s) of the scene above: both tracks, their group and its conflict."""
    samples = round(t / 0.2) + 1
    pedestrian = _moving_detection(
        1,
        events_pb2.CATEGORY_PEDESTRIAN,
        x_m=2.0 + 1.5 * t,
        velocity_m_s=1.5,
        size_px=(20, 60),
        samples=samples,
        calibrated=calibrated,
    )
    car = _moving_detection(
        2,
        events_pb2.CATEGORY_VEHICLE,
        x_m=16.0 - 6.0 * t,
        velocity_m_s=-6.0,
        size_px=(80, 40),
        samples=samples,
        calibrated=calibrated,
    )
    gap_m = 14.0 - 7.5 * t
    group = events_pb2.Group(
        group_id="g1",
        member_track_ids=[1, 2],
        box=events_pb2.BoundingBox(
            x1=pedestrian.box.x1, y1=pedestrian.box.y1, x2=car.box.x2, y2=max(pedestrian.box.y2, car.box.y2)
        ),
        features=events_pb2.GroupFeatures(vehicles=1, pedestrians=1, density=0.1),
    )
    if samples >= NEAR_MISS_MIN_SAMPLES:
        ttc = near_miss_ttc_s(t)
        box_size = ((20 * 60) ** 0.5 + (80 * 40) ** 0.5) / 2
        group.conflict.CopyFrom(
            events_pb2.Conflict(
                track_a=1,
                track_b=2,
                category_a=events_pb2.CATEGORY_PEDESTRIAN,
                category_b=events_pb2.CATEGORY_VEHICLE,
                kind=events_pb2.CONFLICT_KIND_HEAD_ON,
                calibrated=calibrated,
                ttc_s=ttc,
                distance=gap_m if calibrated else gap_m * NEAR_MISS_PX_PER_M / box_size,
                closing_speed=7.5 if calibrated else 7.5 * NEAR_MISS_PX_PER_M / box_size,
            )
        )
        if calibrated:
            group.conflict.drac_m_s2 = 7.5 / (2 * ttc)
        group.features.min_ttc_s = ttc
    return events_pb2.DetectionEvent(
        event_id=event_id(camera_id, frame_id),
        camera_id=camera_id,
        frame_id=frame_id,
        capture_time=timestamp(1_700_000_000.0 + t),
        image_width=640,
        image_height=480,
        detections=[pedestrian, car],
        groups=[group],
        detector_latency_ms=1.0,
        model="fake",
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
