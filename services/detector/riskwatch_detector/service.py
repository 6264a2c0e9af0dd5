"""The detector: frames in; detections with track ids and kinematics, groups with stable ids, features, conflicts and
crops out."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from riskwatch import events
from riskwatch.bus import EventBus
from riskwatch.domain import Calibration, CalibrationError, Conflict, GroupFeatures, check_camera_id
from riskwatch.errors import FrameDropped, InvalidFrame, InvalidRequest, LimitReached, Unavailable
from riskwatch.imaging import Image, crop_region, decode_image, encode_jpeg
from riskwatch.telemetry.metrics import forget_camera
from riskwatch.v1 import detector_pb2, events_pb2
from riskwatch_detector import metrics
from riskwatch_detector.backends import Backend, RawDetections, create_backend
from riskwatch_detector.batching import CameraBatcher
from riskwatch_detector.config import CategoryName, DetectorConfig, DetectorSettings
from riskwatch_detector.grouping import Cluster, GroupIdentity, cluster
from riskwatch_detector.kinematics import CameraMotion, FramePairs, Motion, PairMeasurer
from riskwatch_detector.tracking import CameraTracker

log = logging.getLogger(__name__)

# Trails on crops: yellow (BGR), visible on asphalt and on people alike.
_TRAIL_BGR = (0, 220, 255)

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
    # When the frame arrived (the detector's clock): its time for kinematics when it has no capture time.
    arrival_s: float = 0.0
    calibration: events_pb2.GroundCalibration | None = None

    @property
    def time_s(self) -> float:
        return self.arrival_s if self.capture_time_s is None else self.capture_time_s


@dataclass(slots=True)
class _CameraState:
    tracker: CameraTracker
    groups: GroupIdentity
    motion: CameraMotion
    last_seen: float = field(default_factory=time.monotonic)
    # The last calibration message seen and what came of it (refitted only when the message changes).
    calibration_message: events_pb2.GroundCalibration | None = None
    calibration: Calibration | None = None
    calibration_invalid: bool = False


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
        self._pairs = PairMeasurer(config.conflicts)
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
                calibration = frame.calibration if frame.HasField("calibration") else None
                job = FrameJob(camera_id, frame.frame_id, capture, image, self._clock(), calibration)
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
        """Track, measure motion and conflicts, group and crop one frame; complete but for times set on the way out."""
        config = self._config
        raw = self._of_interest(raw)
        names = [self._class_names.get(int(c), str(int(c))) for c in raw.class_ids]
        categories = [config.category(name) for name in names]
        state = self._camera(job.camera_id)
        track_ids = state.tracker.update(raw, job.capture_time_s)
        # Only confirmed tracks have motion and form groups: a group's identity is its members' track ids.
        tracked = np.flatnonzero(track_ids > 0)
        tracked_categories = [categories[i] for i in tracked]
        started = time.perf_counter()
        motion = state.motion.update(track_ids[tracked], raw.boxes[tracked], job.time_s, self._calibration(state, job))
        state.motion.keep(state.tracker.live_ids())
        pairs = (
            self._pairs.measure(motion, tracked_categories, raw.boxes[tracked]) if config.conflicts.enabled else None
        )
        metrics.MOTION.observe(time.perf_counter() - started)

        event = events_pb2.DetectionEvent(
            event_id=events.event_id(job.camera_id, job.frame_id),
            camera_id=job.camera_id,
            frame_id=job.frame_id,
            image_width=int(job.image.shape[1]),
            image_height=int(job.image.shape[0]),
            model=self._model_name,
        )
        motion_index = {int(i): k for k, i in enumerate(tracked)}
        for i in range(len(raw)):
            x1, y1, x2, y2 = (float(v) for v in raw.boxes[i])
            detection = events_pb2.Detection(
                track_id=int(track_ids[i]),
                class_name=names[i],
                category=_CATEGORY_PROTO[categories[i]],
                confidence=float(raw.scores[i]),
                box=events_pb2.BoundingBox(x1=x1, y1=y1, x2=x2, y2=y2),
            )
            if i in motion_index:
                motion.write(motion_index[i], detection.kinematics)  # in place: no message built to be copied
            event.detections.append(detection)

        clusters = cluster(raw.boxes[tracked], tracked_categories, config.grouping, self._links(pairs))
        members = [frozenset(int(track_ids[tracked[m]]) for m in c.members) for c in clusters]
        group_ids = state.groups.assign(members)
        trails = self._trails(job.image, state.motion, members) if config.crop.enabled else job.image
        group_of_pair = _group_of_pairs(clusters, pairs, len(tracked))
        for index, (group_id, found, member_ids) in enumerate(zip(group_ids, clusters, members, strict=True)):
            features, conflict = _motion_of_group(
                found, index, motion=motion, pairs=pairs, group_of_pair=group_of_pair, categories=tracked_categories
            )
            group = events_pb2.Group(
                group_id=group_id,
                member_track_ids=sorted(member_ids),
                box=events_pb2.BoundingBox(x1=found.box[0], y1=found.box[1], x2=found.box[2], y2=found.box[3]),
                features=features.to_proto(),
            )
            if conflict is not None:
                group.conflict.CopyFrom(conflict.to_proto())
                metrics.CONFLICTS.labels(job.camera_id, conflict.kind.value).inc()
            if features.min_ttc_s is not None:
                metrics.GROUP_MIN_TTC.observe(features.min_ttc_s)
            if config.crop.enabled:
                crop = crop_region(trails, found.box, margin=config.crop.margin, max_side=config.crop.max_side)
                group.crop_jpeg = encode_jpeg(crop, config.crop.jpeg_quality)
            event.groups.append(group)
        return event

    def _calibration(self, state: _CameraState, job: FrameJob) -> Calibration | None:
        """The camera's fitted calibration as of this frame; None when it has none or the frame's is invalid."""
        message = job.calibration
        if message != state.calibration_message:
            state.calibration_message = message
            state.calibration, state.calibration_invalid = None, False
            if message is not None:
                try:
                    state.calibration = Calibration.from_proto(message)
                except CalibrationError as error:
                    state.calibration_invalid = True
                    log.warning(
                        "camera %s: calibration version %d is invalid, measuring in the image only: %s",
                        job.camera_id,
                        message.version,
                        error,
                    )
        if state.calibration_invalid:
            metrics.CALIBRATION_INVALID.labels(job.camera_id).inc()
        return state.calibration

    def _links(self, pairs: FramePairs | None) -> npt.NDArray[np.int64]:
        """Pairs (indices into the confirmed tracks) whose TTC or PET is within the link bounds: one group each."""
        if pairs is None:
            return np.zeros((0, 2), np.int64)
        bounds = self._config.conflicts
        with np.errstate(invalid="ignore"):
            close = (pairs.measures.ttc_s <= bounds.link_ttc_s) | (pairs.measures.pet_s <= bounds.link_pet_s)
        return np.column_stack([pairs.first[close], pairs.second[close]])

    def _trails(self, image: Image, motion: CameraMotion, groups: Sequence[frozenset[int]]) -> Image:
        """The frame with the recent path of every group member drawn on it (a copy), or the frame itself."""
        if not self._config.crop.draw_trails or not groups:
            return image
        paths = [motion.trail(t) for g in groups for t in g]
        paths = [np.round(p).astype(np.int32) for p in paths if len(p) >= 2]
        if not paths:
            return image
        drawn = image.copy()
        thickness = max(2, round(max(image.shape[:2]) / 400))
        cv2.polylines(drawn, paths, isClosed=False, color=_TRAIL_BGR, thickness=thickness, lineType=cv2.LINE_AA)
        for path in paths:
            cv2.circle(drawn, (int(path[-1, 0]), int(path[-1, 1])), thickness * 2, _TRAIL_BGR, -1, cv2.LINE_AA)
        return drawn

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
                forget_camera(
                    stale,
                    metrics.DETECTIONS,
                    metrics.FRAMES,
                    metrics.FRAMES_DROPPED,
                    metrics.GROUPS,
                    metrics.CONFLICTS,
                    metrics.CALIBRATION_INVALID,
                )
            state = _CameraState(
                CameraTracker(self._config.tracking),
                GroupIdentity(self._config.grouping, self._group_id_prefix),
                CameraMotion(self._config.kinematics),
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


def _group_of_pairs(clusters: Sequence[Cluster], pairs: FramePairs | None, count: int) -> npt.NDArray[np.int64]:
    """For each measured pair, the index of the group holding both its tracks; −1 when they are in no one group."""
    if pairs is None:
        return np.zeros(0, np.int64)
    label = np.full(count, -1, np.int64)
    for index, found in enumerate(clusters):
        label[list(found.members)] = index
    return np.where(label[pairs.first] == label[pairs.second], label[pairs.first], -1)


def _motion_of_group(
    found: Cluster,
    index: int,
    *,
    motion: Motion,
    pairs: FramePairs | None,
    group_of_pair: npt.NDArray[np.int64],
    categories: Sequence[CategoryName],
) -> tuple[GroupFeatures, Conflict | None]:
    """The group's features with its motion measures, and its worst conflict (smallest TTC, then smallest PET)."""
    members = np.asarray(found.members, np.int64)
    speeds = motion.speed_box_s[members][motion.estimated[members]]
    features = dataclasses.replace(found.features, max_speed_box_s=float(speeds.max()) if len(speeds) else None)
    if pairs is None:
        return features, None
    inside = np.flatnonzero((group_of_pair == index) & pairs.has_measure)
    if len(inside) == 0:
        return features, None
    m = pairs.measures
    ttc, pet, drac = m.ttc_s[inside], m.pet_s[inside], m.drac[inside]
    worst = inside[np.lexsort((np.nan_to_num(pet, nan=np.inf), np.nan_to_num(ttc, nan=np.inf)))[0]]
    features = dataclasses.replace(
        features, min_ttc_s=_smallest(ttc), min_pet_s=_smallest(pet), max_drac_m_s2=_smallest(-drac, sign=-1)
    )
    return features, pairs.conflict(int(worst), motion.track_ids, categories)


def _smallest(values: npt.NDArray[np.float64], sign: float = 1.0) -> float | None:
    """sign × the smallest finite value; None when there is none."""
    finite = values[np.isfinite(values)]
    return sign * float(finite.min()) if len(finite) else None
