"""The per-client queue's drop policy: oldest detections go first, risk changes and alerts never."""

from __future__ import annotations

import pytest
from prometheus_client import Counter

from riskwatch.v1 import events_pb2, gateway_pb2
from riskwatch_gateway.fanout import (
    ClientQueue,
    ClientTooSlow,
    Hub,
    Subscriber,
    TooManyClients,
    Update,
    UpdateKind,
    reply,
)

DROPPED = Counter("test_fanout_dropped_total", "drops in these tests", ["reason"])


def detections(camera: str, frame_id: int) -> Update:
    return Update(
        UpdateKind.DETECTIONS, camera, detection=events_pb2.DetectionEvent(camera_id=camera, frame_id=frame_id)
    )


def state(camera: str, version: int) -> Update:
    return Update(
        UpdateKind.RISK_STATE, camera, risk_state=events_pb2.CameraRiskState(camera_id=camera, version=version)
    )


def status(camera: str, fps: float) -> Update:
    return Update(
        UpdateKind.CAMERA_STATUS,
        camera,
        camera=gateway_pb2.CameraInfo(camera=gateway_pb2.Camera(camera_id=camera), measured_fps=fps),
    )


def drained(queue: ClientQueue) -> list[Update]:
    out = []
    while len(queue):
        out.append(queue._items.popleft()[0])  # (update, its size in bytes)
    return out


def test_full_queue_drops_the_oldest_detection_and_keeps_risk_changes() -> None:
    queue = ClientQueue(capacity=3, max_backlog=100, dropped=DROPPED)
    queue.offer(detections("a", 1))
    queue.offer(state("a", 1))
    queue.offer(detections("a", 2))
    queue.offer(detections("a", 3))  # full: frame 1 goes
    queue.offer(state("a", 2))  # full: frame 2 goes, the risk change stays
    kinds = [
        (u.kind, u.detection.frame_id if u.detection else u.risk_state.version)  # type: ignore[union-attr]
        for u in drained(queue)
    ]
    assert kinds == [(UpdateKind.RISK_STATE, 1), (UpdateKind.DETECTIONS, 3), (UpdateKind.RISK_STATE, 2)]


def test_queue_full_of_risk_changes_drops_incoming_detections_but_never_a_change() -> None:
    queue = ClientQueue(capacity=2, max_backlog=100, dropped=DROPPED)
    before = DROPPED.labels("queue_full")._value.get()
    for version in range(1, 5):
        queue.offer(state("a", version))
    queue.offer(detections("a", 9))
    items = drained(queue)
    assert [u.risk_state.version for u in items if u.risk_state] == [1, 2, 3, 4]
    assert all(u.kind is UpdateKind.RISK_STATE for u in items)
    assert DROPPED.labels("queue_full")._value.get() == before + 1


def test_newer_status_replaces_a_queued_one() -> None:
    queue = ClientQueue(capacity=10, max_backlog=100, dropped=DROPPED)
    queue.offer(status("a", 1.0))
    queue.offer(status("b", 1.0))
    queue.offer(status("a", 2.0))
    items = drained(queue)
    assert [(u.camera_id, u.camera.measured_fps) for u in items if u.camera] == [("a", 2.0), ("b", 1.0)]


async def test_backlog_beyond_the_limit_disconnects_the_client() -> None:
    queue = ClientQueue(capacity=2, max_backlog=5, dropped=DROPPED)
    for version in range(1, 7):
        queue.offer(state("a", version))
    assert queue.overflowed
    with pytest.raises(ClientTooSlow):
        await queue.get()


async def test_subscriber_never_sees_a_risk_version_go_backwards() -> None:
    sub = Subscriber(ClientQueue(capacity=10, max_backlog=100, dropped=DROPPED))
    sub.cameras = None
    hub = Hub()
    hub.add(sub)
    for version in (2, 1, 2, 3):
        hub.publish(state("a", version))
    got = [(await sub.next()).risk_state.version for _ in range(2)]  # type: ignore[union-attr]
    assert got == [2, 3]


def test_hub_routes_by_camera_and_detection_interest() -> None:
    hub = Hub()
    only_b = Subscriber(ClientQueue(10, 100, DROPPED))
    only_b.cameras = {"b"}
    no_detections = Subscriber(ClientQueue(10, 100, DROPPED), detections=False)
    no_detections.cameras = None
    for sub in (only_b, no_detections):
        hub.add(sub)
    hub.publish(detections("a", 1))
    hub.publish(detections("b", 1))
    hub.publish(state("a", 1))
    assert [u.camera_id for u in drained(only_b.queue)] == ["b"]
    assert [u.kind for u in drained(no_detections.queue)] == [UpdateKind.RISK_STATE]


def test_frames_are_made_only_for_cameras_someone_watches_with_frames() -> None:
    hub = Hub()
    assert not hub.wants_frames("a")
    sub = Subscriber(ClientQueue(10, 100, DROPPED), frames=True)
    sub.cameras = {"a"}
    hub.add(sub)
    assert hub.wants_frames("a")
    assert not hub.wants_frames("b")
    hub.discard(sub)
    assert not hub.wants_frames("a")


def big_reply(size: int) -> Update:
    return reply({"type": "pong", "padding": "x" * size})


async def test_backlog_in_bytes_drops_detections_first_then_disconnects() -> None:
    queue = ClientQueue(capacity=1000, max_backlog=1000, dropped=DROPPED, max_bytes=10_000)
    for frame_id in range(50):
        queue.offer(detections("a", frame_id))
    assert queue.queued_bytes <= 10_000 and not queue.overflowed
    queue.offer(big_reply(6_000))  # detections make room for what is never dropped
    assert not queue.overflowed and queue.queued_bytes <= 10_000
    assert [u.kind for u in drained(queue)][-1] is UpdateKind.REPLY
    queue.offer(big_reply(6_000))
    queue.offer(big_reply(6_000))  # two replies are over the bound: the client is too slow
    assert queue.overflowed and queue.queued_bytes == 0
    with pytest.raises(ClientTooSlow):
        await queue.get()


async def test_bytes_are_counted_as_the_client_gets_them() -> None:
    queue = ClientQueue(capacity=10, max_backlog=100, dropped=DROPPED, max_bytes=100_000)
    queue.offer(big_reply(1_000))
    assert queue.queued_bytes > 1_000
    await queue.get()
    assert queue.queued_bytes == 0


def test_hub_limits_clients_per_kind() -> None:
    hub = Hub()
    first = Subscriber(ClientQueue(10, 100, DROPPED))
    hub.add(first, limit=1)
    with pytest.raises(TooManyClients):
        hub.add(Subscriber(ClientQueue(10, 100, DROPPED)), limit=1)
    hub.add(Subscriber(ClientQueue(10, 100, DROPPED), kind="WatchCamera"), limit=1)  # another kind
    hub.discard(first)
    hub.add(Subscriber(ClientQueue(10, 100, DROPPED)), limit=1)
