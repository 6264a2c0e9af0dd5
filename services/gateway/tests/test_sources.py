"""Camera sources: a video file paced in real time (and looped, and read again once replaced), a still image, a
missing source reconnecting, device indexes, internal hosts, and credentials kept out of what clients see."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import struct
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from websockets.asyncio.client import connect

from riskwatch.v1 import detector_pb2
from riskwatch_gateway.app import GatewayApp
from riskwatch_gateway.config import CameraConfig, SourceRefused, SourcesConfig, device_index
from riskwatch_gateway.messages import redact_source
from riskwatch_gateway.sources import EncodeOptions, check_url_host, preview_from_jpeg
from riskwatch_gateway.testing import FakeDetector, GatewayFactory, make_settings, of_type, recv_until, send


async def test_video_file_is_sampled_at_the_camera_rate_and_loops(
    start_gateway: GatewayFactory, detector: FakeDetector, video: Path
) -> None:
    # The clip lasts 2 s; at 5 fps over 3 s we get ~15 frames only if it loops.
    gateway: GatewayApp = await start_gateway(
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
    start_gateway: GatewayFactory, detector: FakeDetector, video: Path
) -> None:
    gateway: GatewayApp = await start_gateway(make_settings([CameraConfig(id="cam-v", source=str(video), fps=10)]))
    async with connect(f"ws://127.0.0.1:{gateway.http_port}/ws") as ws:
        await send(ws, {"type": "subscribe", "cameras": ["cam-v"], "detections": False})
        status = await recv_until(ws, of_type("camera_status", status="offline"), timeout=8)
    assert status["error"] == "end of file"
    assert 15 <= len(detector.frames) <= 21


async def test_missing_source_reconnects_with_backoff_and_recovers(
    start_gateway: GatewayFactory, tmp_path: Path, video: Path
) -> None:
    late = tmp_path / "late.avi"
    gateway: GatewayApp = await start_gateway(
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


@given(
    user=st.text(min_size=1),
    password=st.text(),
    token=st.text(alphabet=st.characters(exclude_characters="@&;#"), min_size=1),
    name=st.sampled_from(["password", "token", "api_key", "secret", "auth", "X-Auth-Token", "sig"]),
)
def test_redaction_hides_all_of_the_userinfo_and_secret_query_values(
    user: str, password: str, token: str, name: str
) -> None:
    source = f"rtsp://{user}:{password}@cam.example:554/live?{name}={token}&channel=1"
    assert redact_source(source) == f"rtsp://***@cam.example:554/live?{name}=***&channel=1"
    assert redact_source(f"http://{user}@cam.example/snap.jpg") == "http://***@cam.example/snap.jpg"


@pytest.mark.parametrize("source", ["device:²", "device:٣", "device:-1", "device:", "device:1e3", "device:99999"])
def test_device_indexes_are_ascii_digits(source: str) -> None:
    with pytest.raises(ValidationError, match="device:<index>"):
        CameraConfig(id="cam-d", source=source)
    assert device_index(CameraConfig(id="cam-d", source="device:3").source) == 3


def test_url_hosts_resolving_to_internal_addresses_are_refused_unless_allowed() -> None:
    sources = SourcesConfig()
    check_url_host("rtsp://10.0.0.5/live", sources)  # cameras on the LAN are the normal case
    for url in ("http://127.0.0.1/", "http://localhost:8000/", "http://169.254.169.254/", "http://[::]/"):
        with pytest.raises(SourceRefused, match="address"):
            check_url_host(url, sources)
    check_url_host("http://localhost:8000/", SourcesConfig(allowed_hosts=["localhost"]))
    check_url_host("http://127.0.0.1/", SourcesConfig(allowed_hosts=["127.0.0.0/8"]))


def solid_clip(path: Path, value: int, frames: int = 20) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (64, 48))
    for _ in range(frames):
        writer.write(np.full((48, 64, 3), value, np.uint8))
    writer.release()
    return path


def brightness(frame: detector_pb2.Frame) -> float:
    image = cv2.imdecode(np.frombuffer(frame.image, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    return float(image.mean())


async def test_a_replaced_file_is_read_again(
    start_gateway: GatewayFactory, detector: FakeDetector, tmp_path: Path
) -> None:
    source = solid_clip(tmp_path / "feed.avi", 30)
    await start_gateway(make_settings([CameraConfig(id="cam-f", source=str(source), fps=5, loop=True)]))
    await asyncio.sleep(1.0)
    assert detector.frames and all(brightness(f) < 100 for f in detector.frames)
    # Replaced as tools do it (a new file renamed over the old one): the open capture still reads the old inode.
    os.replace(solid_clip(tmp_path / "new.avi", 220), source)
    seen = len(detector.frames)
    await asyncio.sleep(2.5)
    assert any(brightness(f) > 150 for f in detector.frames[seen:])


async def test_a_looping_still_image_stays_online(
    start_gateway: GatewayFactory, detector: FakeDetector, tmp_path: Path
) -> None:
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), np.full((48, 64, 3), 128, np.uint8))
    gateway: GatewayApp = await start_gateway(
        make_settings([CameraConfig(id="cam-s", source=str(image), fps=5, loop=True)])
    )
    seen: list[dict[str, object]] = []
    async with connect(f"ws://127.0.0.1:{gateway.http_port}/ws") as ws:
        await send(ws, {"type": "subscribe", "cameras": ["cam-s"], "detections": False})
        with contextlib.suppress(TimeoutError):
            await recv_until(ws, lambda m: False, timeout=3, seen=seen)
    statuses = [m["status"] for m in seen if m.get("type") == "camera_status"]
    assert statuses and all(status == "online" for status in statuses[1:]), statuses
    assert 10 <= len(detector.frames) <= 17


async def test_a_configured_camera_whose_host_does_not_resolve_keeps_retrying(start_gateway: GatewayFactory) -> None:
    gateway: GatewayApp = await start_gateway(
        make_settings(
            [CameraConfig(id="cam-dns", source="rtsp://no-such-host.invalid/live")],
            reconnect_initial_s=0.1,
            reconnect_max_s=0.2,
        )
    )
    await asyncio.sleep(1.0)
    camera = gateway.cameras.get("cam-dns")
    assert camera.status_extra()["error"] == "host not found"
    assert camera._thread is not None and camera._thread.alive and camera._thread.reconnects >= 2
