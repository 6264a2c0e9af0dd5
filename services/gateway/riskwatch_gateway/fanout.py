"""Fan-out of updates to clients: one bounded queue per client with a named drop policy, so a slow
client never slows the pipeline or any other client."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from prometheus_client import Counter

from riskwatch.errors import LimitReached
from riskwatch.v1 import events_pb2, gateway_pb2
from riskwatch_gateway import messages


class UpdateKind(StrEnum):
    DETECTIONS = "detections"
    RISK_STATE = "risk_state"
    ALERT = "alert"
    CAMERA_STATUS = "camera_status"
    HEALTH = "health"
    HEARTBEAT = "heartbeat"
    # A direct answer to one client (ack, error, camera list); never dropped.
    REPLY = "reply"


class Delivery(StrEnum):
    """How an update may be treated when a client falls behind."""

    DROPPABLE = "droppable"  # dropped oldest-first when the queue is full (detections)
    LATEST = "latest"  # a queued one with the same key is replaced by the newer one (status, health)
    ALWAYS = "always"  # never dropped (risk changes, alerts, replies)


DELIVERY = {
    UpdateKind.DETECTIONS: Delivery.DROPPABLE,
    UpdateKind.RISK_STATE: Delivery.ALWAYS,
    UpdateKind.ALERT: Delivery.ALWAYS,
    UpdateKind.CAMERA_STATUS: Delivery.LATEST,
    UpdateKind.HEALTH: Delivery.LATEST,
    UpdateKind.HEARTBEAT: Delivery.LATEST,
    UpdateKind.REPLY: Delivery.ALWAYS,
}


class DropPolicy(StrEnum):
    """What a full client queue gives up. Only one policy exists today; the name is what operators see."""

    # Drop the oldest queued detections first, then the incoming detection; never a risk change or an
    # alert. A client whose backlog of never-dropped updates exceeds its limit is disconnected instead
    # (it can reconnect and gets the current state again).
    DROP_OLDEST_DETECTIONS = "drop_oldest_detections"


@dataclass(eq=False)
class Update:
    """One thing to tell clients; its JSON is rendered once and shared by every WebSocket client."""

    kind: UpdateKind
    camera_id: str = ""
    detection: events_pb2.DetectionEvent | None = None
    # A downscaled JPEG of the frame, for clients that asked for frames.
    preview_jpeg: bytes | None = None
    risk_state: events_pb2.CameraRiskState | None = None
    alert: events_pb2.AssessmentResult | None = None
    camera: gateway_pb2.CameraInfo | None = None
    camera_extra: dict[str, Any] | None = None
    payload: dict[str, Any] | None = None
    # Alerts sent on subscribe from history, not as they happen.
    replay: bool = False
    _rendered: dict[bool, str] = field(default_factory=dict, repr=False)

    @property
    def delivery(self) -> Delivery:
        return DELIVERY[self.kind]

    @property
    def coalesce_key(self) -> str:
        return f"{self.kind}:{self.camera_id}"

    def to_json(self, with_frame: bool = False) -> str:
        with_frame = with_frame and self.preview_jpeg is not None
        text = self._rendered.get(with_frame)
        if text is None:
            text = json.dumps(self._to_dict(with_frame), separators=(",", ":"))
            self._rendered[with_frame] = text
        return text

    def _to_dict(self, with_frame: bool) -> dict[str, Any]:
        if self.kind is UpdateKind.DETECTIONS and self.detection is not None:
            return messages.detections_json(self.detection, self.preview_jpeg if with_frame else None)
        if self.kind is UpdateKind.RISK_STATE and self.risk_state is not None:
            return messages.risk_state_json(self.risk_state)
        if self.kind is UpdateKind.ALERT and self.alert is not None:
            return messages.alert_json(self.alert, replay=self.replay)
        if self.kind is UpdateKind.CAMERA_STATUS and self.camera is not None:
            return {"type": "camera_status", **messages.camera_json(self.camera, self.camera_extra)}
        return dict(self.payload or {"type": str(self.kind)})


def reply(payload: dict[str, Any]) -> Update:
    return Update(UpdateKind.REPLY, payload=payload)


class ClientTooSlow(Exception):
    """The client fell too far behind on updates that are never dropped; it is disconnected."""


class TooManyClients(LimitReached):
    """The limit on open clients of one kind is reached; the new one is refused."""


class ClientQueue:
    """Bounded queue for one client under DropPolicy.DROP_OLDEST_DETECTIONS. `offer` never blocks.

    Bounded twice: in messages (`capacity` before detections are dropped, `max_backlog` in all) and in bytes
    of their JSON (`max_bytes`), so neither many small nor a few large messages grow one client's memory.
    """

    policy = DropPolicy.DROP_OLDEST_DETECTIONS

    def __init__(self, capacity: int, max_backlog: int, dropped: Counter, max_bytes: int | None = None) -> None:
        self._items: deque[tuple[Update, int]] = deque()
        self._capacity = capacity
        self._max_backlog = max(max_backlog, capacity)
        self._max_bytes = max_bytes
        self._bytes = 0
        self._dropped = dropped
        self._ready = asyncio.Event()
        self.overflowed = False
        # Whether this client gets frame images (so what its messages weigh).
        self.with_frames = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def _size(self, update: Update) -> int:
        return len(update.to_json(with_frame=self.with_frames)) if self._max_bytes is not None else 0

    def _drop_oldest_detection(self) -> bool:
        for index, (queued, size) in enumerate(self._items):
            if queued.delivery is Delivery.DROPPABLE:
                del self._items[index]
                self._bytes -= size
                self._dropped.labels("queue_full").inc()
                return True
        return False

    def offer(self, update: Update) -> None:
        if self.overflowed:
            return
        delivery = update.delivery
        size = self._size(update)
        if delivery is Delivery.LATEST:
            key = update.coalesce_key
            for index, (queued, queued_size) in enumerate(self._items):
                if queued.kind is update.kind and queued.coalesce_key == key:
                    self._items[index] = (update, size)
                    self._bytes += size - queued_size
                    self._dropped.labels("superseded").inc()
                    return
        if len(self._items) >= self._capacity and not self._drop_oldest_detection() and delivery is not Delivery.ALWAYS:
            self._dropped.labels("queue_full").inc()
            return
        if self._max_bytes is not None:
            while self._bytes + size > self._max_bytes and self._drop_oldest_detection():
                pass
            if self._bytes + size > self._max_bytes and delivery is Delivery.DROPPABLE:
                self._dropped.labels("queue_full").inc()
                return
        self._items.append((update, size))
        self._bytes += size
        if len(self._items) > self._max_backlog or (self._max_bytes is not None and self._bytes > self._max_bytes):
            self._dropped.labels("client_too_slow").inc(len(self._items))
            self._items.clear()
            self._bytes = 0
            self.overflowed = True
        self._ready.set()

    async def get(self) -> Update:
        """The next update; raises ClientTooSlow once the backlog limit was exceeded."""
        while not self._items:
            if self.overflowed:
                raise ClientTooSlow
            self._ready.clear()
            await self._ready.wait()
        if self.overflowed:
            raise ClientTooSlow
        update, size = self._items.popleft()
        self._bytes -= size
        return update


class Subscriber:
    """One client's interest (which cameras, whether detections and frames) and its queue."""

    def __init__(
        self, queue: ClientQueue, *, detections: bool = True, frames: bool = False, kind: str = "websocket"
    ) -> None:
        self.queue = queue
        # What sort of client this is (a limit on open clients applies per kind).
        self.kind = kind
        # None = every camera, including cameras added later.
        self.cameras: set[str] | None = set()
        self.detections = detections
        self.frames = frames
        # Health snapshots and heartbeats go to clients that want them whatever their cameras.
        self.broadcasts = True
        self._risk_versions: dict[str, int] = {}

    @property
    def frames(self) -> bool:
        return self.queue.with_frames

    @frames.setter
    def frames(self, value: bool) -> None:
        self.queue.with_frames = value

    def watches(self, camera_id: str) -> bool:
        return self.cameras is None or camera_id in self.cameras

    def wants(self, update: Update) -> bool:
        if update.kind in (UpdateKind.HEARTBEAT, UpdateKind.HEALTH):
            return self.broadcasts
        if update.kind is UpdateKind.REPLY:
            return False
        if update.kind is UpdateKind.DETECTIONS and not self.detections:
            return False
        return self.watches(update.camera_id)

    def is_stale(self, update: Update) -> bool:
        """A risk state not newer than what this client already got (clients only ever see versions rise)."""
        if update.kind is not UpdateKind.RISK_STATE or update.risk_state is None:
            return False
        version = update.risk_state.version
        if version <= self._risk_versions.get(update.camera_id, -1):
            return True
        self._risk_versions[update.camera_id] = version
        return False

    def note_sent(self, state: events_pb2.CameraRiskState) -> None:
        """Record a state sent outside the queue (the snapshot on subscribe)."""
        if state.version > self._risk_versions.get(state.camera_id, -1):
            self._risk_versions[state.camera_id] = state.version

    def forget_camera(self, camera_id: str) -> None:
        self._risk_versions.pop(camera_id, None)

    async def next(self) -> Update:
        while True:
            update = await self.queue.get()
            if not self.is_stale(update):
                return update


