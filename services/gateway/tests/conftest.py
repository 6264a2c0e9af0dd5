"""Fixtures: a fake detector, settings on ephemeral ports, a running gateway, a short test video."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from riskwatch.cache import InMemoryCache, keys
from riskwatch.errors import InvalidFrame
from riskwatch.events import event_id, timestamp
from riskwatch.v1 import detector_pb2, events_pb2
from riskwatch_gateway.config import CamerasConfig, CameraConfig, GatewayConfig, GatewaySettings
from riskwatch_gateway.gateway import Gateway


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
        height, width = (image.shape[:2] if image is not None else (0, 0))
        return events_pb2.DetectionEvent(
            event_id=event_id(frame.camera_id, frame.frame_id),
            camera_id=frame.camera_id,
            frame_id=frame.frame_id,
            capture_time=frame.capture_time,
            image_width=width,
            image_height=height,
            detections=[
                events_pb2.Detection(track_id=1, class_name="person", category=events_pb2.CATEGORY_PEDESTRIAN,
                                     confidence=0.9, box=events_pb2.BoundingBox(x1=10, y1=20, x2=40, y2=100)),
                events_pb2.Detection(track_id=2, class_name="car", category=events_pb2.CATEGORY_VEHICLE,
                                     confidence=0.8, box=events_pb2.BoundingBox(x1=50, y1=40, x2=150, y2=110)),
            ],
            groups=[events_pb2.Group(
                group_id="g1", member_track_ids=[1, 2], box=events_pb2.BoundingBox(x1=10, y1=20, x2=150, y2=110),
                features=events_pb2.GroupFeatures(vehicles=1, pedestrians=1, density=0.5,
                                                  min_ped_vehicle_distance=0.3),
            )],
            detector_latency_ms=1.0,
            model="fake",
            detected_time=timestamp(),
        )


def make_settings(cameras: list[CameraConfig] | None = None, **gateway: Any) -> GatewaySettings:
    fields: dict[str, Any] = {"grpc_port": 0, "http_port": 0, "heartbeat_interval_s": 0.5,
                              "status_interval_s": 0.5}
    fields.update(gateway)
    return GatewaySettings(gateway=GatewayConfig(**fields), cameras=CamerasConfig(cameras=cameras or []))


def jpeg(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return bytes(data.tobytes())


def risk_state(camera_id: str, version: int, level: int = events_pb2.RISK_LEVEL_HIGH,
               group_id: str = "g1") -> events_pb2.CameraRiskState:
    return events_pb2.CameraRiskState(
        camera_id=camera_id, max_level=level, version=version, updated_time=timestamp(),
        last_task_id=f"{camera_id}:1/{group_id}",
        groups=[events_pb2.GroupRisk(
            group_id=group_id, task_id=f"{camera_id}:1/{group_id}", member_track_ids=[1, 2],
            verdict=events_pb2.Verdict(risk_level=level, risk_types=["vehicle_pedestrian_conflict"],
                                       description="a pedestrian steps in front of a car", confidence=0.8,
                                       involved_track_ids=[1, 2]),
        )],
    )


async def publish_state(cache: InMemoryCache, state: events_pb2.CameraRiskState) -> None:
    """What the aggregator does on every change: latest state first, then the push."""
    data = state.SerializeToString()
    await cache.set(keys.camera_state(state.camera_id), data)
    await cache.publish(keys.RISK_STATE_CHANNEL, data)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """A 4-second, 10 fps MJPG clip with a moving square."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for i in range(40):
        frame = np.zeros((240, 320, 3), np.uint8)
        cv2.rectangle(frame, (i * 5, 100), (i * 5 + 30, 130), (0, 255, 0), -1)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def detector() -> FakeDetector:
    return FakeDetector()


@pytest.fixture
def cache() -> InMemoryCache:
    return InMemoryCache()


GatewayFactory = Callable[..., Any]


@pytest.fixture
async def start_gateway(detector: FakeDetector, cache: InMemoryCache) -> AsyncIterator[GatewayFactory]:
    """Start a gateway with the given settings (stopped at the end of the test)."""
    started: list[Gateway] = []

    async def start(settings: GatewaySettings | None = None) -> Gateway:
        gateway = Gateway(settings or make_settings(), detector, cache)
        await gateway.start()
        started.append(gateway)
        await asyncio.wait_for(gateway.feed.subscribed.wait(), 5)
        return gateway

    yield start
    for gateway in reversed(started):
        await gateway.stop()


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> Gateway:
    """A gateway with one push camera, cam-01."""
    gw: Gateway = await start_gateway(make_settings([CameraConfig(id="cam-01", source="push")]))
    return gw
