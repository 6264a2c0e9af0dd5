"""Gateway settings: listeners, detector address, client limits, access control and the camera list."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import ClassVar, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from riskwatch.config import CommonSettings, FrozenModel
from riskwatch.domain.calibration import MAX_POINTS, Calibration, CalibrationError
from riskwatch.domain.cameras import CAMERA_ID_RULE, CameraId


class SourceKind(StrEnum):
    FILE = "file"
    URL = "url"
    DEVICE = "device"
    PUSH = "push"


PUSH_SOURCE = "push"
DEVICE_PREFIX = "device:"
# The only URL schemes a camera may use; any other "scheme:" (tcp:, udp:, rtmp:, file:, concat:, ...) is refused.
URL_SCHEMES = ("rtsp", "rtsps", "http", "https")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+):")
_ASCII_DIGITS = re.compile(r"[0-9]{1,4}")


def url_scheme(source: str) -> str | None:
    """The lower-cased scheme of a "scheme:..." source (ffmpeg's protocol prefix), None for a plain path."""
    match = _SCHEME.match(source)
    return match.group(1).lower() if match else None


def source_kind(source: str) -> SourceKind:
    """What kind of source a camera's `source` string names."""
    if source == PUSH_SOURCE:
        return SourceKind.PUSH
    if source.startswith(DEVICE_PREFIX):
        return SourceKind.DEVICE
    if url_scheme(source) is not None:
        return SourceKind.URL
    return SourceKind.FILE


def device_index(source: str) -> int:
    """The index of a "device:<N>" source (ASCII digits only: int() would take "²" and other Unicode digits)."""
    index = source.removeprefix(DEVICE_PREFIX)
    if not _ASCII_DIGITS.fullmatch(index):
        raise ValueError("a device source is 'device:<index>', e.g. 'device:0'")
    return int(index)


class CalibrationPoints(FrozenModel):
    """A camera's ground-plane calibration as configured: image points (px) and where they lie on the ground (m)."""

    image_points: list[tuple[float, float]] = Field(max_length=MAX_POINTS)
    ground_points: list[tuple[float, float]] = Field(max_length=MAX_POINTS)

    @model_validator(mode="after")
    def _fits(self) -> Self:
        try:
            self.fit()
        except CalibrationError as exc:
            raise ValueError(str(exc)) from None
        return self

    def fit(self, version: int = 0) -> Calibration:
        return Calibration.fit(self.image_points, self.ground_points, version=version)


class CameraConfig(FrozenModel):
    """One camera: where its frames come from and how often it is sampled."""

    id: CameraId = Field(description=CAMERA_ID_RULE)
    # A file path, an rtsp:// or http(s):// URL, "device:<index>", or "push" (frames arrive over gRPC).
    source: str = Field(min_length=1)
    # Frames per second sent to the detector; None = the gateway's default_fps.
    fps: float | None = Field(default=None, gt=0, le=60)
    # Video files only: start again at the end.
    loop: bool = False
    # Ground-plane calibration (kinematics and conflicts in metres); one set through the API beats it until deleted.
    calibration: CalibrationPoints | None = None

    @field_validator("source")
    @classmethod
    def _device_index(cls, value: str) -> str:
        if value.startswith(DEVICE_PREFIX):
            device_index(value)
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


# Still images are decoded by riskwatch.imaging (JPEG and PNG, with its size checks) and shown at the camera's rate.
STILL_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")


class SourceRefused(ValueError):
    """A source the `sources:` settings do not allow; the message is the rule's category, safe to show clients."""


class SourcesConfig(FrozenModel):
    """Which sources a camera may open (config/gateway.yaml `sources:`); see sources_policy.py."""

    # Directories whose files cameras may read (after resolving links); relative ones are taken from the working
    # directory, where relative camera paths are resolved too.
    media_roots: list[Path] = Field(default_factory=lambda: [Path("var/data")])
    # File name extensions (lower case) a file source may have: videos and still images.
    extensions: list[str] = Field(default_factory=lambda: [*VIDEO_EXTENSIONS, *STILL_IMAGE_EXTENSIONS])
    # Local cameras ("device:<index>") open hardware on the gateway's host: off unless enabled.
    allow_devices: bool = False
    # URL hosts that may resolve to loopback, link-local, unspecified or cloud-metadata addresses: host names,
    # addresses or networks (e.g. "127.0.0.1", "::1/128", "camera.local"). Everything else of those is refused.
    allowed_hosts: list[str] = Field(default_factory=list)
    # Cameras of any kind the gateway runs at once; adding more is refused (429 / RESOURCE_EXHAUSTED).
    max_cameras: int = Field(default=64, ge=1, le=10_000)
    # How long a new camera's source may take to deliver its first frame when it is added.
    probe_timeout_s: float = Field(default=5.0, gt=0, le=60)

    def allowed_source(self, source: str) -> str:
        """What a camera with this source opens (a file: its resolved path), or SourceRefused with the rule's
        category. Checked on the name alone, so the answer never tells whether a path exists."""
        kind = source_kind(source)
        if kind is SourceKind.PUSH:
            return source
        if kind is SourceKind.DEVICE:
            if not self.allow_devices:
                raise SourceRefused("devices are disabled")
            return source
        if kind is SourceKind.URL:
            if url_scheme(source) not in URL_SCHEMES:
                raise SourceRefused("scheme")
            return source
        # resolve() follows every link, so a link inside a root that points outside is outside.
        path = Path(source).expanduser().resolve()
        if not any(path.is_relative_to(root.expanduser().resolve()) for root in self.media_roots):
            raise SourceRefused("outside the media roots")
        if Path(source).suffix.lower() not in self.extensions or path.suffix.lower() not in self.extensions:
            raise SourceRefused("file type")
        return str(path)


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
    # Deprecated: one plain-text token with the admin role; use access.tokens (hashed) instead.
    auth_token: SecretStr | None = None
    # Browser origins allowed for WebSocket/REST besides the dashboard's own (on an allowed host); ["*"] = any.
    allowed_origins: list[str] = Field(default_factory=list)
    access: AccessConfig = AccessConfig()
    # Where the gateway keeps what the API changed and a restart must keep (calibrations.json); relative to the
    # working directory.
    state_dir: Path = Path("var/state/gateway")
    # Largest gRPC-web request body; a bigger one is refused (RESOURCE_EXHAUSTED) without being read further.
    grpc_web_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    sources: SourcesConfig = SourcesConfig()


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

    @model_validator(mode="after")
    def _configured_sources_allowed(self) -> Self:
        for index, camera in enumerate(self.cameras.cameras):
            try:
                self.gateway.sources.allowed_source(camera.source)
            except SourceRefused as exc:
                raise ValueError(f"cameras[{index}] ({camera.id}): source not allowed: {exc}") from None
        if len(self.cameras.cameras) > self.gateway.sources.max_cameras:
            raise ValueError(f"{len(self.cameras.cameras)} cameras but gateway.sources.max_cameras is lower")
        return self

    @property
    def camera_list(self) -> list[CameraConfig]:
        return list(self.cameras.cameras)