class Hub:
    """Delivers each update to every interested subscriber's queue; never awaits a client."""

    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()
        # Read from capture threads: replaced, never mutated, so reading it there is safe.
        self._frame_cameras: frozenset[str] | None = frozenset()
        self._on_change: list[Callable[[], None]] = []

    @property
    def subscribers(self) -> Iterable[Subscriber]:
        return tuple(self._subscribers)

    def count(self, kind: str) -> int:
        return sum(1 for sub in self._subscribers if sub.kind == kind)

    def add(self, subscriber: Subscriber, limit: int | None = None) -> None:
        """Start delivering to `subscriber`; TooManyClients when `limit` clients of its kind are already here."""
        if limit is not None and self.count(subscriber.kind) >= limit:
            raise TooManyClients(f"too many {subscriber.kind} clients (at most {limit})")
        self._subscribers.add(subscriber)
        self.refresh()

    def discard(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        self.refresh()

    def refresh(self) -> None:
        """Call after changing a subscriber's cameras or options."""
        frame_cameras: set[str] = set()
        everything = False
        for sub in self._subscribers:
            if sub.frames and sub.detections:
                if sub.cameras is None:
                    everything = True
                else:
                    frame_cameras |= sub.cameras
        self._frame_cameras = None if everything else frozenset(frame_cameras)

    def wants_frames(self, camera_id: str) -> bool:
        """Whether any client wants this camera's frame images (safe to call from any thread)."""
        cameras = self._frame_cameras
        return cameras is None or camera_id in cameras

    def publish(self, update: Update) -> None:
        for sub in tuple(self._subscribers):
            if sub.wants(update):
                sub.queue.offer(update)
