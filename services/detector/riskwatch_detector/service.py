"""The detector: frames in; detections with track ids, groups with stable ids, features and crops out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from riskwatch import events
from riskwatch.bus import EventBus
from riskwatch.domain import check_camera_id
from riskwatch.errors import FrameDropped, InvalidFrame, InvalidRequest, LimitReached, Unavailable
from riskwatch.imaging import Image, crop_region, decode_image, encode_jpeg
from riskwatch.telemetry.metrics import forget_camera
from riskwatch.v1 import detector_pb2, events_pb2
from riskwatch_detector import metrics
from riskwatch_detector.backends import Backend, RawDetections, create_backend
from riskwatch_detector.batching import CameraBatcher
from riskwatch_detector.config import CategoryName, DetectorConfig, DetectorSettings
from riskwatch_detector.grouping import GroupIdentity, cluster
from riskwatch_detector.tracking import CameraTracker

log = logging.getLogger(__name__)

_CATEGORY_PROTO = {
    CategoryName.VEHICLE: events_pb2.CATEGORY_VEHICLE,
    CategoryName.PEDESTRIAN: events_pb2.CATEGORY_PEDESTRIAN,
    CategoryName.TWO_WHEELER: events_pb2.CATEGORY_TWO_WHEELER,
    CategoryName.OTHER: events_pb2.CATEGORY_OTHER,
}


@dataclass(frozen=True, slots=True)
class FrameJob:
    """A decoded frame on its way through the model."""

    camera_id: str
    frame_id: int
    capture_time_s: float | None
    image: Image


@dataclass(slots=True)
class _CameraState:
    tracker: CameraTracker
    groups: GroupIdentity
    last_seen: float = field(default_factory=time.monotonic)


def _group_id_prefix() -> str:
    """Group ids restart with the process; a per-start prefix keeps them from colliding with earlier ones."""
    stamp = int(time.time()) % (36**5)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    for _ in range(5):
        stamp, rest = divmod(stamp, 36)
        text = digits[rest] + text
    return f"g{text}-"


class Detector:
    """Decodes, batches across cameras, infers, tracks, groups, publishes to detection-results and returns the event."""

    def __init__(
        self,
        config: DetectorConfig,
        backend: Backend,
        bus: EventBus,
        topic: str,
        *,
        group_id_prefix: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._backend = backend
        self._bus = bus
        self._topic = topic
        self._clock = clock
        self._group_id_prefix = group_id_prefix if group_id_prefix is not None else _group_id_prefix()
        self._class_names = dict(backend.class_names)
        self._model_name = config.display_model_name
        # Touched only by the post-processing thread, so per-camera state needs no lock.
        self._cameras: dict[str, _CameraState] = {}
        self._batcher: CameraBatcher[FrameJob, RawDetections, events_pb2.DetectionEvent] = CameraBatcher(
            self._infer, self._analyse, config.batching, on_drop=self._dropped, on_batch=self._batched
        )
        self._in_flight = 0
        # Bytes held by frames between arrival and their batch's result (max_waiting_bytes).
        self._waiting_bytes = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._running = False

    @classmethod
    def from_settings(cls, settings: DetectorSettings, bus: EventBus) -> Detector:
        """The real detector: the configured backend with its model loaded."""
        topic = settings.kafka.topics.detection_results.name
        return cls(settings.detector, create_backend(settings.detector), bus, topic)

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def class_names(self) -> dict[int, str]:
        return dict(self._class_names)

    async def start(self) -> None:
        """Warm the model up (first runs allocate), then start taking frames."""
        size = self._config.input_size
        warm = np.full((size, size, 3), 114, np.uint8)
        await asyncio.to_thread(self._backend.infer, [warm])
        await self._batcher.start()
        self._running = True
        log.info("detector ready: model %s, classes %s", self._model_name, self._class_names)

    async def stop(self) -> None:
        """Stop taking frames, finish those already accepted (and their publishes), release the model."""
        self._running = False
        # Frames already accepted (even those still being decoded) go through the model and get published.
        await self._idle.wait()
        await self._batcher.stop()
        self._backend.close()

    async def detect(self, frame: detector_pb2.Frame) -> events_pb2.DetectionEvent:
        """The frame's DetectionEvent, published (acknowledged by the bus) before it is returned.

        Raises InvalidFrame for an empty, corrupt or oversized image (or no camera id), InvalidRequest for an
        invalid camera id, FrameDropped when a newer frame of the same camera overtook this one, LimitReached when
        frames of max_waiting_bytes already wait, Unavailable while the detector is not running.
        """
        if not self._running:
            raise Unavailable("detector is not running (starting or shutting down)")
        received = time.perf_counter()
        camera_id = frame.camera_id
        self._in_flight += 1
        self._idle.clear()
        try:
            if not camera_id:
                metrics.FRAMES.labels("", "invalid").inc()
                raise InvalidFrame("frame has no camera_id")
            try:
                check_camera_id(camera_id)
            except InvalidRequest:
                metrics.FRAMES.labels("", "invalid").inc()  # not its id as a label: it could be anything
                raise
            held = self._hold(camera_id, len(frame.image))
            try:
                try:
                    image = await asyncio.to_thread(
                        decode_image,
                        frame.image,
                        max_bytes=self._config.max_image_bytes,
                        max_pixels=self._config.max_image_pixels,
                    )
                except InvalidFrame:
                    metrics.FRAMES.labels(camera_id, "invalid").inc()
                    raise
                held += self._hold(camera_id, int(image.nbytes))
                capture = events.seconds(frame.capture_time) if frame.HasField("capture_time") else None
                job = FrameJob(camera_id, frame.frame_id, capture, image)
                del image  # only the job holds the pixels, so they go as soon as the batcher lets go of the job
                try:
                    event = await self._batcher.submit(camera_id, frame.frame_id, job)
                except FrameDropped:
                    del job  # the exception's traceback keeps this frame's locals alive for as long as it lives
                    raise
            finally:
                self._waiting_bytes -= held
            if capture is None:
                event.capture_time.CopyFrom(events.timestamp(self._clock()))
            else:
                event.capture_time.CopyFrom(frame.capture_time)
            latency = time.perf_counter() - received
            event.detector_latency_ms = latency * 1000
            event.detected_time.CopyFrom(events.timestamp(self._clock()))
            await self._bus.publish(self._topic, camera_id, event.SerializeToString())
            metrics.LATENCY.observe(latency)
            metrics.FRAMES.labels(camera_id, "processed").inc()
            metrics.DETECTIONS.labels(camera_id).inc(len(event.detections))
            metrics.GROUPS.labels(camera_id).inc(len(event.groups))
            return event
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    def _hold(self, camera_id: str, size: int) -> int:
        """Count `size` bytes as waiting, or refuse the frame (LimitReached) if that would pass max_waiting_bytes."""
        limit = self._config.batching.max_waiting_bytes
        if self._waiting_bytes + size > limit:
            metrics.FRAMES.labels(camera_id, "dropped").inc()
            raise LimitReached(
                f"frame of camera {camera_id!r} refused: {self._waiting_bytes} bytes of frames already wait "
                f"(max_waiting_bytes {limit})"
            )
        self._waiting_bytes += size
        return size

    # --- on the inference thread -----------------------------------------------------------------

    def _infer(self, jobs: Sequence[FrameJob]) -> list[RawDetections]:
        return self._backend.infer([job.image for job in jobs])

    # --- on the post-processing thread -----------------------------------------------------------

    def _analyse(self, job: FrameJob, raw: RawDetections) -> events_pb2.DetectionEvent:
        """Track, group and crop one frame; the event is complete except for times set on the way out."""
        config = self._config
        raw = self._of_interest(raw)
        names = [self._class_names.get(int(c), str(int(c))) for c in raw.class_ids]
        categories = [config.category(name) for name in names]
        state = self._camera(job.camera_id)
        track_ids = state.tracker.update(raw, job.capture_time_s)

        event = events_pb2.DetectionEvent(
            event_id=events.event_id(job.camera_id, job.frame_id),
            camera_id=job.camera_id,
            frame_id=job.frame_id,
            image_width=int(job.image.shape[1]),
            image_height=int(job.image.shape[0]),
            model=self._model_name,
        )
        for i in range(len(raw)):
            x1, y1, x2, y2 = (float(v) for v in raw.boxes[i])
            event.detections.append(
                events_pb2.Detection(
                    track_id=int(track_ids[i]),
                    class_name=names[i],
                    category=_CATEGORY_PROTO[categories[i]],
                    confidence=float(raw.scores[i]),
                    box=events_pb2.BoundingBox(x1=x1, y1=y1, x2=x2, y2=y2),
                )
            )

        # Only confirmed tracks form groups: a group's identity is its members' track ids.
        tracked = np.flatnonzero(track_ids > 0)
        clusters = cluster(raw.boxes[tracked], [categories[i] for i in tracked], config.grouping)
        members = [frozenset(int(track_ids[tracked[m]]) for m in c.members) for c in clusters]
        group_ids = state.groups.assign(members)
        for group_id, found, member_ids in zip(group_ids, clusters, members, strict=True):
            group = events_pb2.Group(
                group_id=group_id,
                member_track_ids=sorted(member_ids),
                box=events_pb2.BoundingBox(x1=found.box[0], y1=found.box[1], x2=found.box[2], y2=found.box[3]),
                features=found.features.to_proto(),
            )
            if config.crop.enabled:
                crop = crop_region(job.image, found.box, margin=config.crop.margin, max_side=config.crop.max_side)
                group.crop_jpeg = encode_jpeg(crop, config.crop.jpeg_quality)
            event.groups.append(group)
        return event

    def _of_interest(self, raw: RawDetections) -> RawDetections:
        wanted = self._config.classes_of_interest
        if not wanted:
            return raw
        keep = np.array([self._class_names.get(int(c)) in wanted for c in raw.class_ids], dtype=bool)
        return RawDetections(raw.boxes[keep], raw.scores[keep], raw.class_ids[keep])

    def _camera(self, camera_id: str) -> _CameraState:
        now = time.monotonic()
        state = self._cameras.get(camera_id)
        if state is None:
            idle = self._config.tracking.camera_idle_s
            for stale in [c for c, s in self._cameras.items() if now - s.last_seen > idle]:
                log.info("forgetting tracks and groups of camera %s (idle for over %.0fs)", stale, idle)
                del self._cameras[stale]
                forget_camera(stale, metrics.DETECTIONS, metrics.FRAMES, metrics.FRAMES_DROPPED, metrics.GROUPS)
            state = _CameraState(
                CameraTracker(self._config.tracking), GroupIdentity(self._config.grouping, self._group_id_prefix)
            )
            self._cameras[camera_id] = state
        state.last_seen = now
        return state

    # --- metrics callbacks (event loop) ----------------------------------------------------------

    @staticmethod
    def _dropped(camera_id: str, frame_id: int) -> None:
        metrics.FRAMES_DROPPED.labels(camera_id).inc()
        metrics.FRAMES.labels(camera_id, "dropped").inc()

    @staticmethod
    def _batched(size: int, seconds: float) -> None:
        metrics.BATCH_SIZE.observe(size)
        metrics.INFERENCE.observe(seconds)
