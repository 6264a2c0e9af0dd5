"""HTTP side of the gateway (Starlette on uvicorn, in the gateway's event loop): the REST API (rest.py), the
WebSocket protocol (websocket.py), gRPC-web, /healthz, /metrics and the dashboard, behind the access checks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from riskwatch.v1 import gateway_pb2, gateway_pb2_grpc
from riskwatch_gateway import metrics
from riskwatch_gateway.access import Access
from riskwatch_gateway.cameras import CameraRegistry
from riskwatch_gateway.config import GatewayConfig
from riskwatch_gateway.fanout import Hub
from riskwatch_gateway.grpcweb import GrpcWebApp
from riskwatch_gateway.healthfeed import HealthFeed
from riskwatch_gateway.rest import EXCEPTION_HANDLERS, RestApi
from riskwatch_gateway.riskfeed import RiskFeed
from riskwatch_gateway.server import token_guard
from riskwatch_gateway.websocket import WebSocketSession

STATIC_DIR = Path(__file__).parent / "static"
# WebSocket close code
POLICY_VIOLATION = 1008


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
            app = GrpcWebApp(app, grpc_servicer, token_guard(self._access))
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
        if not self._access.origin_ok(websocket.headers.get("origin"), websocket.headers.get("host")):
            await websocket.close(code=POLICY_VIOLATION, reason="origin not allowed")
            return
        if not self._access.token_ok(websocket.headers.get("authorization"), websocket.query_params.get("token")):
            await websocket.close(code=POLICY_VIOLATION, reason="missing or wrong token")
            return
        await websocket.accept()
        session = WebSocketSession(
            websocket, self._settings, cameras=self._cameras, feed=self._feed, health=self._health, hub=self._hub
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
