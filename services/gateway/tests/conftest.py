"""Fixtures: a fake detector, settings on ephemeral ports, a running gateway, a short test video."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from riskwatch.cache import InMemoryCache
from riskwatch_gateway.app import GatewayApp
from riskwatch_gateway.config import CameraConfig, GatewaySettings
from riskwatch_gateway.testing import FakeDetector, GatewayFactory, make_settings


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """A 2-second, 10 fps MJPG clip with a moving square."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (320, 240))
    for i in range(20):
        frame = np.zeros((240, 320, 3), np.uint8)
        cv2.rectangle(frame, (i * 10, 100), (i * 10 + 30, 130), (0, 255, 0), -1)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def detector() -> FakeDetector:
    return FakeDetector()


@pytest.fixture
def cache() -> InMemoryCache:
    return InMemoryCache()


@pytest.fixture
async def start_gateway(detector: FakeDetector, cache: InMemoryCache) -> AsyncIterator[GatewayFactory]:
    """Start a gateway with the given settings (stopped at the end of the test)."""
    started: list[GatewayApp] = []

    async def start(settings: GatewaySettings | None = None) -> GatewayApp:
        gateway = GatewayApp(settings or make_settings(), detector, cache)
        await gateway.start()
        started.append(gateway)
        await asyncio.wait_for(gateway.feed.subscribed.wait(), 5)
        return gateway

    yield start
    for gateway in reversed(started):
        await gateway.stop()


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> GatewayApp:
    """A gateway with one push camera, cam-01."""
    gw: GatewayApp = await start_gateway(make_settings([CameraConfig(id="cam-01", source="push")]))
    return gw
