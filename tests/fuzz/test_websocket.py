"""WebSocket client messages to the gateway: anything malformed gets an `error` reply and the connection stays up."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from riskwatch.cache import InMemoryCache
from riskwatch_gateway.app import GatewayApp
from riskwatch_gateway.config import CameraConfig
from riskwatch_gateway.testing import FakeDetector, make_settings
from tests.fuzz.support import fuzz_settings, json_values, tricky_text

REPLIES = {
    "subscribe": "subscribed",
    "unsubscribe": "unsubscribed",
    "add_camera": "camera_added",
    "remove_camera": "camera_removed",
    "list_cameras": "cameras",
    "ping": "pong",
}
FIELDS = ["cameras", "frames", "detections", "camera", "camera_id", "id", "source", "fps", "loop", "request_id"]
# Sources that never reach a device or the network: a fuzzed add_camera must not open real cameras.
SAFE_SOURCES = ["push", "/nonexistent/fuzz.avi", "", "device:x", "device:", "rtsp://"]


@pytest.fixture
async def gateway() -> AsyncIterator[GatewayApp]:
    gateway = GatewayApp(make_settings([CameraConfig(id="cam-01", source="push")]), FakeDetector(), InMemoryCache())
    await gateway.start()
    await asyncio.wait_for(gateway.feed.subscribed.wait(), 5)
    try:
        yield gateway
    finally:
        await gateway.stop()


@pytest.fixture
async def ws(gateway: GatewayApp) -> AsyncIterator[ClientConnection]:
    async with connect(f"ws://127.0.0.1:{gateway.http_port}/ws", max_size=None) as connection:
        yield connection


async def replies_to(ws: ClientConnection, message: str | bytes, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Send `message`, then a ping; the messages received before that ping's pong (which proves the link is up)."""
    probe = f"probe-{uuid.uuid4().hex}"
    await ws.send(message)
    await ws.send(json.dumps({"type": "ping", "request_id": probe}))
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            reply = json.loads(await ws.recv())
            if reply.get("type") == "pong" and reply.get("request_id") == probe:
                return seen
            if reply.get("type") not in ("heartbeat", "health", "camera_status", "risk_state", "alert", "detections"):
                seen.append(reply)


def assert_answered(replies: list[dict[str, Any]], body: Any) -> None:
    """A well-formed command gets its reply or an error; anything else gets an error with a message."""
    kind = body.get("type") if isinstance(body, dict) else None
    expected = {"error"}
    if isinstance(kind, str) and kind in REPLIES:
        expected.add(REPLIES[kind])
    assert replies, f"no reply to {str(body)[:200]}"
    assert replies[0]["type"] in expected, (str(body)[:200], replies)
    for reply in replies:
        if reply["type"] == "error":
            assert isinstance(reply["message"], str) and reply["message"]
    if kind not in REPLIES:
        assert [r["type"] for r in replies] == ["error"], replies


@st.composite
def commands(draw: st.DrawFn) -> dict[str, Any]:
    """A client message of a known (or almost known) type whose fields hold any JSON value."""
    kind = draw(
        st.sampled_from(list(REPLIES)) | st.sampled_from(["", "PING", "subscribe ", "type"]) | st.text(max_size=8)
    )
    body: dict[str, Any] = {"type": kind}
    for name in draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=5)):
        if name == "source":
            body[name] = draw(st.sampled_from(SAFE_SOURCES) | json_values(4).filter(lambda v: not isinstance(v, str)))
        elif name == "camera":
            camera = draw(st.dictionaries(st.sampled_from(["id", "source", "fps", "loop", "x"]), json_values(3)))
            if isinstance(camera.get("source"), str):
                camera["source"] = draw(st.sampled_from(SAFE_SOURCES))
            body[name] = camera if draw(st.booleans()) else draw(json_values(4))
        else:
            body[name] = draw(json_values(6) | st.sampled_from(["*", "cam-01", ["cam-01", "nope"], True]))
    return body


@fuzz_settings(examples=40, long=500)
@given(body=commands())
async def test_fuzzed_commands_get_their_reply_or_an_error(ws: ClientConnection, body: dict[str, Any]) -> None:
    assert_answered(await replies_to(ws, json.dumps(body)), body)


@fuzz_settings(examples=25, long=300)
@given(body=json_values())
async def test_any_json_value_gets_a_reply_or_an_error(ws: ClientConnection, body: Any) -> None:
    assert_answered(await replies_to(ws, json.dumps(body)), body)


@fuzz_settings(examples=25, long=300)
@given(text=tricky_text | st.text(max_size=300))
async def test_any_text_gets_a_reply_or_an_error(ws: ClientConnection, text: str) -> None:
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    assert_answered(await replies_to(ws, text), body)


@fuzz_settings(examples=15, long=150)
@given(data=st.binary(max_size=512))
async def test_binary_frames_get_an_error(ws: ClientConnection, data: bytes) -> None:
    replies = await replies_to(ws, data)
    assert [r["type"] for r in replies] == ["error"]
    assert "binary" in replies[0]["message"]


@fuzz_settings(examples=5, long=30)
@given(size=st.integers(100_000, 900_000), where=st.sampled_from(["type", "request_id", "cameras", "camera_id"]))
async def test_huge_strings_get_a_reply_or_an_error(ws: ClientConnection, size: int, where: str) -> None:
    body = {"type": "ping", where: "x" * size}
    assert_answered(await replies_to(ws, json.dumps(body), timeout=20), body)


@fuzz_settings(examples=10, long=100)
@given(depth=st.integers(1, 900), kind=st.sampled_from(["[", '{"a":']))
async def test_nested_json_gets_a_reply_or_an_error(ws: ClientConnection, depth: int, kind: str) -> None:
    closing = "]" if kind == "[" else "}"
    nested = kind * depth + "1" + closing * depth
    for text in (nested, f'{{"type": "ping", "request_id": {nested}}}'):
        assert_answered(await replies_to(ws, text), json.loads(text))


async def test_deeply_nested_json_gets_an_error_and_the_connection_stays_up(ws: ClientConnection) -> None:
    replies = await replies_to(ws, "[" * 100_000 + "]" * 100_000)
    assert [r["type"] for r in replies] == ["error"]


async def test_invalid_utf8_text_frames_close_only_that_connection(gateway: GatewayApp, ws: ClientConnection) -> None:
    """RFC 6455 8.1: a text frame that is not UTF-8 fails the connection (1007); the gateway serves on."""
    await ws.send(b'{"type": "ping", "x": "\xff\xfe"}', text=True)
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    async with connect(f"ws://127.0.0.1:{gateway.http_port}/ws") as again:
        assert (await replies_to(again, json.dumps({"type": "list_cameras"})))[0]["type"] == "cameras"


async def test_a_message_over_the_size_limit_closes_only_that_connection(
    gateway: GatewayApp, ws: ClientConnection
) -> None:
    """Messages over 1 MiB (uvicorn ws_max_size) close the connection with 1009; the gateway serves on."""
    await ws.send(json.dumps({"type": "ping", "request_id": "x" * (1024 * 1024 + 1)}))
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    async with connect(f"ws://127.0.0.1:{gateway.http_port}/ws") as again:
        assert (await replies_to(again, json.dumps({"type": "ping"}))) == [{"type": "pong"}]
