"""Issue 13 findings 1, 6 and 7 against a real gateway process: which sources a camera may open (local files, internal
hosts, other ffmpeg protocols, devices, how many cameras), and new sources probed before they are accepted."""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import grpc
import httpx
import numpy as np
import pytest

from riskwatch.v1 import gateway_pb2, gateway_pb2_grpc
from tests.support.stack import Stack, wait_for_port

pytestmark = pytest.mark.infra  # the gateway process keeps its state in the real Redis

MAX_CAMERAS = 6
# An address of the loopback network that the gateway's sources.allowed_hosts lets through, for the test's own
# HTTP server: everything else on loopback stays refused.
ALLOWED_LOOPBACK = "127.0.0.2"


def write_clip(path: Path) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(10):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()
    return path


class Listener:
    """A TCP port that records whether anything connected to it."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen()
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


class Media:
    """The files and servers the tests point cameras at."""

    def __init__(self, root: Path) -> None:
        self.roots = root / "media"
        self.outside = root / "outside"
        self.roots.mkdir()
        self.outside.mkdir()
        self.clip = write_clip(self.roots / "clip.avi")
        self.outside_clip = write_clip(self.outside / "secret.avi")
        (self.roots / "notes.txt").write_text("a text file that ffmpeg's tty demuxer renders as video\n" * 50)
        (self.roots / "notes.avi").write_text("not a video, whatever its name says\n" * 50)
        (self.roots / "folder.avi").mkdir()
        (self.roots / "link.avi").symlink_to(self.outside_clip)
        self.tcp = Listener(ALLOWED_LOOPBACK)
        web = self.outside / "web"
        web.mkdir()
        write_clip(web / "clip.avi")
        hls = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{}\n#EXT-X-ENDLIST\n"
        (web / "tcp.m3u8").write_text(hls.format(f"tcp://{ALLOWED_LOOPBACK}:{self.tcp.port}/a.ts"))
        (web / "file.m3u8").write_text(hls.format(f"file:{self.outside_clip}"))
        handler = functools.partial(_QuietHandler, directory=str(web))
        self.web = http.server.ThreadingHTTPServer((ALLOWED_LOOPBACK, 0), handler)
        self.web_url = f"http://{ALLOWED_LOOPBACK}:{self.web.server_address[1]}"
        threading.Thread(target=self.web.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.web.shutdown()
        self.tcp.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Media]:
    media = Media(tmp_path_factory.mktemp("sources"))
    yield media
    media.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, media: Media) -> Iterator[Stack]:
    stack = Stack(log_dir=tmp_path_factory.mktemp("logs"))
    stack.extra_env.update(
        {
            "ALGO_GATEWAY__SOURCES__MEDIA_ROOTS": json.dumps([str(media.roots)]),
            "ALGO_GATEWAY__SOURCES__MAX_CAMERAS": str(MAX_CAMERAS),
            "ALGO_GATEWAY__SOURCES__ALLOWED_HOSTS": json.dumps([ALLOWED_LOOPBACK]),
            "ALGO_GATEWAY__SOURCES__PROBE_TIMEOUT_S": "3",
        }
    )
    gateway = stack.start("gateway", "riskwatch_gateway", port="gateway_grpc")
    wait_for_port(stack.ports["gateway_http"], proc=gateway)  # HTTP starts after gRPC
    try:
        yield stack
    finally:
        stack.stop_all()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.ports['gateway_http']}", timeout=15) as client:
        yield client
        for camera in client.get("/api/cameras").json()["cameras"]:
            client.delete(f"/api/cameras/{camera['camera_id']}")


def add(api: httpx.Client, camera_id: str, source: str, **extra: Any) -> httpx.Response:
    return api.post("/api/cameras", json={"id": camera_id, "source": source, **extra})


def camera_ids(api: httpx.Client) -> list[str]:
    return [camera["camera_id"] for camera in api.get("/api/cameras").json()["cameras"]]


def assert_refused(response: httpx.Response, reason: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["reason"] == reason
    assert body["error"] in (f"source not allowed: {reason}", f"source unavailable: {reason}")


def test_local_files_outside_the_media_roots_are_refused_without_telling_whether_they_exist(
    api: httpx.Client, media: Media
) -> None:
    existing = add(api, "cam-passwd", "/etc/passwd")
    missing = add(api, "cam-missing", "/etc/no-such-file-here")
    assert_refused(existing, "outside the media roots")
    assert existing.json() == missing.json()
    # A video outside the roots, reached by "..", by a link inside a root, or named directly: all one answer.
    answers = [
        add(api, "cam-dots", f"{media.roots}/../outside/secret.avi"),
        add(api, "cam-link", str(media.roots / "link.avi")),
        add(api, "cam-outside", str(media.outside_clip)),
        add(api, "cam-nowhere", str(media.outside / "nothing.avi")),
    ]
    for answer in answers:
        assert_refused(answer, "outside the media roots")
    assert len({answer.text for answer in answers}) == 1
    assert camera_ids(api) == []


def test_a_text_file_never_becomes_video(api: httpx.Client, media: Media) -> None:
    assert_refused(add(api, "cam-txt", str(media.roots / "notes.txt")), "file type")
    # Named like a video, it is probed and found undecodable.
    assert_refused(add(api, "cam-notes", str(media.roots / "notes.avi")), "cannot decode the file", 422)
    assert camera_ids(api) == []


def test_internal_hosts_and_other_protocols_are_refused(api: httpx.Client, stack: Stack) -> None:
    for source in (
        f"http://127.0.0.1:{stack.ports['gateway_http']}/api/cameras",
        "http://localhost/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://0.0.0.0:80/",
        "rtsp://[::1]:554/live",
        "http://[::ffff:127.0.0.1]/",
    ):
        assert_refused(add(api, "cam-internal", source), "address")
    listen_port = stack.ports["llmsim"]  # free: nothing runs there in this module
    for source in (
        f"tcp://127.0.0.1:{listen_port}?listen=1",
        "udp://0.0.0.0:9999",
        "rtmp://example.com/live",
        "file:/etc/passwd",
        "concat:/etc/passwd|/etc/hosts",
    ):
        assert_refused(add(api, "cam-proto", source), "scheme")
    with socket.socket() as probe:  # the gateway did not start listening there
        assert probe.connect_ex(("127.0.0.1", listen_port)) != 0
    assert camera_ids(api) == []


def test_devices_are_off_by_default(api: httpx.Client) -> None:
    assert_refused(add(api, "cam-dev", "device:0"), "devices are disabled")
    unicode_digit = add(api, "cam-dev2", "device:²")
    assert unicode_digit.status_code == 400 and "device:<index>" in unicode_digit.json()["error"]
    assert camera_ids(api) == []


def test_a_playlist_cannot_lead_ffmpeg_to_other_protocols(api: httpx.Client, media: Media) -> None:
    # Control: the allowed host serves a real clip, so what follows is refused for its content, not its host.
    assert add(api, "cam-web", f"{media.web_url}/clip.avi").status_code == 201
    assert_refused(add(api, "cam-hls-tcp", f"{media.web_url}/tcp.m3u8"), "cannot open", 422)
    assert media.tcp.connections == 0
    assert_refused(add(api, "cam-hls-file", f"{media.web_url}/file.m3u8"), "cannot open", 422)
    assert camera_ids(api) == ["cam-web"]


def test_unreadable_sources_are_refused_with_the_reason(api: httpx.Client, media: Media) -> None:
    assert_refused(add(api, "cam-gone", str(media.roots / "gone.avi")), "no such file", 422)
    assert_refused(add(api, "cam-dir", str(media.roots / "folder.avi")), "not a file", 422)
    assert_refused(add(api, "cam-rtsp", "rtsp://no-such-host.invalid/live"), "host not found", 422)
    assert_refused(add(api, "cam-closed", f"rtsp://{ALLOWED_LOOPBACK}:{media.tcp.port + 1}/x"), "cannot open", 422)
    assert camera_ids(api) == []


def test_allow_offline_keeps_an_unreadable_camera_with_its_reason(api: httpx.Client, media: Media) -> None:
    added = add(api, "cam-later", str(media.roots / "later.avi"), allow_offline=True)
    assert added.status_code == 201, added.text
    camera = added.json()["camera"]
    assert camera["status"] == "offline" and camera["error"] == "no such file"
    # allow_offline never lets a refused source in.
    assert_refused(add(api, "cam-x", "/etc/passwd", allow_offline=True), "outside the media roots")
    good = add(api, "cam-clip", str(media.clip))
    assert good.status_code == 201 and good.json()["camera"]["status"] != "offline"


def test_the_number_of_cameras_is_bounded(api: httpx.Client) -> None:
    for i in range(MAX_CAMERAS):
        assert add(api, f"cam-{i}", "push").status_code == 201
    over = add(api, "cam-over", "push")
    assert over.status_code == 429 and "max_cameras" in over.json()["error"]
    assert len(camera_ids(api)) == MAX_CAMERAS


async def test_grpc_add_camera_applies_the_same_rules(stack: Stack, media: Media) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports['gateway_grpc']}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)

        async def add_camera(source: str, allow_offline: bool = False) -> gateway_pb2.AddCameraResponse:
            camera = gateway_pb2.Camera(camera_id="cam-grpc", source=source)
            request = gateway_pb2.AddCameraRequest(camera=camera, allow_offline=allow_offline)
            return await asyncio.wait_for(stub.AddCamera(request), 15)

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await add_camera("http://169.254.169.254/")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == "source not allowed: address"
        with pytest.raises(grpc.aio.AioRpcError) as unavailable:
            await add_camera(str(media.roots / "gone.avi"))
        assert unavailable.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert unavailable.value.details() == "source unavailable: no such file"
        added = await add_camera(str(media.roots / "gone.avi"), allow_offline=True)
        assert added.camera.status == gateway_pb2.CAMERA_STATUS_OFFLINE
        await stub.RemoveCamera(gateway_pb2.RemoveCameraRequest(camera_id="cam-grpc"))
