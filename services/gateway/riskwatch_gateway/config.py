"""Gateway settings: listeners, detector address, client limits, access control and the camera list."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator

from riskwatch.config import CommonSettings, FrozenModel
from riskwatch.domain.cameras import CAMERA_ID_RULE, CameraId


class SourceKind(StrEnum):
    FILE = "file"
    URL = "url"
    DEVICE = "device"
    PUSH = "push"


PUSH_SOURCE = "push"
_URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def source_kind(source: str) -> SourceKind:
    """What kind of source a camera's `source` string names."""
    if source == PUSH_SOURCE:
        return SourceKind.PUSH
    if source.startswith("device:"):
        return SourceKind.DEVICE
    if source.lower().startswith(_URL_SCHEMES):
        return SourceKind.URL
    return SourceKind.FILE


class CameraConfig(FrozenModel):
    """One camera: where its frames come from and how often it is sampled."""

    id: CameraId = Field(description=CAMERA_ID_RULE)
    # A file path, an rtsp:// or http(s):// URL, "device:<index>", or "push" (frames arrive over gRPC).
    source: str = Field(min_length=1)
    # Frames per second sent to the detector; None = the gateway's default_fps.
    fps: float | None = Field(default=None, gt=0, le=60)
    # Video files only: start again at the end.
    loop: bool = False

    @field_validator("source")
    @classmethod
    def _device_index(cls, value: str) -> str:
        if value.startswith("device:") and not value.removeprefix("device:").isdigit():
            raise ValueError("a device source is 'device:<index>', e.g. 'device:0'")
        return value

    @property
    def kind(self) -> SourceKind:
        return source_kind(self.source)


class CamerasConfig(FrozenModel):
    """The model of config/cameras.yaml."""

    cameras: list[CameraConfig] = Field(default_factory=list)

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, value: list[CameraConfig]) -> list[CameraConfig]:
        seen: set[str] = set()
        for camera in value:
            if camera.id in seen:
                raise ValueError(f"camera id {camera.id!r} appears more than once")
            seen.add(camera.id)
        return value


class Role(StrEnum):
    """What a token may do; each role may do everything the ones before it may."""

    VIEWER = "viewer"  # watch: WebSocket, WatchCamera, REST GETs, the dashboard, /metrics
    OPERATOR = "operator"  # viewer + acknowledge/feedback actions and pushing frames
    ADMIN = "admin"  # operator + cameras, zones and configuration

    @property
    def rank(self) -> int:
        return list(Role).index(self)


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class TokenConfig(FrozenModel):
    """One accepted token, stored as the SHA-256 of the token (never the token itself)."""

    role: Role
    # hex SHA-256 of the token; mint both with `python -m riskwatch_gateway.access mint`.
    sha256: str
    # Who holds it (for the operator; never logged with the hash).
    name: str = ""

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        value = value.strip().lower()
        if not _SHA256_HEX.fullmatch(value):
            raise ValueError("must be the 64-hex-digit SHA-256 of the token (python -m riskwatch_gateway.access mint)")
        return value


class AccessConfig(FrozenModel):
    """Who may connect and what each may do (gateway.yaml's `access:` section)."""

    # No tokens (and no auth_token) = open: every client is admin, and only loopback binds are allowed.
    tokens: list[TokenConfig] = Field(default_factory=list)
    # Host header names accepted besides the loopback ones and the bind address; "*.example.com" or "*" (any).
    allowed_hosts: list[str] = Field(default_factory=list)
    # Let the gateway listen beyond loopback without tokens (anyone who reaches it is admin).
    allow_insecure: bool = False


class GatewayConfig(FrozenModel):
    """The model of config/gateway.yaml."""

    grpc_host: str = "127.0.0.1"
    # 0 = any free port (tests); the bound port is Gateway.grpc_port.
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    # The detector's gRPC address, used in streaming mode.
    detector_address: str = "127.0.0.1:50052"
    detector_timeout_s: float = Field(default=10.0, gt=0)
    default_fps: float = Field(default=2.0, gt=0, le=60)
    # Messages waiting per client (WebSocket or gRPC watch) before detections are dropped, oldest first.
    client_queue_size: int = Field(default=64, ge=2, le=100_000)
    # Risk changes and alerts are never dropped; a client this far behind on them is disconnected instead.
    client_max_backlog: int = Field(default=1000, ge=10)
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    # How often each camera's status (with measured FPS) is pushed even when it did not change.
    status_interval_s: float = Field(default=5.0, gt=0)
    # A push camera with no frame for this long is offline.
    push_idle_timeout_s: float = Field(default=10.0, gt=0)
    # Frames pushed over gRPC for an unknown camera register it as a push camera.
    auto_register_push_cameras: bool = True
    # Longest side of the frame JPEG sent to dashboards (clients that subscribe with frames=true).
    preview_max_side: int = Field(default=640, ge=64, le=4096)
    preview_jpeg_quality: int = Field(default=70, ge=10, le=100)
    jpeg_quality: int = Field(default=85, ge=10, le=100)
    # Reconnect backoff for failing sources.
    reconnect_initial_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    # Alerts replayed to a client on subscribe, per camera.
    alert_replay: int = Field(default=20, ge=0, le=1000)
    # Embedded mode starts the project's LLM simulator where config/api_keys.yaml points; false = a real LLM.
    embedded_llm_simulator: bool = True
    # Deprecated: one plain-text token with the admin role; use access.tokens (hashed) instead.
    auth_token: SecretStr | None = None
    # Browser origins allowed for WebSocket/REST besides the dashboard's own (on an allowed host); ["*"] = any.
    allowed_origins: list[str] = Field(default_factory=list)
    access: AccessConfig = AccessConfig()
    # Largest gRPC-web request body; a bigger one is refused (RESOURCE_EXHAUSTED) without being read further.
    grpc_web_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)


class GatewaySettings(CommonSettings):
    yaml_sections: ClassVar[dict[str, str]] = {
        **CommonSettings.yaml_sections,
        "gateway": "gateway.yaml",
        "cameras": "cameras.yaml",
    }

    gateway: GatewayConfig = GatewayConfig()
    cameras: CamerasConfig = CamerasConfig()
    # How long a stopping gateway lets open HTTP and gRPC calls finish.
    shutdown_grace_s: float = Field(default=3.0, ge=0, le=3600)

    @property
    def camera_list(self) -> list[CameraConfig]:
        return list(self.cameras.cameras)
