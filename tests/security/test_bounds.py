"""Issue 13, finding 4: no client can grow the gateway without bound or echo its data back (a real gateway process)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from riskwatch.v1 import detector_pb2, gateway_pb2, gateway_pb2_grpc
from riskwatch_gateway.testing import jpeg
from tests.support.stack import Stack, wait_for_port

pytestmark = pytest.mark.infra

MAX_CLIENTS = 4
# What a 30 MiB flood may add to the gateway's memory at most (Python's allocator keeps some of what it frees).
RSS_GROWTH_BOUND_MB = 60
MAX_LOG_LINE = 4096


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One gateway process (no detector needed: nothing here reaches it) with a small client limit."""
    stack = Stack(tmp_path_factory.mktemp("bounds"))
    stack.extra_env["ALGO_GATEWAY__MAX_CLIENTS"] = str(MAX_CLIENTS)
    proc = stack.start("gateway", "riskwatch_gateway", port="gateway_grpc")
    wait_for_port(stack.ports["gateway_http"], proc=proc)
    try:
        yield stack
    finally:
        stack.stop_all()


def ws(stack: Stack) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{stack.ports['gateway_http']}/ws", max_size=None, open_timeout=10)


def rss_mb(stack: Stack) -> float:
    pid = stack.procs["gateway"].pid
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def reply_to(client: ClientConnection, message: dict[str, object]) -> dict[str, object]:
    client.send(json.dumps(message))
    answer: dict[str, object] = json.loads(client.recv(timeout=5))
    return answer


def test_a_flood_of_big_pings_from_a_non_reading_client_does_not_grow_the_gateway(gateway: Stack) -> None:
    before = rss_mb(gateway)
    payload = json.dumps({"type": "ping", "request_id": "x" * (1024 * 1024 - 100)})  # just under the 1 MiB cap
    with ws(gateway) as client:
        for _ in range(30):
            client.send(payload)  # never reading a reply
        time.sleep(1)
        grown = rss_mb(gateway) - before
        # each was refused with a short error that does not echo the request id
        replies = [json.loads(client.recv(timeout=10)) for _ in range(30)]
    assert grown < RSS_GROWTH_BOUND_MB, f"gateway grew by {grown:.0f} MB"
    assert all(r["type"] == "error" and "request_id" not in r and len(json.dumps(r)) < 1000 for r in replies)


def test_a_client_sending_more_than_1_mib_is_disconnected(gateway: Stack) -> None:
    before = rss_mb(gateway)
    payload = json.dumps({"type": "ping", "request_id": "x" * (1024 * 1024)})
    # The gateway sends close 1009 and closes its socket with the client's data unread, so TCP may reset the
    # connection before the close frame is read: every attempt must be cut off, and the code, when it arrives, 1009.
    codes: list[int | None] = []
    while len(codes) < 5 and 1009 not in codes:
        with ws(gateway) as client:
            with contextlib.suppress(ConnectionClosed):
                for _ in range(30):
                    client.send(payload)
            with pytest.raises(ConnectionClosed) as closed:
                client.recv(timeout=10)
        codes.append(closed.value.rcvd.code if closed.value.rcvd is not None else None)
    assert 1009 in codes and set(codes) <= {1009, None}, codes
    assert rss_mb(gateway) - before < RSS_GROWTH_BOUND_MB
    with ws(gateway) as other:  # the gateway serves everyone else on
        assert reply_to(other, {"type": "ping", "request_id": 1}) == {"type": "pong", "request_id": 1}


def test_a_huge_request_id_is_refused_not_echoed(gateway: Stack) -> None:
    with ws(gateway) as client:
        answer = reply_to(client, {"type": "ping", "request_id": {"deep": ["y" * 20_000]}})
        assert answer["type"] == "error" and "request_id" not in answer
        assert len(json.dumps(answer)) < 1000
        answer = reply_to(client, {"type": "subscribe", "cameras": [f"c{i}" for i in range(2000)]})
        assert answer["type"] == "error" and len(json.dumps(answer)) < 2000


def test_clients_beyond_the_limit_are_refused(gateway: Stack) -> None:
    with contextlib.ExitStack() as opened:
        clients = [opened.enter_context(ws(gateway)) for _ in range(MAX_CLIENTS)]
        for client in clients:
            assert reply_to(client, {"type": "ping"})["type"] == "pong"
        with ws(gateway) as extra, pytest.raises(ConnectionClosed) as closed:
            extra.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def _push(stack: Stack, camera_id: str) -> gateway_pb2.PushFramesResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports['gateway_grpc']}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        frame = detector_pb2.Frame(camera_id=camera_id, frame_id=1, image=jpeg())
        responses = [r async for r in stub.PushFrames(iter([gateway_pb2.PushFramesRequest(frame=frame)]))]
        return responses[0]


def test_a_4_mib_camera_id_is_invalid_and_never_logged(gateway: Stack) -> None:
    huge = "c" + "\n" * 16 + "x" * (4 * 1024 * 1024)
    response = asyncio.run(_push(gateway, huge))
    assert "invalid camera" in response.error.message
    assert response.error.camera_id == "" and len(response.error.message) < 1000
    log = (gateway.log_dir / "gateway.log").read_text(errors="replace")
    assert max(len(line) for line in log.splitlines()) < MAX_LOG_LINE


def test_pushing_to_an_unknown_camera_does_not_register_it(gateway: Stack) -> None:
    response = asyncio.run(_push(gateway, "never-added"))
    assert "unknown camera 'never-added'" in response.error.message

    async def cameras() -> list[str]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.ports['gateway_grpc']}") as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            listed = await stub.ListCameras(gateway_pb2.ListCamerasRequest())
            return [c.camera.camera_id for c in listed.cameras]

    assert "never-added" not in asyncio.run(cameras())
