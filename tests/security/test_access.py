"""Issue 13, access control, against a real streaming gateway process (Redis at 127.0.0.1:6379; no detector, no
Kafka needed): tokens and roles on REST, WebSocket, gRPC and gRPC-web; the DNS-rebinding Host refused; a 1 MiB
gRPC-web-text body neither stalls the event loop nor is read without a token; a huge grpc-timeout is a clean
INVALID_ARGUMENT; a non-loopback bind without tokens does not start."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from riskwatch.v1 import gateway_pb2, gateway_pb2_grpc
from riskwatch_gateway.access import token_hash
from riskwatch_gateway.grpcweb import decode_text
from tests.support.stack import REPO, Stack, wait_for_port

pytestmark = pytest.mark.infra

VIEWER, ADMIN = "viewer-" + "v" * 40, "admin-" + "a" * 40
EVIL_HOST = "evil.example:8000"
LIST_CAMERAS = "/riskwatch.v1.GatewayService/ListCameras"
GRPC_WEB_TEXT = {"content-type": "application/grpc-web-text", "x-grpc-web": "1"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tokens = f'[{{"role":"viewer","sha256":"{token_hash(VIEWER)}"}},{{"role":"admin","sha256":"{token_hash(ADMIN)}"}}]'
    stack = Stack(tmp_path_factory.mktemp("access"), extra_env={"ALGO_GATEWAY__ACCESS__TOKENS": tokens})
    stack.start("gateway", "riskwatch_gateway", port="gateway_grpc")
    try:
        wait_for_port(stack.ports["gateway_http"], proc=stack.procs["gateway"])
        yield stack
    finally:
        stack.stop_all()


def http(stack: Stack, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports['gateway_http']}", headers=headers)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def grpc_web_status(reply: httpx.Response) -> int:
    """grpc-status of a gRPC-web reply that carries no messages (it is then in the headers)."""
    assert reply.status_code == 200, reply.text
    return int(reply.headers["grpc-status"])


def raw_request(port: int, head: str, timeout: float = 5.0) -> bytes:
    """Send a request head (and no body) over a plain socket; what the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        return sock.recv(4096)


