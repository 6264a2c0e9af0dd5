"""Camera sources: a video file paced in real time (and looped), a missing source reconnecting."""

from __future__ import annotations

import asyncio
import shutil
import struct
import time
from pathlib import Path

import cv2
import numpy as np
from websockets.asyncio.client import connect

from riskwatch_gateway.app import GatewayApp
from riskwatch_gateway.config import CameraConfig
from riskwatch_gateway.messages import redact_source
from riskwatch_gateway.sources import EncodeOptions, preview_from_jpeg
from riskwatch_gateway.testing import FakeDetector, make_settings, of_type, recv_until, send


async def test_video_file_is_sampled_at_the_camera_rate_and_loops(
    start_gateway: object, detector: FakeDetector, video: Path
) -> None:
    # The clip lasts 2 s; at 5 fps over 3 s we get ~15 frames only if it loops.
    gateway: GatewayApp = await start_gateway(  # type: ignore[operator]
        make_settings([CameraConfig(id="cam-v", source=str(video), fps=5, loop=True)])
    )
    started = time.monotonic()
    await asyncio.sleep(3.0)
    elapsed = time.monotonic() - started
    count = len(detector.frames)
    assert 0.7 * 5 * elapsed <= count <= 5 * elapsed + 2
    ids = [f.frame_id for f in detector.frames]
    assert ids == sorted(set(ids))
    info = gateway.cameras.get("cam-v").info()
    assert info.status == 1 and 4 <= info.measured_fps <= 6


async def test_file_without_loop_goes_offline_at_the_end(
    start_gateway: object, detector: FakeDetector, video: Path
) -> None:
    gateway: GatewayApp = await start_gateway(  # type: ignore[operator]
        make_settings([CameraConfig(id="cam-v", source=str(video), fps=10)])
    )
    async with connect(f"ws://127.0.0.1:{gateway.http_port}/ws") as ws:
        await send(ws, {"type": "subscribe", "cameras": ["cam-v"], "detections": False})
        status = await recv_until(ws, of_type("camera_status", status="offline"), timeout=8)
    assert status["error"] == "end of file"
    assert 15 <= len(detector.frames) <= 21


async def test_missing_source_reconnects_with_backoff_and_recovers(
    start_gateway: object, tmp_path: Path, video: Path
) -> None:
    late = tmp_path / "late.avi"
    gateway: GatewayApp = await start_gateway(  # type: ignore[operator]
        make_settings(
            [CameraConfig(id="cam-late", source=str(late), fps=5, loop=True)],
            reconnect_initial_s=0.2,
            reconnect_max_s=0.4,
        )
    )
    async with connect(f"ws://127.0.0.1:{gateway.http_port}/ws") as ws:
        await send(ws, {"type": "subscribe", "cameras": ["cam-late"], "detections": False})
        reconnecting = await recv_until(ws, of_type("camera_status", status="reconnecting"))
        assert "late.avi" in reconnecting["error"]
        await asyncio.to_thread(shutil.copy, video, late)  # the file appears
        await recv_until(ws, of_type("camera_status", status="online"), timeout=5)


def test_source_credentials_are_redacted() -> None:
    assert redact_source("rtsp://admin:hunter2@10.0.0.5:554/live") == "rtsp://***@10.0.0.5:554/live"
    assert redact_source("rtsp://10.0.0.5/live") == "rtsp://10.0.0.5/live"
    assert redact_source("var/data/vtest.avi") == "var/data/vtest.avi"


def test_previews_of_pushed_images_refuse_what_the_detector_refuses() -> None:
    options = EncodeOptions()
    small = cv2.imencode(".png", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()
    assert preview_from_jpeg(small, options) == small  # already small enough: sent as it is
    # 78 bytes whose IDAT declares 4 GB (OpenCV would allocate it), and 24000x2000 pixels in a few kB.
    chunk_bomb = small[:33] + struct.pack(">I", 0xFC000084) + small[37:]
    pixel_bomb = cv2.imencode(".png", np.zeros((2000, 24000, 3), np.uint8))[1].tobytes()
    assert len(pixel_bomb) < 200_000
    assert preview_from_jpeg(chunk_bomb, options) is None
    assert preview_from_jpeg(pixel_bomb, options) is None
