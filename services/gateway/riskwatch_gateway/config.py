"""Gateway settings: listeners, detector address, client limits, access control and the camera list."""

from __future__ import annotations

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
    # ... or this many bytes of queued messages behind (whatever they are): memory per client stays bounded.
    client_max_backlog_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024)
    # Open WebSocket clients; one more is closed with 1013 (try again later).
    max_clients: int = Field(default=100, ge=1)
    # Open gRPC streams of each kind (WatchCamera, PushFrames); one more gets RESOURCE_EXHAUSTED.
    max_grpc_streams: int = Field(default=100, ge=1)
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    # How often each camera's status (with measured FPS) is pushed even when it did not change.
    status_interval_s: float = Field(default=5.0, gt=0)
    # A push camera with no frame for this long is offline.
    push_idle_timeout_s: float = Field(default=10.0, gt=0)
    # Frames pushed over gRPC for an unknown camera register it as a push camera (off: add it first).
    auto_register_push_cameras: bool = False
    # Push cameras registered that way, at most (the cameras added explicitly do not count).
    max_auto_registered_cameras: int = Field(default=16, ge=0)
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
    # None disables authentication; otherwise REST, WebSocket and gRPC need it (health and reflection don't).
    auth_token: SecretStr | None = None
    # Browser origins allowed for WebSocket/REST; [] = same origin only, ["*"] = any.
    allowed_origins: list[str] = Field(default_factory=list)


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
