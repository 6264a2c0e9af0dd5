"""Frame sources read by OpenCV in a thread of their own: video files paced in real time, still images, stream URLs
and local devices, each reconnecting with backoff; the probe a new camera's source passes before it is accepted.
Decoding and JPEG encoding never touch the event loop."""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

import cv2
from cv2.typing import MatLike

from riskwatch import imaging
from riskwatch.errors import InvalidFrame, Unavailable
from riskwatch.retry import RetryCallState, retrying_blocking
from riskwatch_gateway.config import (
    STILL_IMAGE_EXTENSIONS,
    CameraConfig,
    SourceKind,
    SourceRefused,
    SourcesConfig,
    device_index,
)
from riskwatch_gateway.messages import redact_source

log = logging.getLogger(__name__)

# ffmpeg options OpenCV applies to every capture it opens (it reads the variable at each open, so this one value
# holds for all of them). protocol_whitelist: the protocols a source may use, nested ones included (http's tcp,
# https's tls, a playlist's segments); no udp, rtp, rtmp, concat, pipe, data, ... . rtsp_transport: OpenCV's own
# default, lost once the variable is set. allowed_extensions (HLS): no local file as a segment of a remote playlist.
FFMPEG_CAPTURE_OPTIONS = (
    "protocol_whitelist;file,http,https,tls,tcp,rtsp,rtsps,crypto|rtsp_transport;tcp|allowed_extensions;none"
)
_METADATA_ADDRESSES = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}


class SourceFailed(Exception):
    """A source that could not be opened, or stopped before delivering any frame; retried with backoff."""


class SourceUnreadable(ValueError):
    """A new camera's source that could not be read when probed; the message is the reason, safe to show."""


def _refused_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address in _METADATA_ADDRESSES
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
    )


def check_url_host(url: str, sources: SourcesConfig) -> None:
    """Resolve a URL's host and refuse it (SourceRefused "address") when any of its addresses is loopback,
    link-local, unspecified, multicast, reserved or a cloud metadata address and not in `sources.allowed_hosts`;
    SourceRefused "host not found" when it does not resolve. Blocking (DNS): call it in a thread."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        raise SourceRefused("no host")
    allowed = {entry.lower() for entry in sources.allowed_hosts}
    if host in allowed:
        return
    networks = []
    for entry in allowed:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue  # a host name
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise SourceUnreadable("host not found") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if _refused_address(address) and not any(address in network for network in networks):
            raise SourceRefused("address")


def open_capture(camera: CameraConfig, sources: SourcesConfig, open_timeout_ms: int = 5000) -> cv2.VideoCapture:
    """An OpenCV capture of a file, URL or device source, checked against `sources` again at every open (a link
    or DNS name may have changed since the camera was added). Blocking."""
    kind = camera.kind
    target = sources.allowed_source(camera.source)
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = FFMPEG_CAPTURE_OPTIONS
    if kind is SourceKind.DEVICE:
        return cv2.VideoCapture(device_index(target))
    if kind is SourceKind.FILE:
        if not Path(target).is_file():
            raise FileNotFoundError(f"no such video file: {camera.source}")
        return cv2.VideoCapture(target, cv2.CAP_FFMPEG)
    check_url_host(target, sources)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, open_timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, open_timeout_ms]
    return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)


def is_still_image(camera: CameraConfig) -> bool:
    return camera.kind is SourceKind.FILE and Path(camera.source).suffix.lower() in STILL_IMAGE_EXTENSIONS


def read_still(path: str) -> MatLike:
    """A still image source, decoded with riskwatch.imaging's size checks."""
    data = Path(path).read_bytes()
    return imaging.decode_image(data, max_bytes=imaging.MAX_IMAGE_BYTES, max_pixels=imaging.MAX_IMAGE_PIXELS)


def probe_source(camera: CameraConfig, sources: SourcesConfig) -> None:
    """Open a new camera's source once and read one frame; SourceUnreadable with the reason when that
    fails, SourceRefused when the settings do not allow it.
    Blocking: run it in a thread, under a timeout."""
    if camera.kind is SourceKind.PUSH:
        return
    if camera.kind is SourceKind.FILE:
        target = Path(sources.allowed_source(camera.source))
        if not target.exists():
            raise SourceUnreadable("no such file")
        if not target.is_file():
            raise SourceUnreadable("not a file")
        if not os.access(target, os.R_OK):
            raise SourceUnreadable("file not readable")
        if is_still_image(camera):
            try:
                read_still(str(target))
            except (OSError, InvalidFrame) as exc:
                raise SourceUnreadable("cannot decode the image") from exc
            return
    try:
        capture = open_capture(camera, sources, round(sources.probe_timeout_s * 1000))
    except FileNotFoundError as exc:
        raise SourceUnreadable("no such file") from exc
    except (OSError, cv2.error) as exc:
        raise SourceUnreadable("cannot open") from exc
    try:
        if not capture.isOpened():
            raise SourceUnreadable("cannot decode the file" if camera.kind is SourceKind.FILE else "cannot open")
        ok, image = capture.read()
        if not ok or image is None:
            raise SourceUnreadable("no frame")
    except cv2.error as exc:
        raise SourceUnreadable("no frame") from exc
    finally:
        capture.release()


