"""Cameras at runtime: each samples its source, keeps only the newest frame while the detector is busy,
sends it with the camera's calibration to the detector and hands the detections to the fan-out. The registry adds
and removes cameras, and sets their calibrations, while running."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import grpc
from pydantic import ValidationError

from riskwatch.domain.calibration import MAX_POINTS, Calibration
from riskwatch.domain.cameras import CAMERA_ID_RULE, is_valid_camera_id
from riskwatch.errors import (
    CameraExists,
    InvalidFrame,
    InvalidRequest,
    LimitReached,
    NotPushCamera,
    RiskwatchError,
    UnknownCamera,
)
from riskwatch.events import event_id, timestamp
from riskwatch.telemetry.metrics import forget_camera
from riskwatch.v1 import detector_pb2, events_pb2, gateway_pb2
from riskwatch_gateway import metrics
from riskwatch_gateway.calibrations import CalibrationOrigin, CalibrationStore, CameraCalibration
from riskwatch_gateway.config import (
    PUSH_SOURCE,
    CalibrationPoints,
    CameraConfig,
    GatewayConfig,
    SourceKind,
    SourceRefused,
)
from riskwatch_gateway.detect import Detect
from riskwatch_gateway.fanout import Hub, Update, UpdateKind
from riskwatch_gateway.messages import camera_json, redact_source
from riskwatch_gateway.sources import (
    CapturedFrame,
    CaptureThread,
    EncodeOptions,
    SourceState,
    SourceUnreadable,
    preview_from_jpeg,
    probe_source,
)

log = logging.getLogger(__name__)

_STATUS = {
    SourceState.ONLINE: gateway_pb2.CAMERA_STATUS_ONLINE,
    SourceState.OFFLINE: gateway_pb2.CAMERA_STATUS_OFFLINE,
    SourceState.RECONNECTING: gateway_pb2.CAMERA_STATUS_RECONNECTING,
}
FPS_WINDOW_S = 5.0


class InvalidCamera(InvalidRequest):
    """A camera definition that does not validate (bad id, source or fps)."""


class InvalidCalibration(InvalidRequest):
    """Calibration points that do not validate: the wrong shape, or points that define no ground plane."""


class SourceNotAllowed(InvalidRequest):
    """A camera source the gateway's `sources:` settings refuse; says only which rule, never whether a path exists."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"source not allowed: {reason}")
        self.reason = reason


