"""GatewayApp: one object that owns the cameras, the risk and health feeds, the fan-out and both servers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Generator
from typing import Self

import grpc
import uvicorn

from riskwatch.cache import Cache
from riskwatch.errors import ConfigError, PortInUse
from riskwatch.lifecycle import run_until_signalled
from riskwatch.rpc import set_serving
from riskwatch.runtime import make_cache
from riskwatch_gateway.access import Access, is_loopback
from riskwatch_gateway.calibrations import CalibrationStore
from riskwatch_gateway.cameras import CameraRegistry
from riskwatch_gateway.config import GatewayConfig, GatewaySettings
from riskwatch_gateway.detect import Detect, DetectorClient
from riskwatch_gateway.fanout import Hub, Update, UpdateKind
from riskwatch_gateway.grpc_api import GatewayServicer
from riskwatch_gateway.healthfeed import HealthFeed
from riskwatch_gateway.riskfeed import RiskFeed
from riskwatch_gateway.server import GatewayDeps, create_server
from riskwatch_gateway.web import WebApp

log = logging.getLogger(__name__)

GRPC_PORT_SETTING = "set gateway.grpc_port in gateway.yaml (ALGO_GATEWAY__GRPC_PORT) to move it"
HTTP_PORT_SETTING = "set gateway.http_port in gateway.yaml (ALGO_GATEWAY__HTTP_PORT) to move it"


class _UvicornInLoop(uvicorn.Server):
    """uvicorn sharing the gateway's event loop; signals stay with the process's lifecycle helper."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class GatewayApp:
    """The gateway over any Detect and Cache; `from_settings` builds the streaming one (detector over gRPC,
    Redis), the embedded system passes its in-process detector and in-memory cache."""

    def __init__(self, settings: GatewaySettings, detector: Detect, cache: Cache) -> None:
        # Before anything is built or started: refuse to be reachable beyond this machine without tokens.
        check_exposure(settings.gateway)
        self.settings = settings
        self.detector = detector
        self.cache = cache
        config = settings.gateway
        self.hub = Hub()
        self.cameras = CameraRegistry(config, detector, self.hub, CalibrationStore(config.state_dir))
        self.feed = RiskFeed(cache, self.hub, self.cameras.ids)
        self.health = HealthFeed(cache, self.hub)
        self._servicer = GatewayServicer(config, self.cameras, self.feed, self.hub)
        self.web = WebApp(
            config, self.cameras, feed=self.feed, health=self.health, hub=self.hub, grpc_servicer=self._servicer
        )
        self._grpc: grpc.aio.Server | None = None
        # Set by from_settings: the collaborators this app built and must close, and its start-up banner.
        self._owned_client: DetectorClient | None = None
        self._banner: str | None = None
        self._http: _UvicornInLoop | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._tickers: list[asyncio.Task[None]] = []
        self._grpc_port = 0
        self._http_port = 0

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Self:
        """The streaming gateway: the detector service over gRPC and the risk state in Redis."""
        detector = DetectorClient(settings.gateway.detector_address, settings.gateway.detector_timeout_s)
        app = cls(settings, detector, make_cache(settings))
        app._owned_client = detector
        app._banner = f"riskwatch gateway (streaming; detector at {detector.address}):"
        return app

    def where_to_watch(self) -> str:
        """The addresses a newcomer needs, and who may use them, as printed at start-up."""
        host = _display_host(self.settings.gateway.grpc_host)
        return "\n".join(
            [
                f"  dashboard:  {self.http_url}/",
                f'  WebSocket:  {self.websocket_url}   (send {{"type":"subscribe","cameras":"*"}})',
                f"  REST:       {self.http_url}/api/cameras",
                f"  gRPC:       {host}:{self.grpc_port}   (grpcurl -plaintext {host}:{self.grpc_port} list)",
                f"  access:     {access_summary(self.settings.gateway)}",
            ]
        )

    @property
    def grpc_port(self) -> int:
        return self._grpc_port

    @property
    def http_port(self) -> int:
        return self._http_port

    @property
    def http_url(self) -> str:
        return f"http://{_display_host(self.settings.gateway.http_host)}:{self._http_port}"

    @property
    def websocket_url(self) -> str:
        return f"ws://{_display_host(self.settings.gateway.http_host)}:{self._http_port}/ws"

    async def start(self) -> None:
        config = self.settings.gateway
        # 1. cameras from config/cameras.yaml
        for camera in self.settings.camera_list:
            self.cameras.add(camera)
        # 2. risk-state, alert and health feeds from the cache, plus heartbeats and status refreshes
        self.feed.start()
        self.health.start()
        self._tickers = [
            asyncio.create_task(self._heartbeats(config.heartbeat_interval_s), name="heartbeats"),
            asyncio.create_task(self._status_refresh(config.status_interval_s), name="camera-status"),
        ]
        # 3. gRPC
        try:
            self._grpc, self._grpc_port = create_server(config, GatewayDeps(self._servicer))
        except OSError as exc:
            raise PortInUse("gateway gRPC", config.grpc_host, config.grpc_port, GRPC_PORT_SETTING) from exc
        await self._grpc.start()
        await set_serving(self._grpc, True)
        # 4. HTTP and WebSocket
        sock = socket.socket(socket.AF_INET6 if ":" in config.http_host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((config.http_host, config.http_port))
        except OSError as exc:
            sock.close()
            raise PortInUse("gateway HTTP", config.http_host, config.http_port, HTTP_PORT_SETTING) from exc
        self._http_port = sock.getsockname()[1]
        self._http = _UvicornInLoop(
            uvicorn.Config(
                self.web.app,
                log_level="warning",
                lifespan="off",
                access_log=False,
                ws_max_size=1024 * 1024,
                ws_ping_interval=20.0,
                ws_ping_timeout=20.0,
                timeout_graceful_shutdown=max(1, round(self.settings.shutdown_grace_s)),
            )
        )
        self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]), name="http")
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        log.info("gateway ready: gRPC on %s:%d, HTTP/WebSocket on %s", config.grpc_host, self._grpc_port, self.http_url)
        if self._banner is not None:
            print(f"{self._banner}\n{self.where_to_watch()}", flush=True)

    async def stop(self) -> None:
        # Reverse order: say we are going, stop HTTP/WebSocket, then gRPC, the feed, the cameras.
        self.web.serving = False
        if self._grpc is not None:
            await set_serving(self._grpc, False)
        if self._http is not None and self._http_task is not None:
            await self.web.close_sessions()
            self._http.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._http_task
        if self._grpc is not None:
            await self._grpc.stop(grace=self.settings.shutdown_grace_s)
        for task in self._tickers:
            task.cancel()
        await asyncio.gather(*self._tickers, return_exceptions=True)
        await self.health.stop()
        await self.feed.stop()
        await self.cameras.stop_all()
        if self._owned_client is not None:
            await self._owned_client.close()
            await self.cache.close()
        log.info("gateway stopped")

    async def _heartbeats(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.hub.publish(
                Update(
                    UpdateKind.HEARTBEAT,
                    payload={
                        "type": "heartbeat",
                        "time": round(time.time(), 3),
                        "cameras": len(self.cameras.ids()),
                    },
                )
            )

    async def _status_refresh(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for camera in self.cameras.all():
                camera.check_idle()
                camera.publish_status()


async def run(settings: GatewaySettings) -> None:
    """`python -m riskwatch_gateway`: the streaming gateway until SIGTERM/SIGINT."""
    if not settings.enable_kafka_streaming:
        raise ConfigError(
            "python -m riskwatch_gateway is the streaming gateway and needs ALGO_ENABLE_KAFKA_STREAMING=true "
            "(with Kafka, Redis and the detector running); for the whole system in one process run "
            "`python -m riskwatch_embedded` (make up)"
        )
    await run_until_signalled(GatewayApp.from_settings(settings))


def check_exposure(config: GatewayConfig) -> None:
    """Raise ConfigError (exit status 2) for a listener beyond loopback without tokens, unless allow_insecure."""
    if config.auth_token is not None:
        log.warning(
            "gateway.yaml auth_token is deprecated: it is accepted as one admin token; mint hashed tokens with "
            "`python -m riskwatch_gateway.access mint admin` and list them under access.tokens"
        )
    exposed = [
        f"{name} {host}"
        for name, host in (("http_host", config.http_host), ("grpc_host", config.grpc_host))
        if not is_loopback(host)
    ]
    if not exposed or not Access(config).open:
        return
    if config.access.allow_insecure:
        log.warning("gateway listens on %s with no token (access.allow_insecure: true): anyone is admin", exposed)
        return
    raise ConfigError(
        f"gateway.yaml: {' and '.join(exposed)} is reachable beyond this machine but no token is configured; "
        "add tokens under access.tokens (python -m riskwatch_gateway.access mint admin), bind 127.0.0.1, or set "
        "access.allow_insecure: true (ALGO_GATEWAY__ACCESS__ALLOW_INSECURE=true) to run it open anyway"
    )


def access_summary(config: GatewayConfig) -> str:
    """One line for the banner: whether a token is needed."""
    if Access(config).open:
        return "OPEN - no token configured, anyone who can reach these ports is admin (set access.tokens)"
    roles = sorted({t.role.value for t in config.access.tokens} | ({"admin"} if config.auth_token else set()))
    return f"token required (Authorization: Bearer <token>; roles configured: {', '.join(roles)})"


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