FILE_CHECK_INTERVAL_S = 1.0


class _Outcome(StrEnum):
    """How reading an opened source ended."""

    FAILED = "failed"  # it stopped delivering (or we were told to stop)
    FINISHED = "finished"  # a non-looping file reached its end
    REOPEN = "reopen"  # the file changed on disk, or cannot rewind: open it again at once


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
        sources: SourcesConfig,
    ) -> None:
        self.camera = camera
        self._sources = sources
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
        try:
            return open_capture(self.camera, self._sources)
        except SourceRefused as exc:
            raise OSError(f"source not allowed: {exc}") from exc
        except SourceUnreadable as exc:
            raise OSError(str(exc)) from exc

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
        delivered = 0
        while True:
            try:
                capture = None if is_still_image(self.camera) else self._open()
                if capture is not None and not capture.isOpened():
                    raise OSError(f"cannot open {where}")
            except (OSError, cv2.error) as exc:
                raise SourceFailed(str(exc)) from exc
            try:
                read, outcome = self._read(capture)
            except (OSError, cv2.error, ValueError, InvalidFrame) as exc:
                log.warning(
                    "camera %s: reading %s failed: %s", self.camera.id, where, exc, extra={"camera_id": self.camera.id}
                )
                read, outcome = 0, _Outcome.FAILED
            finally:
                if capture is not None:
                    capture.release()
            delivered += read
            if outcome is _Outcome.REOPEN and not self._stop.is_set():
                log.info("camera %s: %s changed; reading it again", self.camera.id, where)
                continue
            if outcome is _Outcome.FINISHED or self._stop.is_set():
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

    def _read(self, capture: cv2.VideoCapture | None) -> tuple[int, _Outcome]:
        """Deliver frames until the source fails, a non-looping file ends, or a file changes on disk."""
        if capture is None:
            return self._read_still()
        if self.camera.kind is SourceKind.FILE:
            return self._read_file(capture)
        return self._read_live(capture), _Outcome.FAILED

    def _file_identity(self) -> tuple[int, int, int, int] | None:
        """What tells that the camera's file was replaced or rewritten (device, inode, mtime, size)."""
        try:
            stat = os.stat(self._sources.allowed_source(self.camera.source))
        except (OSError, SourceRefused):
            return None
        return stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _changed(self, identity: tuple[int, int, int, int] | None, checked: list[float]) -> bool:
        now = time.monotonic()
        if now - checked[0] < FILE_CHECK_INTERVAL_S:
            return False
        checked[0] = now
        return self._file_identity() != identity

    def _read_still(self) -> tuple[int, _Outcome]:
        # One decode, then the same picture at the camera's rate: a still image is a camera that never moves.
        identity = self._file_identity()
        image = read_still(self._sources.allowed_source(self.camera.source))
        self._on_state(SourceState.ONLINE, None)
        delivered = 0
        checked = [time.monotonic()]
        while not self._stop.is_set():
            self._emit(image)
            delivered += 1
            if not self.camera.loop:
                self._on_state(SourceState.OFFLINE, "end of file")
                return delivered, _Outcome.FINISHED
            if self._stop.wait(self._interval):
                break
            if self._changed(identity, checked):
                return delivered, _Outcome.REOPEN
        return delivered, _Outcome.FINISHED

    def _read_file(self, capture: cv2.VideoCapture) -> tuple[int, _Outcome]:
        # Play the file at its own speed and sample it at the camera's rate, as a live camera would be.
        identity = self._file_identity()
        checked = [time.monotonic()]
        native_fps = capture.get(cv2.CAP_PROP_FPS)
        if not math.isfinite(native_fps) or not 0 < native_fps <= 1000:  # unknown
            native_fps = 1.0 / self._interval
        interval = max(self._interval, 1.0 / native_fps)
        delivered = 0
        grabbed = 0  # frames grabbed since the start of the current pass
        rewound = False
        start = time.monotonic()
        due = start
        while not self._stop.is_set():
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            if self._changed(identity, checked):
                return delivered, _Outcome.REOPEN
            target = int((time.monotonic() - start) * native_fps)
            ended = False
            for _ in range(max(1, target + 1 - grabbed)):
                if not capture.grab():
                    ended = True
                    break
                grabbed += 1
            if ended:
                if grabbed == 0:
                    # Nothing after a rewind (a container that cannot seek): open it again rather than fail.
                    return delivered, _Outcome.REOPEN if rewound else _Outcome.FAILED
                if not self.camera.loop:
                    self._on_state(SourceState.OFFLINE, "end of file")
                    return delivered, _Outcome.FINISHED
                capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                grabbed = 0
                rewound = True
                start = due = time.monotonic()
                continue
            ok, image = capture.retrieve()
            if not ok or image is None:
                return delivered, _Outcome.FAILED
            if delivered == 0:
                self._on_state(SourceState.ONLINE, None)
            self._emit(image)
            delivered += 1
            rewound = False
            due += interval
            if due < time.monotonic() - interval:
                due = time.monotonic()
        return delivered, _Outcome.FAILED

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