class SourceUnavailable(RiskwatchError):
    """A new camera's source that could not be read when it was added (add it with allow_offline to keep it)."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_code = HTTPStatus.UNPROCESSABLE_ENTITY

    def __init__(self, reason: str) -> None:
        super().__init__(f"source unavailable: {reason}")
        self.reason = reason


class TooManyCameras(LimitReached):
    """The gateway already runs `sources.max_cameras` cameras."""


class LatestFrame:
    """A one-frame mailbox: a new frame replaces one the detector has not taken yet."""

    def __init__(self) -> None:
        self._frame: CapturedFrame | None = None
        self._ready = asyncio.Event()

    def put(self, frame: CapturedFrame) -> bool:
        """Store the frame; True when it replaced one that was still waiting."""
        replaced = self._frame is not None
        self._frame = frame
        self._ready.set()
        return replaced

    async def take(self) -> CapturedFrame:
        while self._frame is None:
            self._ready.clear()
            await self._ready.wait()
        frame, self._frame = self._frame, None
        return frame


class Camera:
    """One camera's pipeline: source → newest frame (with the camera's calibration) → detector → fan-out."""

    def __init__(
        self,
        config: CameraConfig,
        settings: GatewayConfig,
        detector: Detect,
        hub: Hub,
        calibration: CameraCalibration,
    ) -> None:
        self.config = config
        self.fps = config.fps or settings.default_fps
        self._settings = settings
        self._detector = detector
        self._hub = hub
        self._slot = LatestFrame()
        self._frames_seen: deque[float] = deque()
        self._last_frame_id = 0
        self._state = SourceState.OFFLINE
        self._error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: CaptureThread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_frame_at = 0.0
        self._frames_detected = 0
        self._frames_dropped = 0
        self._options = EncodeOptions(settings.jpeg_quality, settings.preview_max_side, settings.preview_jpeg_quality)
        self._calibration = calibration
        self._calibration_proto = calibration.calibration.to_proto() if calibration.calibration else None

    @property
    def camera_id(self) -> str:
        return self.config.id

    @property
    def calibration(self) -> CameraCalibration:
        return self._calibration

    @calibration.setter
    def calibration(self, calibration: CameraCalibration) -> None:
        """A new calibration: sent with every frame from now on, and shown to clients at once."""
        self._calibration = calibration
        self._calibration_proto = calibration.calibration.to_proto() if calibration.calibration else None
        self.publish_status()

    @property
    def is_push(self) -> bool:
        return self.config.kind is SourceKind.PUSH

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self, offline_reason: str | None = None) -> None:
        """Start sampling; `offline_reason`: the source failed its probe and the camera starts offline, retrying."""
        self._loop = asyncio.get_running_loop()
        if self.is_push:
            return
        if offline_reason is None:
            self._set_state(SourceState.RECONNECTING, "connecting")
        else:
            self._set_state(SourceState.OFFLINE, offline_reason)
        self._task = asyncio.create_task(self._detect_loop(), name=f"detect-{self.camera_id}")
        self._thread = CaptureThread(
            self.config,
            fps=self.fps,
            options=self._options,
            on_frame=self._from_thread(self._on_frame),
            on_state=self._from_thread_state,
            wants_preview=lambda: self._hub.wants_frames(self.camera_id),
            reconnect_initial_s=self._settings.reconnect_initial_s,
            reconnect_max_s=self._settings.reconnect_max_s,
            sources=self._settings.sources,
        )
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None:
            await asyncio.to_thread(self._thread.stop)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._state = SourceState.OFFLINE
        metrics.CAMERA_ONLINE.labels(self.camera_id).set(0)

    def _from_thread(self, handler: Callable[[CapturedFrame], None]) -> Callable[[CapturedFrame], None]:
        loop = self._loop
        assert loop is not None

        def forward(frame: CapturedFrame) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed while the thread was still reading
                loop.call_soon_threadsafe(handler, frame)

        return forward

    def _from_thread_state(self, state: SourceState, error: str | None) -> None:
        loop = self._loop
        assert loop is not None
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._set_state, state, error)

    # ---- status ----------------------------------------------------------------------------------
    def _set_state(self, state: SourceState, error: str | None) -> None:
        changed = state is not self._state or error != self._error
        self._state, self._error = state, error
        metrics.CAMERA_ONLINE.labels(self.camera_id).set(1 if state is SourceState.ONLINE else 0)
        if state is SourceState.RECONNECTING and error != "connecting":
            metrics.SOURCE_RECONNECTS.labels(self.camera_id).inc()
        if changed:
            self.publish_status()

    def _count_frame(self) -> None:
        now = time.monotonic()
        self._last_frame_at = now
        self._frames_seen.append(now)
        while self._frames_seen and self._frames_seen[0] < now - FPS_WINDOW_S:
            self._frames_seen.popleft()

    @property
    def measured_fps(self) -> float:
        """Frames per second over the last few seconds (0 when fewer than two frames arrived)."""
        now = time.monotonic()
        while self._frames_seen and self._frames_seen[0] < now - FPS_WINDOW_S:
            self._frames_seen.popleft()
        if len(self._frames_seen) < 2:
            return 0.0
        span = self._frames_seen[-1] - self._frames_seen[0]
        return (len(self._frames_seen) - 1) / span if span > 0 else 0.0

    def check_idle(self) -> None:
        """Push cameras go offline after a quiet spell."""
        idle = time.monotonic() - self._last_frame_at > self._settings.push_idle_timeout_s
        if self.is_push and self._state is SourceState.ONLINE and idle:
            self._set_state(SourceState.OFFLINE, "no frames pushed recently")

    def info(self) -> gateway_pb2.CameraInfo:
        fps = self.measured_fps
        metrics.CAMERA_FPS.labels(self.camera_id).set(fps)
        return gateway_pb2.CameraInfo(
            camera=gateway_pb2.Camera(
                camera_id=self.camera_id, source=redact_source(self.config.source), fps=self.fps, loop=self.config.loop
            ),
            status=_STATUS[self._state],
            measured_fps=fps,
            calibrated=self._calibration_proto is not None,
        )

    def status_extra(self) -> dict[str, object]:
        extra: dict[str, object] = {"frames_detected": self._frames_detected, "frames_dropped": self._frames_dropped}
        if self._error:
            extra["error"] = self._error
        return extra

    def json(self) -> dict[str, Any]:
        """The camera as REST and WebSocket clients see it."""
        return camera_json(self.info(), self.status_extra())

    def publish_status(self) -> None:
        self._hub.publish(
            Update(UpdateKind.CAMERA_STATUS, self.camera_id, camera=self.info(), camera_extra=self.status_extra())
        )

    # ---- frames ----------------------------------------------------------------------------------
    def _next_frame_id(self, capture_time: float) -> int:
        # Capture time in ms (strictly increasing): ids stay unique across gateway restarts, which the
        # idempotent consumers downstream rely on.
        frame_id = max(self._last_frame_id + 1, int(capture_time * 1000))
        self._last_frame_id = frame_id
        return frame_id

    def _on_frame(self, frame: CapturedFrame) -> None:
        self._count_frame()
        metrics.FRAMES.labels(self.camera_id, "captured").inc()
        if self._slot.put(frame):
            self._frames_dropped += 1
            metrics.FRAMES.labels(self.camera_id, "dropped_busy").inc()

    async def _detect_loop(self) -> None:
        while True:
            captured = await self._slot.take()
            frame = detector_pb2.Frame(
                camera_id=self.camera_id,
                frame_id=self._next_frame_id(captured.capture_time),
                capture_time=timestamp(captured.capture_time),
                image=captured.jpeg,
            )
            try:
                await self.detect(frame, captured.preview_jpeg)
            except InvalidFrame as exc:
                log.warning(
                    "camera %s frame %d: invalid frame: %s",
                    self.camera_id,
                    frame.frame_id,
                    exc,
                    extra={"camera_id": self.camera_id},
                )
            except Exception as exc:  # the detector is down or failing: keep sampling, retry shortly
                log.warning(
                    "camera %s frame %d: detection failed: %s",
                    self.camera_id,
                    frame.frame_id,
                    exc,
                    extra={"camera_id": self.camera_id},
                )
                await asyncio.sleep(1.0)

    async def detect(self, frame: detector_pb2.Frame, preview_jpeg: bytes | None) -> events_pb2.DetectionEvent:
        """Detect one frame, with the camera's calibration (replacing any a pusher sent: calibrating is the admin's),
        and hand its detections to the fan-out."""
        if self._calibration_proto is not None:
            frame.calibration.CopyFrom(self._calibration_proto)
        else:
            frame.ClearField("calibration")
        started = time.perf_counter()
        try:
            event = await self._detector.detect(frame)
        except InvalidFrame:
            metrics.FRAMES.labels(self.camera_id, "invalid").inc()
            raise
        except Exception:
            metrics.FRAMES.labels(self.camera_id, "detector_error").inc()
            raise
        metrics.DETECT_LATENCY.observe(time.perf_counter() - started)
        metrics.FRAMES.labels(self.camera_id, "detected").inc()
        self._frames_detected += 1
        if not event.camera_id:
            event.camera_id = frame.camera_id
        if not event.event_id:
            event.event_id = event_id(frame.camera_id, frame.frame_id)
        self._hub.publish(Update(UpdateKind.DETECTIONS, self.camera_id, detection=event, preview_jpeg=preview_jpeg))
        return event

    async def push(self, frame: detector_pb2.Frame) -> events_pb2.DetectionEvent:
        """A frame pushed over gRPC: detected at once (never dropped), its event returned to the caller."""
        if not self.is_push:
            raise NotPushCamera(f"camera {self.camera_id!r} reads {self.config.kind} source; it takes no pushes")
        self._count_frame()
        metrics.FRAMES.labels(self.camera_id, "captured").inc()
        if self._state is not SourceState.ONLINE:
            self._set_state(SourceState.ONLINE, None)
        if not frame.HasField("capture_time"):
            frame.capture_time.CopyFrom(timestamp())
        if frame.frame_id <= 0:
            frame.frame_id = self._next_frame_id(time.time())
        preview = None
        if frame.image and self._hub.wants_frames(self.camera_id):
            preview = await asyncio.to_thread(preview_from_jpeg, frame.image, self._options)
        return await self.detect(frame, preview)


def _problems(exc: ValidationError) -> str:
    """Every problem pydantic found, each with where it is ("cameras.0.fps: ...")."""
    return "; ".join(
        ".".join(str(p) for p in e["loc"]) + (": " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
        for e in exc.errors()
    )


def parse_camera(fields: dict[str, object]) -> CameraConfig:
    """Validate a camera definition from a client, raising InvalidCamera with every problem named."""
    try:
        return CameraConfig.model_validate(fields)
    except ValidationError as exc:
        raise InvalidCamera(f"invalid camera: {_problems(exc)}") from exc


def parse_calibration(fields: object) -> CalibrationPoints:
    """Validate calibration points from a client ({"image_points": [[x, y], ...], "ground_points": [...]}),
    raising InvalidCalibration with every problem named (Calibration.fit's message for a degenerate set)."""
    try:
        return CalibrationPoints.model_validate(fields)
    except ValidationError as exc:
        raise InvalidCalibration(f"invalid calibration: {_problems(exc)}") from exc


def calibration_fields(message: events_pb2.GroundCalibration) -> dict[str, object]:
    """A gRPC client's points as parse_calibration takes them; one more than the most allowed is kept, so a longer
    list is refused as too long without being copied whole."""
    return {
        name: [(p.x, p.y) for p in points[: MAX_POINTS + 1]]
        for name, points in (("image_points", message.image_points), ("ground_points", message.ground_points))
    }


def camera_fields(body: dict[str, Any]) -> dict[str, Any]:
    """A client's camera definition, accepting {"id"|"camera_id", "source", "fps"?, "loop"?} (without the
    request's own options such as allow_offline)."""
    fields = {key: value for key, value in body.items() if key != "allow_offline"}
    if "camera_id" in fields and "id" not in fields:
        fields["id"] = fields.pop("camera_id")
    return fields


class CameraRegistry:
    """The cameras the gateway runs, changeable at runtime."""

    def __init__(self, settings: GatewayConfig, detector: Detect, hub: Hub, calibrations: CalibrationStore) -> None:
        self._settings = settings
        self._detector = detector
        self._hub = hub
        self._calibrations = calibrations
        self._cameras: dict[str, Camera] = {}
        self._probing = 0  # cameras being probed, counted against max_cameras
        # Push cameras registered by their first frame (auto_register_push_cameras), limited in number.
        self._auto_registered: set[str] = set()

    def __contains__(self, camera_id: object) -> bool:
        return camera_id in self._cameras

    def ids(self) -> list[str]:
        return list(self._cameras)

    def all(self) -> list[Camera]:
        return list(self._cameras.values())

    def get(self, camera_id: str) -> Camera:
        if not is_valid_camera_id(camera_id):
            # never registered, and not echoed back: a client's id of any length or content
            raise UnknownCamera(f"unknown camera: not a valid camera id ({CAMERA_ID_RULE})")
        camera = self._cameras.get(camera_id)
        if camera is None:
            raise UnknownCamera(f"unknown camera {camera_id!r}")
        return camera

    def _check_room(self, config: CameraConfig, probing: int) -> None:
        if config.id in self._cameras:
            raise CameraExists(f"camera {config.id!r} already exists")
        limit = self._settings.sources.max_cameras
        if len(self._cameras) + probing >= limit:
            raise TooManyCameras(f"too many cameras: this gateway runs at most {limit} (sources.max_cameras)")

    async def add_checked(self, config: CameraConfig, *, allow_offline: bool = False) -> Camera:
        """A camera from a client: its source must be allowed by the `sources:` settings and deliver a frame
        within `probe_timeout_s`, or, with `allow_offline`, it is added offline with the reason and retried."""
        sources = self._settings.sources
        try:
            sources.allowed_source(config.source)
        except SourceRefused as exc:
            raise SourceNotAllowed(str(exc)) from None
        self._check_room(config, self._probing)
        self._probing += 1
        offline_reason: str | None = None
        try:
            await asyncio.wait_for(asyncio.to_thread(probe_source, config, sources), sources.probe_timeout_s)
        except SourceRefused as exc:
            raise SourceNotAllowed(str(exc)) from None
        except (SourceUnreadable, TimeoutError) as exc:
            reason = str(exc) if isinstance(exc, SourceUnreadable) else "timed out"
            if not allow_offline:
                raise SourceUnavailable(reason) from None
            offline_reason = reason
        finally:
            self._probing -= 1
        return self.add(config, offline_reason=offline_reason)

    def add(self, config: CameraConfig, *, offline_reason: str | None = None) -> Camera:
        """Register and start a camera whose source is already checked (config/cameras.yaml, push, add_checked)."""
        self._check_room(config, 0)
        calibration = self._calibrations.resolve(config.id, _configured(config))
        camera = Camera(config, self._settings, self._detector, self._hub, calibration)
        self._cameras[config.id] = camera
        camera.start(offline_reason)
        log.info("camera %s added (%s, %.1f fps)", config.id, config.kind, camera.fps, extra={"camera_id": config.id})
        camera.publish_status()
        return camera

    async def remove(self, camera_id: str) -> None:
        camera = self.get(camera_id)
        del self._cameras[camera_id]
        await camera.stop()
        forget_camera(camera_id, *metrics.PER_CAMERA, label="camera")
        log.info("camera %s removed", camera_id, extra={"camera_id": camera_id})
        info = camera.info()
        info.status = gateway_pb2.CAMERA_STATUS_OFFLINE
        self._hub.publish(Update(UpdateKind.CAMERA_STATUS, camera_id, camera=info, camera_extra={"removed": True}))

    def set_calibration(self, camera_id: str, points: CalibrationPoints) -> CameraCalibration:
        """Fit and store an API calibration for a camera (kept across restarts; beats its configured one)."""
        camera = self.get(camera_id)
        fitted = points.fit()
        camera.calibration = self._calibrations.put(camera_id, fitted, _configured(camera.config))
        log.info(
            "camera %s calibrated through the API (reprojection error %.3f m)",
            camera_id,
            fitted.reprojection_error_m,
            extra={"camera_id": camera_id},
        )
        return camera.calibration

    def delete_calibration(self, camera_id: str) -> CameraCalibration:
        """Drop a camera's API calibration: it falls back to its configured one, or none."""
        camera = self.get(camera_id)
        if camera.calibration.origin is CalibrationOrigin.API:
            camera.calibration = self._calibrations.delete(camera_id, _configured(camera.config))
            log.info("camera %s: API calibration deleted", camera_id, extra={"camera_id": camera_id})
        return camera.calibration

    def push_target(self, camera_id: str) -> Camera:
        """The camera a pushed frame belongs to, registering an unknown id as a push camera when allowed."""
        if not is_valid_camera_id(camera_id):
            raise InvalidCamera(f"invalid camera: not a valid camera id ({CAMERA_ID_RULE})")
        camera = self._cameras.get(camera_id)
        if camera is not None:
            return camera
        if not self._settings.auto_register_push_cameras:
            raise UnknownCamera(f"unknown camera {camera_id!r}; add it with source 'push' first")
        self._auto_registered &= set(self._cameras)  # those removed since no longer count
        if len(self._auto_registered) >= self._settings.max_auto_registered_cameras:
            raise LimitReached(
                f"unknown camera {camera_id!r}: {len(self._auto_registered)} push cameras were registered by their "
                "frames already (max_auto_registered_cameras); add it with source 'push'"
            )
        camera = self.add(parse_camera({"id": camera_id, "source": PUSH_SOURCE}))
        self._auto_registered.add(camera_id)
        return camera

    async def stop_all(self) -> None:
        cameras, self._cameras = list(self._cameras.values()), {}
        await asyncio.gather(*(camera.stop() for camera in cameras))


def _configured(config: CameraConfig) -> Calibration | None:
    return config.calibration.fit() if config.calibration is not None else None
