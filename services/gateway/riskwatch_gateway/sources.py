"""Frame sources read by OpenCV in a thread of their own: video files paced in real time, stream URLs and
local devices, each reconnecting with backoff. Decoding and JPEG encoding never touch the event loop."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import cv2
from cv2.typing import MatLike

from riskwatch import imaging
from riskwatch.errors import InvalidFrame, Unavailable
from riskwatch.retry import RetryCallState, retrying_blocking
from riskwatch_gateway.config import CameraConfig, SourceKind
from riskwatch_gateway.messages import redact_source

log = logging.getLogger(__name__)


class SourceFailed(Exception):
    """A source that could not be opened, or stopped before delivering any frame; retried with backoff."""


class SourceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    RECONNECTING = "reconnecting"


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    """One sampled frame, already JPEG-encoded."""

    capture_time: float
    jpeg: bytes
    width: int
    height: int
    # Downscaled JPEG for dashboards; only made while some client wants this camera's frames.
    preview_jpeg: bytes | None


@dataclass(frozen=True, slots=True)
class EncodeOptions:
    jpeg_quality: int = 85
    preview_max_side: int = 640
    preview_quality: int = 70


def encode_frame(image: MatLike, options: EncodeOptions, preview: bool) -> CapturedFrame:
    """JPEG of the full frame plus, when asked, a downscaled preview."""
    capture_time = time.time()
    height, width = image.shape[:2]
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, options.jpeg_quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    preview_jpeg = make_preview(image, options) if preview else None
    return CapturedFrame(capture_time, jpeg.tobytes(), width, height, preview_jpeg)


def make_preview(image: MatLike, options: EncodeOptions) -> bytes:
    height, width = image.shape[:2]
    scale = options.preview_max_side / max(height, width)
    if scale < 1:
        image = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, options.preview_quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(jpeg.tobytes())


def preview_from_jpeg(data: bytes, options: EncodeOptions) -> bytes | None:
    """A preview of an already encoded image (pushed frames: outside input, decoded with riskwatch.imaging's checks);
    None when it cannot be decoded."""
    try:
        image = imaging.decode_image(data, max_bytes=imaging.MAX_IMAGE_BYTES, max_pixels=imaging.MAX_IMAGE_PIXELS)
    except InvalidFrame:
        return None
    height, width = image.shape[:2]
    if max(height, width) <= options.preview_max_side:
        return data
    return make_preview(image, options)


class CaptureThread:
    """Reads one camera in a daemon thread and hands each sampled frame to `on_frame` (called in that
    thread; the owner forwards it to the event loop)."""

    def __init__(
        self,
        camera: CameraConfig,
        *,
        fps: float,
        options: EncodeOptions,
        on_frame: Callable[[CapturedFrame], None],
        on_state: Callable[[SourceState, str | None], None],
        wants_preview: Callable[[], bool],
        reconnect_initial_s: float = 1.0,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.camera = camera
        self._interval = 1.0 / fps
        self._options = options
        self._on_frame = on_frame
        self._on_state = on_state
        self._wants_preview = wants_preview
        self._backoff_initial = reconnect_initial_s
        self._backoff_max = reconnect_max_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{camera.id}", daemon=True)
        self.reconnects = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to stop and wait a little; a source stuck in a read is left to finish on its own."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _open(self) -> cv2.VideoCapture:
        kind = self.camera.kind
        source = self.camera.source
        if kind is SourceKind.DEVICE:
            return cv2.VideoCapture(int(source.removeprefix("device:")))
        if kind is SourceKind.FILE:
            if not Path(source).is_file():
                raise FileNotFoundError(f"no such video file: {source}")
            return cv2.VideoCapture(source)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
        return cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)

    def _run(self) -> None:
        where = redact_source(self.camera.source)
        while not self._stop.is_set():
            try:
                for attempt in retrying_blocking(
                    retry_on=SourceFailed,
                    initial_s=self._backoff_initial,
                    max_s=self._backoff_max,
                    stop=self._stop,
                    before_sleep=self._before_retry,
                ):
                    with attempt:
                        lost = self._session(where)
            except Unavailable:  # stopped while waiting to reconnect
                return
            if lost is None or self._stop.is_set():
                return
            # Frames came before the source went away: the backoff starts again from the beginning.
            self._reconnecting(lost, self._backoff_initial)
            if self._stop.wait(self._backoff_initial):
                return

    def _session(self, where: str) -> str | None:
        """Open the source and read it: None once a non-looping file ended (or we are told to stop), the reason
        when it stopped after delivering frames; raises SourceFailed when it delivered none."""
        try:
            capture = self._open()
            if not capture.isOpened():
                raise OSError(f"cannot open {where}")
        except (OSError, cv2.error) as exc:
            raise SourceFailed(str(exc)) from exc
        try:
            delivered, finished = self._read(capture)
        except (OSError, cv2.error, ValueError) as exc:
            log.warning(
                "camera %s: reading %s failed: %s", self.camera.id, where, exc, extra={"camera_id": self.camera.id}
            )
            delivered, finished = 0, False
        finally:
            capture.release()
        if finished or self._stop.is_set():
            return None
        reason = f"{where} stopped delivering frames"
        if not delivered:
            raise SourceFailed(reason)
        return reason

    def _before_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        self._reconnecting(str(error), delay)

    def _reconnecting(self, reason: str, delay: float) -> None:
        log.warning(
            "camera %s: %s; retrying in %.1fs", self.camera.id, reason, delay, extra={"camera_id": self.camera.id}
        )
        self.reconnects += 1
        self._on_state(SourceState.RECONNECTING, reason)

    def _emit(self, image: MatLike) -> None:
        self._on_frame(encode_frame(image, self._options, self._wants_preview()))

    def _read(self, capture: cv2.VideoCapture) -> tuple[int, bool]:
        """Deliver frames until the source fails (returns frames delivered, False) or a non-looping file
        ends (returns frames delivered, True)."""
        if self.camera.kind is SourceKind.FILE:
            return self._read_file(capture)
        return self._read_live(capture), False

    def _read_file(self, capture: cv2.VideoCapture) -> tuple[int, bool]:
        # Play the file at its own speed and sample it at the camera's rate, as a live camera would be.
        native_fps = capture.get(cv2.CAP_PROP_FPS)
        if not math.isfinite(native_fps) or not 0 < native_fps <= 1000:  # unknown
            native_fps = 1.0 / self._interval
        interval = max(self._interval, 1.0 / native_fps)
        delivered = 0
        grabbed = 0  # frames grabbed since the start of the current pass
        start = time.monotonic()
        due = start
        while not self._stop.is_set():
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            target = int((time.monotonic() - start) * native_fps)
            ended = False
            for _ in range(max(1, target + 1 - grabbed)):
                if not capture.grab():
                    ended = True
                    break
                grabbed += 1
            if ended:
                if grabbed == 0:
                    return delivered, False  # not even one frame: treat as a failure
                if not self.camera.loop:
                    self._on_state(SourceState.OFFLINE, "end of file")
                    return delivered, True
                capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                grabbed = 0
                start = due = time.monotonic()
                continue
            ok, image = capture.retrieve()
            if not ok or image is None:
                return delivered, False
            if delivered == 0:
                self._on_state(SourceState.ONLINE, None)
            self._emit(image)
            delivered += 1
            due += interval
            if due < time.monotonic() - interval:
                due = time.monotonic()
        return delivered, False

    def _read_live(self, capture: cv2.VideoCapture) -> int:
        # Keep draining the source so the frame we sample is the newest, not one from a stale buffer.
        delivered = 0
        due = time.monotonic()
        while not self._stop.is_set():
            if not capture.grab():
                return delivered
            now = time.monotonic()
            if now < due:
                continue
            ok, image = capture.retrieve()
            if not ok or image is None:
                return delivered
            if delivered == 0:
                self._on_state(SourceState.ONLINE, None)
            self._emit(image)
            delivered += 1
            due = max(due + self._interval, now)
        return delivered
