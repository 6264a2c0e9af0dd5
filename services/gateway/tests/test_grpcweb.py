"""gRPC-web, served by the gateway on its HTTP port, called by a real gRPC-web client (Node + Connect)."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2, timestamp_pb2

from riskwatch.cache import InMemoryCache
from riskwatch.v1 import detector_pb2, events_pb2, gateway_pb2
from riskwatch_gateway.app import GatewayApp
from riskwatch_gateway.config import CameraConfig
from riskwatch_gateway.grpcweb import decode_text
from riskwatch_gateway.testing import jpeg, make_settings, publish_state, risk_state

CLIENT_DIR = Path(__file__).parent / "grpcweb"


@pytest.fixture(scope="module")
def node_client() -> Path:
    """The client script, with its npm packages installed from the lock file on first use."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are needed for the gRPC-web client test (apt-get install nodejs npm)")
    if not (CLIENT_DIR / "node_modules" / "@connectrpc" / "connect-web").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=CLIENT_DIR, check=True, timeout=300
        )
    return CLIENT_DIR / "client.mjs"


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = descriptor_pb2.FileDescriptorSet()
    for module in (timestamp_pb2, events_pb2, detector_pb2, gateway_pb2):
        module.DESCRIPTOR.CopyToProto(files.file.add())
    # The runtime's descriptors lack the JSON names protoc fills in; the client needs them.
    for file in files.file:
        _set_json_names(file.message_type)
    path = tmp_path_factory.mktemp("grpcweb") / "riskwatch.pb"
    path.write_bytes(files.SerializeToString())
    return path


def _set_json_names(messages: Any) -> None:
    for message in messages:
        for field in message.field:
            head, *rest = field.name.split("_")
            field.json_name = head + "".join(part[:1].upper() + part[1:] for part in rest)
        _set_json_names(message.nested_type)


class GrpcWebCall:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self, timeout: float = 10) -> dict[str, Any]:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not raw:
            assert self.process.stderr is not None
            raise AssertionError(f"client ended: {(await self.process.stderr.read()).decode()}")
        return json.loads(raw)  # type: ignore[no-any-return]


async def start_call(
    client: Path,
    descriptor: Path,
    gateway: GatewayApp,
    method: str,
    request: dict[str, Any],
    *,
    max_messages: int = 0,
    token: str = "",
) -> GrpcWebCall:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(client),
        f"http://127.0.0.1:{gateway.http_port}",
        str(descriptor),
        method,
        json.dumps(request),
        str(max_messages or ""),
        token,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return GrpcWebCall(process)


async def call(
    client: Path, descriptor: Path, gateway: GatewayApp, method: str, request: dict[str, Any], *, token: str = ""
) -> dict[str, Any]:
    running = await start_call(client, descriptor, gateway, method, request, token=token)
    first = await running.line()
    await running.process.wait()
    return first


async def test_grpc_web_client_gets_unary_answers_and_a_watch_stream(
    node_client: Path, descriptor_set: Path, gateway: GatewayApp, cache: InMemoryCache
) -> None:
    listed = await call(node_client, descriptor_set, gateway, "ListCameras", {})
    assert "message" in listed, listed
    assert [c["camera"]["cameraId"] for c in listed["message"]["cameras"]] == ["cam-01"]

    await publish_state(cache, risk_state("cam-01", 1))
    state = await call(node_client, descriptor_set, gateway, "GetCameraState", {"cameraId": "cam-01"})
    assert state["message"]["state"]["version"] == "1"
    missing = await call(node_client, descriptor_set, gateway, "GetCameraState", {"cameraId": "nope"})
    assert missing["error"]["code"] == "NotFound" and "nope" in missing["error"]["message"]

    watch = await start_call(
        node_client,
        descriptor_set,
        gateway,
        "WatchCamera",
        {"cameraId": "cam-01", "includeDetections": True},
        max_messages=3,
    )
    try:
        first = await watch.line()
        assert first["message"]["riskState"]["version"] == "1"  # the current state first
        frame = detector_pb2.Frame(camera_id="cam-01", frame_id=77, image=jpeg())
        await gateway.cameras.get("cam-01").push(frame)
        second = await watch.line()
        assert second["message"]["detections"]["frameId"] == "77"
        assert second["message"]["detections"]["detections"][0]["className"] == "person"
        await publish_state(cache, risk_state("cam-01", 2, level=events_pb2.RISK_LEVEL_MEDIUM))
        third = await watch.line()
        assert third["message"]["riskState"]["version"] == "2"
        assert third["message"]["riskState"]["maxLevel"] == "RISK_LEVEL_MEDIUM"
        assert await watch.line() == {"status": "ok"}
    finally:
        if watch.process.returncode is None:
            watch.process.kill()
        await watch.process.wait()


