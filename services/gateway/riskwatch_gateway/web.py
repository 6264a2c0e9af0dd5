"""HTTP side of the gateway (Starlette on uvicorn, in the gateway's event loop): REST, the WebSocket
protocol of PROTOCOL.md, /healthz, /metrics and the dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from riskwatch.errors import CameraExists, RiskwatchError, UnknownCamera
from riskwatch.v1 import gateway_pb2_grpc
from riskwatch_gateway import messages, metrics
from riskwatch_gateway.access import Access
from riskwatch_gateway.cameras import CameraRegistry, InvalidCamera, parse_camera
from riskwatch_gateway.config import GatewayConfig
from riskwatch_gateway.fanout import ClientQueue, ClientTooSlow, Hub, Subscriber, Update, UpdateKind, reply
from riskwatch_gateway.grpcweb import grpc_web_app
from riskwatch_gateway.riskfeed import RiskFeed

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
CLIENT_MESSAGE_TYPES = ("subscribe", "unsubscribe", "add_camera", "remove_camera", "list_cameras", "ping")
# WebSocket close codes
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


class ProtocolError(Exception):
    """A client message that does not follow PROTOCOL.md; answered with an error, connection kept."""


class AccessMiddleware:
    """Origin allow-list for browsers and the token for /api/ (plain ASGI so WebSockets pass untouched)."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self._app = app
        self._access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            if not self._access.origin_ok(request.headers.get("origin"), request.headers.get("host")):
                await JSONResponse({"error": "origin not allowed"}, status_code=403)(scope, receive, send)
                return
            if scope["path"].startswith("/api/") and not self._access.token_ok(
                request.headers.get("authorization"), request.query_params.get("token")
            ):
                await JSONResponse(
                    {"error": "missing or wrong token (Authorization: Bearer <token>)"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )(scope, receive, send)
                return
        await self._app(scope, receive, send)


class WebApp:
    """Builds the Starlette app over the gateway's cameras, risk feed and fan-out."""

    def __init__(
        self,
        settings: GatewayConfig,
        cameras: CameraRegistry,
        feed: RiskFeed,
        hub: Hub,
        grpc_servicer: gateway_pb2_grpc.GatewayServiceServicer | None = None,
    ) -> None:
        self._settings = settings
        self._cameras = cameras
        self._feed = feed
        self._hub = hub
        self._access = Access(settings)
        self.serving = True
        self.sessions: set[WebSocketSession] = set()
        routes: list[Any] = [
            Route("/healthz", self.healthz),
            Route("/api/cameras", self.list_cameras, methods=["GET"]),
            Route("/api/cameras", self.add_camera, methods=["POST"]),
            Route("/api/cameras/{camera_id}", self.remove_camera, methods=["DELETE"]),
            Route("/api/cameras/{camera_id}/state", self.camera_state, methods=["GET"]),
            Route("/api/cameras/{camera_id}/alerts", self.camera_alerts, methods=["GET"]),
            WebSocketRoute("/ws", self.websocket),
            Mount("/metrics", app=make_asgi_app()),
        ]
        if STATIC_DIR.is_dir():
            routes.append(Mount("/", app=StaticFiles(directory=STATIC_DIR, html=True), name="dashboard"))
        app: ASGIApp = Starlette(routes=routes)
        if grpc_servicer is not None:
            token = settings.auth_token.get_secret_value() if settings.auth_token else None
            app = grpc_web_app(app, grpc_servicer, token)
        app = AccessMiddleware(app, self._access)
        if self._access.cross_origins:
            app = CORSMiddleware(
                app,
                allow_origins=self._access.cross_origins,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=[
                    "Authorization",
                    "Content-Type",
                    "X-Grpc-Web",
                    "X-User-Agent",
                    "Grpc-Timeout",
                    "Connect-Protocol-Version",
                ],
                expose_headers=["Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin"],
            )
        self.app = app

    # ---- REST ------------------------------------------------------------------------------------
    async def healthz(self, request: Request) -> JSONResponse:
        cameras = self._cameras.all()
        body = {
            "status": "ok" if self.serving else "stopping",
            "cameras": len(cameras),
            "online": sum(1 for c in cameras if c.info().status == 1),
            "websocket_clients": len(self.sessions),
        }
        return JSONResponse(body, status_code=200 if self.serving else 503)

    async def list_cameras(self, request: Request) -> JSONResponse:
        return JSONResponse({"cameras": [self.camera_json(c.camera_id) for c in self._cameras.all()]})

    def camera_json(self, camera_id: str) -> dict[str, Any]:
        camera = self._cameras.get(camera_id)
        return messages.camera_json(camera.info(), camera.status_extra())

    async def add_camera(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, 'the body must be a JSON object: {"id", "source", "fps"?, "loop"?}')
        if not isinstance(body, dict):
            return _error(400, 'the body must be a JSON object: {"id", "source", "fps"?, "loop"?}')
        try:
            camera = self._cameras.add(parse_camera(_camera_fields(body)))
        except InvalidCamera as exc:
            return _error(400, str(exc))
        except CameraExists as exc:
            return _error(409, str(exc))
        return JSONResponse({"camera": self.camera_json(camera.camera_id)}, status_code=201)

    async def remove_camera(self, request: Request) -> Response:
        try:
            await self._cameras.remove(request.path_params["camera_id"])
        except UnknownCamera as exc:
            return _error(404, str(exc))
        return Response(status_code=204)

    async def camera_state(self, request: Request) -> JSONResponse:
        camera_id = request.path_params["camera_id"]
        if camera_id not in self._cameras:
            return _error(404, f"unknown camera {camera_id!r}")
        return JSONResponse(messages.risk_state_json(await self._feed.current_state(camera_id)))

    async def camera_alerts(self, request: Request) -> JSONResponse:
        camera_id = request.path_params["camera_id"]
        if camera_id not in self._cameras:
            return _error(404, f"unknown camera {camera_id!r}")
        try:
            limit = max(1, min(int(request.query_params.get("limit", "50")), 1000))
        except ValueError:
            return _error(400, "limit must be an integer")
        alerts = await self._feed.recent_alerts(camera_id, limit)
        return JSONResponse({"alerts": [messages.alert_json(a, replay=True) for a in alerts]})

    # ---- WebSocket -------------------------------------------------------------------------------
    async def websocket(self, websocket: WebSocket) -> None:
        if not self._access.origin_ok(websocket.headers.get("origin"), websocket.headers.get("host")):
            await websocket.close(code=POLICY_VIOLATION, reason="origin not allowed")
            return
        if not self._access.token_ok(websocket.headers.get("authorization"), websocket.query_params.get("token")):
            await websocket.close(code=POLICY_VIOLATION, reason="missing or wrong token")
            return
        await websocket.accept()
        session = WebSocketSession(websocket, self)
        self.sessions.add(session)
        metrics.WS_CLIENTS.inc()
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            metrics.WS_CLIENTS.dec()

    async def close_sessions(self) -> None:
        await asyncio.gather(*(s.close(1001, "gateway stopping") for s in list(self.sessions)), return_exceptions=True)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _camera_fields(body: dict[str, Any]) -> dict[str, Any]:
    """Accept {"id"|"camera_id", "source", "fps"?, "loop"?}."""
    fields = dict(body)
    if "camera_id" in fields and "id" not in fields:
        fields["id"] = fields.pop("camera_id")
    return fields


class WebSocketSession:
    """One WebSocket client: a reader that handles commands and a writer that drains the client's queue."""

    def __init__(self, websocket: WebSocket, web: WebApp) -> None:
        self._ws = websocket
        self._web = web
        settings = web._settings
        self._settings = settings
        self._cameras = web._cameras
        self._feed = web._feed
        self._hub = web._hub
        self.subscriber = Subscriber(
            ClientQueue(settings.client_queue_size, settings.client_max_backlog, metrics.WS_DROPPED)
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
        self._hub.add(self.subscriber)
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
        """Queue a reply; `request_id` from the client's message is echoed when it sent one."""
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
                request_id = body.get("request_id")
                kind = body.get("type")
                handler = self._handlers.get(kind) if isinstance(kind, str) else None
                if handler is None:
                    raise ProtocolError(
                        f"unknown message type {kind!r}; expected one of: {', '.join(CLIENT_MESSAGE_TYPES)}"
                    )
                await handler(body)
            except ProtocolError as exc:
                self._send(_error_message(str(exc), request_id))
            except RiskwatchError as exc:
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
            self._send(
                {
                    **_error_message(f"unknown camera(s): {', '.join(unknown)}", body.get("request_id")),
                    "cameras": unknown,
                }
            )
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
        for snapshot in self._feed.health_snapshots():
            sub.queue.offer(Update(UpdateKind.HEALTH, str(snapshot.get("source", "")), payload=snapshot))

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
        camera = self._cameras.add(parse_camera(_camera_fields(fields)))
        self._send({"type": "camera_added", "camera": self._web.camera_json(camera.camera_id)}, body)

    async def _remove_camera(self, body: dict[str, Any]) -> None:
        camera_id = body.get("camera_id")
        if not isinstance(camera_id, str):
            raise ProtocolError('"camera_id" must be a string')
        await self._cameras.remove(camera_id)
        self._send({"type": "camera_removed", "camera_id": camera_id}, body)

    async def _list_cameras(self, body: dict[str, Any]) -> None:
        self._send({"type": "cameras", "cameras": [self._web.camera_json(c) for c in self._cameras.ids()]}, body)

    async def _ping(self, body: dict[str, Any]) -> None:
        self._send({"type": "pong"}, body)


def _error_message(message: str, request_id: Any = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"type": "error", "message": message}
    if request_id is not None:
        payload["request_id"] = request_id
    return payload
