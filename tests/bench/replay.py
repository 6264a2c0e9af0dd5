"""vtest.avi as 50 cameras: the frames each camera sends, and pre-computed DetectionEvents to replay as events.

Camera c samples the 10 fps video every 5th frame (2 FPS) in phase c % 5, starting (c // 5) tenths of the way
into that phase's sequence, so the 50 cameras show different moments. Replayed events are computed once per
phase with the real detector in-process (tracking needs the frames in order) and cached under var/bench/.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

from riskwatch import events
from riskwatch.bus import InMemoryBus
from riskwatch.config import load_settings
from riskwatch.v1 import detector_pb2, events_pb2
from riskwatch_detector.config import DetectorSettings
from riskwatch_detector.service import Detector
from tests.support.stack import REPO, VIDEO

PHASES = 5  # 10 fps video sampled every 5th frame = 2 FPS
CACHE_DIR = REPO / "var" / "bench"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """Which video frame camera `c` sends as its `k`-th frame, and how often its sequence has looped by then."""

    video_frames: int
    cameras: int

    @property
    def phase_length(self) -> int:
        return self.video_frames // PHASES

    def camera_id(self, c: int) -> str:
        return f"cam-{c:02d}"

    def position(self, c: int, k: int) -> tuple[int, int, int]:
        """(phase, index in the phase sequence, loop count)."""
        length = self.phase_length
        start = (c // PHASES) * length // max(1, (self.cameras + PHASES - 1) // PHASES)
        loop, index = divmod(start + k, length)
        return c % PHASES, index, loop

    def video_index(self, c: int, k: int) -> int:
        phase, index, _ = self.position(c, k)
        return phase + PHASES * index


def load_jpegs(path: Path = VIDEO, quality: int = 85) -> list[bytes]:
    """Every frame of the video, JPEG-encoded as a camera would send it."""
    capture = cv2.VideoCapture(str(path))
    jpegs: list[bytes] = []
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise RuntimeError(f"cannot encode frame {len(jpegs)} of {path}")
            jpegs.append(bytes(jpeg.tobytes()))
    finally:
        capture.release()
    if len(jpegs) < PHASES * 10:
        raise RuntimeError(f"{path}: only {len(jpegs)} frames")
    return jpegs


def frame(camera_id: str, frame_id: int, jpeg: bytes, capture: float) -> detector_pb2.Frame:
    return detector_pb2.Frame(
        camera_id=camera_id, frame_id=frame_id, capture_time=events.timestamp(capture), image=jpeg
    )


# --- pre-computed events ---------------------------------------------------------------------------


def _cache_key() -> str:
    digest = hashlib.sha256()
    model = (REPO / "models" / "detector.onnx").resolve()
    for path in (model, VIDEO):
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update((REPO / "config" / "detector.yaml").read_bytes())
    return digest.hexdigest()[:12]


def _write(path: Path, phases: list[list[events_pb2.DetectionEvent]]) -> None:
    with path.with_suffix(".tmp").open("wb") as out:
        out.write(struct.pack("<II", len(phases), len(phases[0])))
        for sequence in phases:
            for event in sequence:
                data = event.SerializeToString()
                out.write(struct.pack("<I", len(data)) + data)
    path.with_suffix(".tmp").replace(path)


def _read(path: Path) -> list[list[events_pb2.DetectionEvent]]:
    data = path.read_bytes()
    count, length = struct.unpack_from("<II", data)
    offset = 8
    phases = []
    for _ in range(count):
        sequence = []
        for _ in range(length):
            (size,) = struct.unpack_from("<I", data, offset)
            offset += 4
            sequence.append(events_pb2.DetectionEvent.FromString(data[offset : offset + size]))
            offset += size
        phases.append(sequence)
    return phases


async def _compute(jpegs: list[bytes], length: int) -> list[list[events_pb2.DetectionEvent]]:
    settings = load_settings(DetectorSettings, REPO / "config")
    detector = Detector.from_settings(settings, InMemoryBus())
    await detector.start()
    phases: list[list[events_pb2.DetectionEvent]] = [[] for _ in range(PHASES)]
    try:
        t = time.time()
        for index in range(length):
            # The five phases go through the model together (one batch); each has its own tracker.
            frames = [frame(f"phase-{p}", index + 1, jpegs[p + PHASES * index], t + index * 0.5) for p in range(PHASES)]
            done = await asyncio.gather(*(detector.detect(f) for f in frames))
            for p, event in enumerate(done):
                phases[p].append(event)
    finally:
        await detector.stop()
    return phases


def detection_events(jpegs: list[bytes]) -> tuple[list[list[events_pb2.DetectionEvent]], Path, float]:
    """Per phase, the DetectionEvent of each frame of its sequence (cached); the cache file; compute seconds."""
    length = len(jpegs) // PHASES
    path = CACHE_DIR / f"system-events-{_cache_key()}.bin"
    if path.exists():
        phases = _read(path)
        if len(phases) == PHASES and len(phases[0]) == length:
            return phases, path, 0.0
    started = time.monotonic()
    phases = asyncio.run(_compute(jpegs, length))
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    _write(path, phases)
    return phases, path, time.monotonic() - started


def restamp(
    template: events_pb2.DetectionEvent, camera_id: str, frame_id: int, loop: int, now: float
) -> events_pb2.DetectionEvent:
    """A fresh event from a cached one: the camera's ids and times; ids made unique per loop of the video."""
    event = events_pb2.DetectionEvent()
    event.CopyFrom(template)
    event.camera_id = camera_id
    event.frame_id = frame_id
    event.event_id = events.event_id(camera_id, frame_id)
    event.capture_time.CopyFrom(events.timestamp(now))
    event.detected_time.CopyFrom(events.timestamp(now))
    if loop:
        shift = loop * 1_000_000
        for detection in event.detections:
            if detection.track_id:
                detection.track_id += shift
        for group in event.groups:
            group.group_id = f"{group.group_id}~{loop}"
            group.member_track_ids[:] = [t + shift for t in group.member_track_ids]
    return event