async def test_grpc_web_sets_and_reads_a_calibration_through_the_same_servicer(
    node_client: Path, descriptor_set: Path, gateway: GatewayApp
) -> None:
    square = [{"x": 0, "y": 0}, {"x": 100, "y": 0}, {"x": 100, "y": 100}, {"x": 0, "y": 100}]
    metres = [{"x": 0, "y": 0}, {"x": 10, "y": 0}, {"x": 10, "y": 10}, {"x": 0, "y": 10}]
    request = {"cameraId": "cam-01", "calibration": {"imagePoints": square, "groundPoints": metres}}
    set_ = await call(node_client, descriptor_set, gateway, "SetCalibration", request)
    assert set_["message"]["calibration"]["origin"] == "CALIBRATION_ORIGIN_API", set_
    assert set_["message"]["calibration"]["calibration"]["version"] == "1"
    got = await call(node_client, descriptor_set, gateway, "GetCalibration", {"cameraId": "cam-01"})
    assert got["message"] == set_["message"]
    flat = {"cameraId": "cam-01", "calibration": {"imagePoints": square[:3], "groundPoints": metres[:3]}}
    refused = await call(node_client, descriptor_set, gateway, "SetCalibration", flat)
    assert refused["error"]["code"] == "InvalidArgument" and "got 3" in refused["error"]["message"]


async def test_grpc_web_needs_the_token_when_configured(
    node_client: Path, descriptor_set: Path, start_gateway: Any
) -> None:
    gateway: GatewayApp = await start_gateway(
        make_settings([CameraConfig(id="cam-01", source="push")], auth_token="s3cret")
    )
    denied = await call(node_client, descriptor_set, gateway, "ListCameras", {})
    assert denied["error"]["code"] == "Unauthenticated"
    allowed = await call(node_client, descriptor_set, gateway, "ListCameras", {}, token="s3cret")
    assert allowed["message"]["cameras"][0]["camera"]["cameraId"] == "cam-01"


async def test_grpc_web_text_mode_and_client_streaming_refusal(gateway: GatewayApp) -> None:
    """The base64 'grpc-web-text' variant (Google's grpc-web default in browsers) and a clear refusal of
    PushFrames, which needs client streaming."""
    body = base64.b64encode(struct.pack(">BI", 0, 0))
    headers = {"content-type": "application/grpc-web-text", "x-grpc-web": "1"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        reply = await http.post("/riskwatch.v1.GatewayService/ListCameras", content=body, headers=headers)
        raw = decode_text(reply.content)  # one base64 chunk per frame
        flag, length = struct.unpack_from(">BI", raw)
        assert flag == 0
        listed = gateway_pb2.ListCamerasResponse.FromString(raw[5 : 5 + length])
        assert [c.camera.camera_id for c in listed.cameras] == ["cam-01"]

        pushed = await http.post(
            "/riskwatch.v1.GatewayService/PushFrames",
            content=struct.pack(">BI", 0, 0),
            headers={"content-type": "application/grpc-web+proto"},
        )
        assert pushed.headers["grpc-status"] == str(grpc.StatusCode.UNIMPLEMENTED.value[0])
