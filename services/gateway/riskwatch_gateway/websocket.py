"""The WebSocket protocol of PROTOCOL.md: one session per client, a reader that handles its commands and a writer
that drains its queue of updates from the fan-out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from riskwatch.domain.cameras import is_valid_camera_id
from riskwatch.errors import RiskwatchError
from riskwatch_gateway import metrics
from riskwatch_gateway.access import WS_COMMAND_ROLES, require
from riskwatch_gateway.cameras import CameraRegistry, camera_fields, parse_camera
from riskwatch_gateway.config import GatewayConfig, Role
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
from riskwatch_gateway.healthfeed import HealthFeed
from riskwatch_gateway.riskfeed import RiskFeed

log = logging.getLogger(__name__)
CLIENT_MESSAGE_TYPES = ("subscribe", "unsubscribe", "add_camera", "remove_camera", "list_cameras", "ping")
# WebSocket close codes (PROTOCOL.md, "Limits and close codes")
TRY_AGAIN_LATER = 1013
# What a request_id may be, so that echoing it costs nothing: a short string or a JSON-safe integer/number.
MAX_REQUEST_ID_CHARS = 64
MAX_REQUEST_ID_NUMBER = 2**53
# Unknown camera ids named back in an error, at most (only valid ids; never a client's raw string).
MAX_ECHOED_CAMERAS = 10


class ProtocolError(Exception):
    """A client message that does not follow PROTOCOL.md; answered with an error, connection kept."""


class WebSocketSession:
    """One WebSocket client: a reader that handles commands and a writer that drains the client's queue."""

    def __init__(
        self,
        websocket: WebSocket,
        settings: GatewayConfig,
        *,
        cameras: CameraRegistry,
        feed: RiskFeed,
        health: HealthFeed,
        hub: Hub,
        role: Role,
    ) -> None:
        self._ws = websocket
        self._role = role
        self._settings = settings
        self._cameras = cameras
        self._feed = feed
        self._health = health
        self._hub = hub
        self.subscriber = Subscriber(
            ClientQueue(
                settings.client_queue_size,
                settings.client_max_backlog,
                metrics.WS_DROPPED,
                settings.client_max_backlog_bytes,
            )
        )
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "add_camera": self._add_camera,
            "remove_camera": self._remove_camera,
            "list_cameras": self._list_cameras,
            "ping": self._ping,
        }

    async def run(self) -> None:
        try:
            self._hub.add(self.subscriber, limit=self._settings.max_clients)
        except TooManyClients as exc:
            log.warning("WebSocket client %s refused: %s", self._ws.client, exc)
            await self.close(TRY_AGAIN_LATER, "too many clients; try again later")
            return
        tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._write())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._hub.discard(self.subscriber)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await self._ws.close(code=code, reason=reason)

    def _send(self, payload: dict[str, Any], body: dict[str, Any] | None = None) -> None:
        """Queue a reply; `request_id` from the client's message is echoed when it sent one (already checked)."""
        if body is not None and body.get("request_id") is not None:
            payload = {**payload, "request_id": body["request_id"]}
        self.subscriber.queue.offer(reply(payload))

    async def _write(self) -> None:
        try:
            while True:
                update = await self.subscriber.next()
                await self._ws.send_text(update.to_json(with_frame=self.subscriber.frames))
        except ClientTooSlow:
            log.warning("WebSocket client %s too slow: disconnected", self._ws.client)
            await self.close(TRY_AGAIN_LATER, "client too slow; reconnect and subscribe again")
        except (WebSocketDisconnect, RuntimeError, OSError):
            return

    async def _read(self) -> None:
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            request_id: Any = None
            try:
                if text is None:
                    raise ProtocolError("messages must be JSON text frames, not binary")
                try:
                    body = json.loads(text)
                except (ValueError, RecursionError) as exc:
                    raise ProtocolError(f"malformed message: not valid JSON ({exc})") from exc
                if not isinstance(body, dict):
                    raise ProtocolError('malformed message: expected a JSON object with a "type"')
                request_id = _check_request_id(body.get("request_id"))
                kind = body.get("type")
                handler = self._handlers.get(kind) if isinstance(kind, str) else None
                if handler is None:
                    shown = repr(kind) if isinstance(kind, str) and len(kind) <= 32 else "(not shown)"
                    raise ProtocolError(
                        f"unknown message type {shown}; expected one of: {', '.join(CLIENT_MESSAGE_TYPES)}"
                    )
                require(self._role, WS_COMMAND_ROLES.get(str(kind), Role.VIEWER))
                await handler(body)
            except (ProtocolError, RiskwatchError) as exc:
                self._send(_error_message(str(exc), request_id))

    # ---- commands --------------------------------------------------------------------------------
    def _camera_list(self, body: dict[str, Any]) -> list[str] | None:
        """The `cameras` field: "*" (None) or a list of ids."""
        cameras = body.get("cameras", "*")
        if cameras == "*":
            return None
        if isinstance(cameras, str):
            cameras = [cameras]
        if not isinstance(cameras, list) or not all(isinstance(c, str) for c in cameras):
            raise ProtocolError('"cameras" must be "*" or a list of camera ids')
        return list(dict.fromkeys(cameras))

    def _flag(self, body: dict[str, Any], name: str) -> bool | None:
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            raise ProtocolError(f'"{name}" must be true or false')
        return value

    async def _subscribe(self, body: dict[str, Any]) -> None:
        requested = self._camera_list(body)
        frames = self._flag(body, "frames")
        detections = self._flag(body, "detections")
        sub = self.subscriber
        unknown: list[str] = []
        if requested is None:
            added = [c for c in self._cameras.ids() if sub.cameras is None or c not in sub.cameras]
            sub.cameras = None
        else:
            known = [c for c in requested if c in self._cameras]
            unknown = [c for c in requested if c not in self._cameras]
            added = known
            if sub.cameras is not None:
                sub.cameras.update(known)
        if frames is not None:
            sub.frames = frames
        if detections is not None:
            sub.detections = detections
        self._hub.refresh()
        if unknown:
            # Named back only when valid ids, and only the first few: the client's strings are not echoed raw.
            shown = [c for c in unknown if is_valid_camera_id(c)][:MAX_ECHOED_CAMERAS]
            more = len(unknown) - len(shown)
            text = ", ".join(shown) + (f" and {more} more" if shown and more else f"{more} not shown" if more else "")
            self._send({**_error_message(f"unknown camera(s): {text}", body.get("request_id")), "cameras": shown})
        self._send({"type": "subscribed", "cameras": "*" if sub.cameras is None else sorted(sub.cameras)}, body)
        # The current state of each newly subscribed camera first, then its changes.
        for camera_id in added:
            sub.forget_camera(camera_id)
            camera = self._cameras.get(camera_id)
            sub.queue.offer(
                Update(UpdateKind.CAMERA_STATUS, camera_id, camera=camera.info(), camera_extra=camera.status_extra())
            )
            state = await self._feed.current_state(camera_id)
            if state.version > 0:
                sub.queue.offer(Update(UpdateKind.RISK_STATE, camera_id, risk_state=state))
            for alert in await self._feed.recent_alerts(camera_id, self._settings.alert_replay):
                sub.queue.offer(Update(UpdateKind.ALERT, camera_id, alert=alert, replay=True))
        for update in self._health.updates():
            sub.queue.offer(update)

    async def _unsubscribe(self, body: dict[str, Any]) -> None:
        requested = self._camera_list(body)
        sub = self.subscriber
        if requested is None:
            sub.cameras = set()
        else:
            current = set(self._cameras.ids()) if sub.cameras is None else sub.cameras
            sub.cameras = current - set(requested)
            for camera_id in requested:
                sub.forget_camera(camera_id)
        self._hub.refresh()
        self._send({"type": "unsubscribed", "cameras": sorted(sub.cameras)}, body)

    async def _add_camera(self, body: dict[str, Any]) -> None:
        fields = body.get("camera")
        if fields is None:
            fields = {k: v for k, v in body.items() if k not in ("type", "request_id")}
            if "camera_id" in fields:
                fields["id"] = fields.pop("camera_id")
        if not isinstance(fields, dict):
            raise ProtocolError('"camera" must be an object: {"id", "source", "fps"?, "loop"?}')
        allow_offline = fields.get("allow_offline") is True
        camera = await self._cameras.add_checked(parse_camera(camera_fields(fields)), allow_offline=allow_offline)
        self._send({"type": "camera_added", "camera": camera.json()}, body)

    async def _remove_camera(self, body: dict[str, Any]) -> None:
        camera_id = body.get("camera_id")
        if not isinstance(camera_id, str):
            raise ProtocolError('"camera_id" must be a string')
        await self._cameras.remove(camera_id)
        self._send({"type": "camera_removed", "camera_id": camera_id}, body)

    async def _list_cameras(self, body: dict[str, Any]) -> None:
        self._send({"type": "cameras", "cameras": [camera.json() for camera in self._cameras.all()]}, body)

    async def _ping(self, body: dict[str, Any]) -> None:
        self._send({"type": "pong"}, body)


def _check_request_id(request_id: Any) -> str | int | float | None:
    """The client's request_id if it is cheap to echo; ProtocolError (not echoed) otherwise."""
    if request_id is None:
        return None
    if isinstance(request_id, str) and len(request_id) <= MAX_REQUEST_ID_CHARS:
        return request_id
    number: int | float | None = request_id if isinstance(request_id, int | float) else None
    if number is not None and not isinstance(number, bool) and abs(number) <= MAX_REQUEST_ID_NUMBER:
        return number
    raise ProtocolError(
        f'"request_id" must be a string of at most {MAX_REQUEST_ID_CHARS} characters or a number up to 2^53'
    )


def _error_message(message: str, request_id: Any = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"type": "error", "message": message}
    if request_id is not None:
        payload["request_id"] = request_id
    return payload
