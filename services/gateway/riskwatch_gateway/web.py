"""HTTP side of the gateway (Starlette on uvicorn, in the gateway's event loop): the REST API (rest.py), the
WebSocket protocol (websocket.py), gRPC-web, /healthz, /metrics and the dashboard, behind the access checks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from riskwatch.v1 import gateway_pb2, gateway_pb2_grpc
from riskwatch_gateway import metrics
from riskwatch_gateway.access import ROLE_SCOPE_KEY, UNAUTHENTICATED_MESSAGE, Access
from riskwatch_gateway.cameras import CameraRegistry
from riskwatch_gateway.config import GatewayConfig
from riskwatch_gateway.fanout import Hub
from riskwatch_gateway.grpcweb import GrpcWebApp
from riskwatch_gateway.healthfeed import HealthFeed
from riskwatch_gateway.rest import EXCEPTION_HANDLERS, RestApi
from riskwatch_gateway.riskfeed import RiskFeed
from riskwatch_gateway.server import access_guard
from riskwatch_gateway.websocket import WebSocketSession

STATIC_DIR = Path(__file__).parent / "static"
# Paths that need a token when tokens are configured; /healthz, the dashboard's static files and gRPC-web (which
# answers with gRPC statuses itself) do not.
PROTECTED_PREFIXES = ("/api/", "/ws", "/metrics")


class AccessMiddleware:
    """Origin allow-list for browsers, then the caller's role for /api/, /ws and /metrics (plain ASGI so
    WebSockets pass untouched; a refused WebSocket gets the same HTTP answer as REST). gRPC-web checks its own
    token and method, with gRPC statuses, before it reads the body."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self._app = app
        self._access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        if not self._access.origin_ok(connection.headers.get("origin"), connection.headers.get("host")):
            await JSONResponse({"error": "origin not allowed"}, status_code=403)(scope, receive, send)
            return
        role = self._access.role_of(connection.headers.get("authorization"), connection.query_params.get("token"))
        if role is None and scope["path"].startswith(PROTECTED_PREFIXES):
            await JSONResponse(
                {"error": UNAUTHENTICATED_MESSAGE}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )(scope, receive, send)
            return
        if role is not None:
            scope[ROLE_SCOPE_KEY] = role
        await self._app(scope, receive, send)


class WebApp:
    """Builds the Starlette app over the gateway's cameras, feeds and fan-out; tracks the WebSocket sessions."""

    def __init__(
        self,
        settings: GatewayConfig,
        cameras: CameraRegistry,
        *,
        feed: RiskFeed,
        health: HealthFeed,
        hub: Hub,
        grpc_servicer: gateway_pb2_grpc.GatewayServiceServicer | None = None,
    ) -> None:
        self._settings = settings
        self._cameras = cameras
        self._feed = feed
        self._health = health
        self._hub = hub
        self._access = Access(settings)
        self.serving = True
        self.sessions: set[WebSocketSession] = set()
        routes: list[Any] = [
            Route("/healthz", self.healthz),
            *RestApi(cameras, feed).routes(),
            WebSocketRoute("/ws", self.websocket),
            Mount("/metrics", app=make_asgi_app()),
        ]
        if STATIC_DIR.is_dir():
            routes.append(Mount("/", app=StaticFiles(directory=STATIC_DIR, html=True), name="dashboard"))
        app: ASGIApp = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
        if grpc_servicer is not None:
            app = GrpcWebApp(app, grpc_servicer, access_guard(self._access), settings.grpc_web_max_body_bytes)
        app = AccessMiddleware(app, self._access)
        # DNS rebinding: a page on evil.example whose name now resolves here sends `Host: evil.example`.
        app = TrustedHostMiddleware(app, allowed_hosts=list(self._access.allowed_hosts))
        if self._access.cross_origins:
            app = CORSMiddleware(
                app,
                allow_origins=self._access.cross_origins,
                allow_methods=["GET", "POST", "PUT", "DELETE"],
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

    async def healthz(self, request: Request) -> JSONResponse:
        cameras = self._cameras.all()
        body = {
            "status": "ok" if self.serving else "stopping",
            "cameras": len(cameras),
            "online": sum(1 for c in cameras if c.info().status == gateway_pb2.CAMERA_STATUS_ONLINE),
            "websocket_clients": len(self.sessions),
        }
        return JSONResponse(body, status_code=200 if self.serving else 503)

    async def websocket(self, websocket: WebSocket) -> None:
        await websocket.accept()
        session = WebSocketSession(
            websocket,
            self._settings,
            cameras=self._cameras,
            feed=self._feed,
            health=self._health,
            hub=self._hub,
            role=websocket.scope[ROLE_SCOPE_KEY],
        )
        self.sessions.add(session)
        metrics.WS_CLIENTS.inc()
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            metrics.WS_CLIENTS.dec()

    async def close_sessions(self) -> None:
        await asyncio.gather(*(s.close(1001, "gateway stopping") for s in list(self.sessions)), return_exceptions=True)