async def test_without_a_token_every_protocol_answers_401_or_unauthenticated(gateway: Stack) -> None:
    async with http(gateway) as client:
        assert (await client.get("/api/cameras")).status_code == 401
        assert (await client.get("/metrics/")).status_code == 401
        assert (await client.get("/healthz")).status_code == 200  # probes stay open
        body = base64.b64encode(struct.pack(">BI", 0, 0))
        reply = await client.post(LIST_CAMERAS, content=body, headers=GRPC_WEB_TEXT)
        assert grpc_web_status(reply) == grpc.StatusCode.UNAUTHENTICATED.value[0]
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{gateway.ports['gateway_http']}/ws"):
            pass
    assert refused.value.response.status_code == 401
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.ports['gateway_grpc']}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.ListCameras(gateway_pb2.ListCamerasRequest())
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await stub.ListCameras(gateway_pb2.ListCamerasRequest(), metadata=bearer(token_hash(ADMIN)))
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_viewer_watches_but_only_an_admin_changes_cameras(gateway: Stack) -> None:
    async with http(gateway, VIEWER) as viewer, http(gateway, ADMIN) as admin:
        camera = {"id": "sec-cam-1", "source": "push"}
        refused = await viewer.post("/api/cameras", json=camera)
        assert refused.status_code == 403 and "admin" in refused.json()["error"]
        assert (await admin.post("/api/cameras", json=camera)).status_code == 201
        assert [c["camera_id"] for c in (await viewer.get("/api/cameras")).json()["cameras"]] == ["sec-cam-1"]
        assert (await viewer.delete("/api/cameras/sec-cam-1")).status_code == 403
        assert (await viewer.get("/metrics/")).status_code == 200

    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.ports['gateway_grpc']}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        add = gateway_pb2.AddCameraRequest(camera=gateway_pb2.Camera(camera_id="sec-cam-2", source="push"))
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.AddCamera(add, metadata=bearer(VIEWER))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await stub.AddCamera(add, metadata=bearer(ADMIN))
        watch = stub.WatchCamera(gateway_pb2.WatchCameraRequest(camera_id="sec-cam-2"), metadata=bearer(VIEWER))
        first = await asyncio.wait_for(anext(aiter(watch)), 10)
        assert first.risk_state.camera_id == "sec-cam-2"
        watch.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as remove:
            await stub.RemoveCamera(gateway_pb2.RemoveCameraRequest(camera_id="sec-cam-2"), metadata=bearer(VIEWER))
        assert remove.value.code() == grpc.StatusCode.PERMISSION_DENIED

    url = f"ws://127.0.0.1:{gateway.ports['gateway_http']}/ws?token={VIEWER}"
    async with connect(url) as ws:
        await ws.send('{"type": "add_camera", "camera": {"id": "sec-cam-3", "source": "push"}, "request_id": 1}')
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["type"] == "error" and "admin" in error["message"]
        await ws.send('{"type": "subscribe", "cameras": "*"}')
        while (message := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "subscribed":
            assert message["type"] != "error", message


async def test_a_dns_rebinding_host_is_refused_on_rest_websocket_and_grpc_web(gateway: Stack) -> None:
    port = gateway.ports["gateway_http"]
    rebound = {"Host": EVIL_HOST, "Origin": f"http://{EVIL_HOST}"}
    async with http(gateway, ADMIN) as admin:
        created = await admin.post("/api/cameras", json={"id": "sec-cam-9", "source": "push"}, headers=rebound)
        assert created.status_code in (400, 403)
        assert (await admin.get("/api/cameras", headers=rebound)).status_code in (400, 403)
        web = await admin.post(LIST_CAMERAS, content=b"", headers={**GRPC_WEB_TEXT, **rebound})
        assert web.status_code in (400, 403)
        assert "sec-cam-9" not in (await admin.get("/api/cameras")).text
    upgrade = (
        f"GET /ws?token={ADMIN} HTTP/1.1\r\nHost: {EVIL_HOST}\r\nOrigin: http://{EVIL_HOST}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    status = raw_request(port, upgrade).split(b"\r\n", 1)[0]
    assert b" 101 " not in status and (b" 400 " in status or b" 403 " in status), status


async def test_a_large_grpc_web_text_body_does_not_stall_the_gateway(gateway: Stack) -> None:
    # 256 Ki one-group chunks: the old decoder's worst case (8.5 s of blocked event loop for this body)
    body = b"AAA=" * (256 * 1024)
    async with http(gateway, ADMIN) as admin, http(gateway) as probe:
        started = time.monotonic()
        call = asyncio.create_task(admin.post(LIST_CAMERAS, content=body, headers=GRPC_WEB_TEXT))
        await asyncio.sleep(0.05)
        health_started = time.monotonic()
        assert (await probe.get("/healthz")).status_code == 200
        assert time.monotonic() - health_started < 1.0
        reply = await call
        assert reply.status_code == 200 and time.monotonic() - started < 5.0


async def test_a_grpc_web_body_over_the_cap_is_refused(gateway: Stack) -> None:
    async with http(gateway, ADMIN) as admin:
        reply = await admin.post(LIST_CAMERAS, content=b"A" * (4 * 1024 * 1024 + 4), headers=GRPC_WEB_TEXT)
        assert grpc_web_status(reply) == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert "grpc_web_max_body_bytes" in reply.headers["grpc-message"]


def test_without_a_token_the_body_is_refused_before_it_is_read(gateway: Stack) -> None:
    # Announce 1 MiB and send none of it: the refusal must come anyway (the body is never awaited).
    head = (
        f"POST {LIST_CAMERAS} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/grpc-web-text\r\n"
        f"Content-Length: {1024 * 1024}\r\n\r\n"
    )
    reply = raw_request(gateway.ports["gateway_http"], head, timeout=3.0).lower()
    assert b"grpc-status: 16" in reply  # UNAUTHENTICATED


async def test_a_malformed_or_huge_grpc_timeout_is_invalid_argument(gateway: Stack) -> None:
    body = base64.b64encode(struct.pack(">BI", 0, 0))
    async with http(gateway, ADMIN) as admin:
        for timeout in ("9" * 400 + "S", "soon"):
            reply = await admin.post(LIST_CAMERAS, content=body, headers={**GRPC_WEB_TEXT, "grpc-timeout": timeout})
            assert grpc_web_status(reply) == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        ok = await admin.post(LIST_CAMERAS, content=body, headers={**GRPC_WEB_TEXT, "grpc-timeout": "5S"})
        assert ok.status_code == 200 and b"grpc-status: 0" in decode_text(ok.content)


@pytest.mark.parametrize("host_setting", ["ALGO_GATEWAY__HTTP_HOST", "ALGO_GATEWAY__GRPC_HOST"])
def test_a_non_loopback_bind_without_tokens_does_not_start(host_setting: str, tmp_path: Path) -> None:
    env = Stack(tmp_path).env() | {host_setting: "0.0.0.0"}
    started = subprocess.run(
        [sys.executable, "-m", "riskwatch_gateway"],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 2, started.stderr[-2000:]
    assert "allow_insecure" in started.stderr and "access.tokens" in started.stderr
