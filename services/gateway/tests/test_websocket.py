"""The WebSocket protocol (PROTOCOL.md): detections, risk state, alerts, commands, errors, backpressure."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect

from riskwatch.cache import InMemoryCache
from riskwatch.events import timestamp
from riskwatch.v1 import detector_pb2, events_pb2
from riskwatch_gateway.app import GatewayApp
from riskwatch_gateway.config import CameraConfig
from riskwatch_gateway.fanout import Update, UpdateKind
from riskwatch_gateway.testing import (
    FakeDetector,
    GatewayFactory,
    Message,
    jpeg,
    make_settings,
    of_type,
    publish_alert,
    publish_state,
    recv_until,
    risk_state,
    send,
)


def ws_url(gateway: GatewayApp, query: str = "") -> str:
    return f"ws://127.0.0.1:{gateway.http_port}/ws{query}"


async def push(gateway: GatewayApp, camera_id: str, frame_id: int) -> events_pb2.DetectionEvent:
    frame = detector_pb2.Frame(camera_id=camera_id, frame_id=frame_id, capture_time=timestamp(), image=jpeg())
    return await gateway.cameras.push_target(camera_id).push(frame)


async def test_client_gets_detections_then_a_risk_state_published_by_the_aggregator(
    gateway: GatewayApp, cache: InMemoryCache
) -> None:
    async with connect(ws_url(gateway)) as ws:
        await send(ws, {"type": "subscribe", "cameras": ["cam-01"], "request_id": 7})
        ack = await recv_until(ws, of_type("subscribed"))
        assert ack == {"type": "subscribed", "cameras": ["cam-01"], "request_id": 7}

        await push(gateway, "cam-01", 42)
        message = await recv_until(ws, of_type("detections"))
        assert message["camera_id"] == "cam-01"
        assert message["frame_id"] == 42
        assert message["image_width"] == 320 and message["image_height"] == 240
        assert message["detections"][0] == {
            "track_id": 1,
            "class_name": "person",
            "category": "pedestrian",
            "confidence": 0.9,
            "box": [10.0, 20.0, 40.0, 100.0],
        }
        assert message["groups"][0]["group_id"] == "g1"
        assert message["groups"][0]["member_track_ids"] == [1, 2]
        assert message["groups"][0]["features"]["min_ped_vehicle_distance"] == pytest.approx(0.3)
        assert "frame_jpeg_b64" not in message  # frames only when asked for

        await publish_state(cache, risk_state("cam-01", 1))
        state = await recv_until(ws, of_type("risk_state"))
        assert state["camera_id"] == "cam-01" and state["version"] == 1 and state["max_level"] == "high"
        assert state["groups"][0]["risk_level"] == "high"
        assert state["groups"][0]["description"] == "a pedestrian steps in front of a car"


async def test_subscribe_sends_current_state_first_then_changes(gateway: GatewayApp, cache: InMemoryCache) -> None:
    await publish_state(cache, risk_state("cam-01", 3, level=events_pb2.RISK_LEVEL_MEDIUM))
    async with connect(ws_url(gateway)) as ws:
        await send(ws, {"type": "subscribe", "cameras": "*"})
        first = await recv_until(ws, of_type("risk_state"))
        assert (first["version"], first["max_level"]) == (3, "medium")
        await publish_state(cache, risk_state("cam-01", 2))  # stale: never shown
        await publish_state(cache, risk_state("cam-01", 4, level=events_pb2.RISK_LEVEL_HIGH))
        nxt = await recv_until(ws, of_type("risk_state"))
        assert (nxt["version"], nxt["max_level"]) == (4, "high")


async def test_frames_are_included_when_asked(gateway: GatewayApp) -> None:
    async with connect(ws_url(gateway)) as ws:
        await send(ws, {"type": "subscribe", "cameras": ["cam-01"], "frames": True})
        await recv_until(ws, of_type("subscribed"))
        await push(gateway, "cam-01", 1)
        message = await recv_until(ws, of_type("detections"))
        assert base64.b64decode(message["frame_jpeg_b64"])[:2] == b"\xff\xd8"  # a JPEG


async def test_alerts_follow_risk_changes_and_are_replayed_on_subscribe(
    gateway: GatewayApp, cache: InMemoryCache
) -> None:
    result = events_pb2.AssessmentResult(
        task_id="cam-01:5/g1",
        event_id="cam-01:5",
        camera_id="cam-01",
        frame_id=5,
        group_id="g1",
        verdict=events_pb2.Verdict(
            risk_level=events_pb2.RISK_LEVEL_HIGH, description="close call", risk_types=["near_miss"], confidence=0.7
        ),
        model="sim",
        key_id="key-a",
        attempts=1,
    )
    async with connect(ws_url(gateway)) as ws:
        await send(ws, {"type": "subscribe", "cameras": ["cam-01"]})
        await recv_until(ws, of_type("subscribed"))
        await publish_alert(cache, result)
        await publish_state(cache, risk_state("cam-01", 1))
        alert = await recv_until(ws, of_type("alert"))
        assert alert["task_id"] == "cam-01:5/g1"
        assert (alert["risk_level"], alert["description"], alert["key_id"]) == ("high", "close call", "key-a")
        assert alert["replay"] is False
        await publish_state(cache, risk_state("cam-01", 2))  # same alert stream: not sent again
        between: list[Message] = []
        await recv_until(ws, of_type("risk_state", version=2), seen=between)
        assert not [m for m in between if m.get("type") == "alert"], between
    async with connect(ws_url(gateway)) as late:
        await send(late, {"type": "subscribe", "cameras": ["cam-01"]})
        replayed = await recv_until(late, of_type("alert"))
        assert replayed["task_id"] == "cam-01:5/g1" and replayed["replay"] is True


async def test_malformed_messages_get_an_error_and_the_connection_stays_up(gateway: GatewayApp) -> None:
    async with connect(ws_url(gateway)) as ws:
        cases: list[str | bytes] = [
            "this is not json",
            "[1, 2, 3]",
            json.dumps({"no": "type"}),
            json.dumps({"type": "launch_rockets"}),
            json.dumps({"type": "subscribe", "cameras": 5}),
            json.dumps({"type": "subscribe", "cameras": ["cam-01"], "frames": "yes"}),
            json.dumps({"type": "remove_camera"}),
            json.dumps({"type": "add_camera", "camera": {"id": "bad id!", "source": "push"}}),
            b"\x00\x01binary",
        ]
        for case in cases:
            await ws.send(case)
            error = await recv_until(ws, of_type("error"))
            assert error["message"], case
        assert "not valid JSON" in (await _error_for(ws, "{oops"))["message"]
        assert "launch_rockets" in (await _error_for(ws, json.dumps({"type": "launch_rockets"})))["message"]
        await send(ws, {"type": "ping", "request_id": "p1"})
        assert await recv_until(ws, of_type("pong")) == {"type": "pong", "request_id": "p1"}


async def _error_for(ws: ClientConnection, text: str) -> dict[str, Any]:
    await ws.send(text)
    return await recv_until(ws, of_type("error"))


async def test_unknown_camera_is_an_error_and_known_ones_still_subscribe(gateway: GatewayApp) -> None:
    async with connect(ws_url(gateway)) as ws:
        await send(ws, {"type": "subscribe", "cameras": ["nope", "cam-01"], "request_id": 1})
        error = await recv_until(ws, of_type("error"))
        assert error["cameras"] == ["nope"] and "nope" in error["message"] and error["request_id"] == 1
        assert (await recv_until(ws, of_type("subscribed")))["cameras"] == ["cam-01"]
        await send(ws, {"type": "remove_camera", "camera_id": "nope"})
        assert "unknown camera" in (await recv_until(ws, of_type("error")))["message"]
        await push(gateway, "cam-01", 1)
        await recv_until(ws, of_type("detections"))


async def test_cameras_are_added_listed_and_removed_over_websocket(gateway: GatewayApp) -> None:
    async with connect(ws_url(gateway)) as ws:
        await send(ws, {"type": "add_camera", "camera": {"id": "cam-02", "source": "push", "fps": 4}})
        added = await recv_until(ws, of_type("camera_added"))
        assert added["camera"]["camera_id"] == "cam-02" and added["camera"]["fps"] == 4
        await send(ws, {"type": "add_camera", "camera": {"id": "cam-02", "source": "push"}})
        assert "already exists" in (await recv_until(ws, of_type("error")))["message"]
        await send(ws, {"type": "list_cameras"})
        listed = await recv_until(ws, of_type("cameras"))
        assert sorted(c["camera_id"] for c in listed["cameras"]) == ["cam-01", "cam-02"]
        await send(ws, {"type": "subscribe", "cameras": ["cam-02"]})
        await recv_until(ws, of_type("subscribed"))
        await send(ws, {"type": "remove_camera", "camera_id": "cam-02"})
        removed = await recv_until(ws, of_type("camera_status", camera_id="cam-02", removed=True))
        assert removed["status"] == "offline"
        await recv_until(ws, of_type("camera_removed", camera_id="cam-02"))
        assert gateway.cameras.ids() == ["cam-01"]


async def test_unsubscribe_stops_detections(gateway: GatewayApp) -> None:
    async with connect(ws_url(gateway)) as ws:
        await send(ws, {"type": "subscribe", "cameras": "*"})
        await recv_until(ws, of_type("subscribed"))
        await send(ws, {"type": "unsubscribe", "cameras": ["cam-01"]})
        assert (await recv_until(ws, of_type("unsubscribed")))["cameras"] == []
        await push(gateway, "cam-01", 1)
        await send(ws, {"type": "ping"})
        seen: list[dict[str, object]] = []
        await recv_until(ws, of_type("pong"), seen=seen)
        assert not [m for m in seen if m["type"] == "detections"]


async def test_heartbeats_arrive(gateway: GatewayApp) -> None:
    async with connect(ws_url(gateway)) as ws:
        beat = await recv_until(ws, of_type("heartbeat"), timeout=3)
        assert beat["cameras"] == 1


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("riskwatch_ws_dropped_total", {"reason": reason}) or 0.0


async def test_a_stalled_client_neither_delays_others_nor_loses_risk_changes(
    start_gateway: GatewayFactory, cache: InMemoryCache
) -> None:
    gateway: GatewayApp = await start_gateway(
        make_settings([CameraConfig(id="cam-01", source="push")], client_queue_size=8)
    )
    before = _dropped("queue_full")
    # The stalled client asks for frames (big messages), reads into a tiny socket buffer and never reads.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", gateway.http_port))
    async with (
        connect(ws_url(gateway), sock=raw, max_queue=1, close_timeout=0.5) as stalled,
        connect(ws_url(gateway)) as fast,
    ):
        await send(stalled, {"type": "subscribe", "cameras": "*", "frames": True})
        await send(fast, {"type": "subscribe", "cameras": "*"})
        await recv_until(fast, of_type("subscribed"))
        await recv_until(stalled, of_type("subscribed"))
        big_frame = os.urandom(64 * 1024)  # ~87 KB of base64 per message (incompressible)
        total = 150
        publish_time = 0.0
        received = 0

        async def read_fast() -> None:
            nonlocal received
            while received < total:
                if json.loads(await fast.recv())["type"] == "detections":
                    received += 1

        reader = asyncio.create_task(read_fast())
        for i in range(total):
            event = events_pb2.DetectionEvent(camera_id="cam-01", frame_id=i + 1, image_width=1, image_height=1)
            started = time.perf_counter()
            gateway.hub.publish(Update(UpdateKind.DETECTIONS, "cam-01", detection=event, preview_jpeg=big_frame))
            publish_time += time.perf_counter() - started
            if i == total // 2:
                await publish_state(cache, risk_state("cam-01", 1))
            await asyncio.sleep(0.003)
        await asyncio.wait_for(reader, 10)  # the fast client got every detection
        assert publish_time < 0.5  # the pipeline never waited for a client
        assert _dropped("queue_full") > before  # the stalled client's oldest detections were dropped

        # Once the stalled client reads again, the risk change is still there: it was never dropped.
        seen: list[dict[str, object]] = []
        state = await recv_until(stalled, of_type("risk_state"), timeout=10, seen=seen)
        assert state["version"] == 1
        detections = [m for m in seen if m["type"] == "detections"]
        assert len(detections) < total // 2


async def test_push_camera_status_and_measured_fps(gateway: GatewayApp) -> None:
    async with connect(ws_url(gateway)) as ws:
        await send(ws, {"type": "subscribe", "cameras": ["cam-01"], "detections": False})
        for i in range(5):
            await push(gateway, "cam-01", i + 1)
            await asyncio.sleep(0.1)
        status = await recv_until(ws, lambda m: m["type"] == "camera_status" and m["measured_fps"] > 0)
        assert status["status"] == "online" and 5 < status["measured_fps"] < 15


async def test_slow_detector_keeps_only_the_newest_frame(
    start_gateway: GatewayFactory, detector: FakeDetector, video: object
) -> None:
    detector.delay_s = 0.5
    await start_gateway(make_settings([CameraConfig(id="cam-slow", source=str(video), fps=10)]))
    await asyncio.sleep(2.0)
    captured = (
        REGISTRY.get_sample_value("riskwatch_gateway_frames_total", {"camera": "cam-slow", "outcome": "captured"}) or 0
    )
    busy = (
        REGISTRY.get_sample_value("riskwatch_gateway_frames_total", {"camera": "cam-slow", "outcome": "dropped_busy"})
        or 0
    )
    assert len(detector.frames) <= 5  # ~2 s at 0.5 s per frame
    assert captured >= 12 and busy >= captured - len(detector.frames) - 2
    # What reaches the detector is recent, not a backlog.
    assert time.time() - detector.frames[-1].capture_time.seconds < 2


async def test_request_id_is_echoed_only_when_short(gateway: GatewayApp) -> None:
    async with connect(ws_url(gateway)) as ws:
        await send(ws, {"type": "ping", "request_id": "r-1"})
        assert await recv_until(ws, of_type("pong")) == {"type": "pong", "request_id": "r-1"}
        for bad in ("x" * 65, {"nested": [1, 2]}, [1], 2**60, True):
            await send(ws, {"type": "ping", "request_id": bad})
            error = await recv_until(ws, of_type("error"))
            assert "request_id" in error["message"] and "request_id" not in error
        await send(ws, {"type": "ping", "request_id": 12})
        assert await recv_until(ws, of_type("pong")) == {"type": "pong", "request_id": 12}


async def test_unknown_cameras_are_named_back_only_when_valid_and_few(gateway: GatewayApp) -> None:
    async with connect(ws_url(gateway)) as ws:
        unknown = [f"nope-{i}" for i in range(30)] + ["bad id!", "y" * 500]
        await send(ws, {"type": "subscribe", "cameras": ["cam-01", *unknown]})
        error = await recv_until(ws, of_type("error"))
        assert error["cameras"] == [f"nope-{i}" for i in range(10)]
        assert "and 22 more" in error["message"] and "bad id!" not in error["message"] and "yyy" not in error["message"]
        assert (await recv_until(ws, of_type("subscribed")))["cameras"] == ["cam-01"]


async def test_a_message_over_1_mib_closes_the_connection_with_1009(gateway: GatewayApp) -> None:
    async with connect(ws_url(gateway), max_size=None) as ws:
        await ws.send(json.dumps({"type": "ping", "padding": "x" * (1024 * 1024)}))
        await ws.wait_closed()
        assert ws.close_code == 1009


async def test_clients_beyond_max_clients_are_closed_with_1013(start_gateway: Any) -> None:
    gateway: GatewayApp = await start_gateway(make_settings(max_clients=2))
    async with connect(ws_url(gateway)) as first, connect(ws_url(gateway)) as second:
        for ws in (first, second):
            await send(ws, {"type": "ping"})
            await recv_until(ws, of_type("pong"))
        async with connect(ws_url(gateway)) as third:
            await third.wait_closed()
            assert third.close_code == 1013
    async with connect(ws_url(gateway)) as again:  # the slots are free again
        await send(again, {"type": "ping"})
        await recv_until(again, of_type("pong"))


async def test_a_removed_camera_loses_its_metric_labels(gateway: GatewayApp) -> None:
    labels = {"camera": "cam-gone", "outcome": "detected"}
    async with connect(ws_url(gateway)) as ws:
        await send(ws, {"type": "add_camera", "camera": {"id": "cam-gone", "source": "push"}})
        await recv_until(ws, of_type("camera_added"))
        await push(gateway, "cam-gone", 1)
        assert REGISTRY.get_sample_value("riskwatch_gateway_frames_total", labels) == 1
        await send(ws, {"type": "remove_camera", "camera_id": "cam-gone"})
        await recv_until(ws, of_type("camera_removed"))
    assert REGISTRY.get_sample_value("riskwatch_gateway_frames_total", labels) is None
    assert REGISTRY.get_sample_value("riskwatch_camera_online", {"camera": "cam-gone"}) is None
