"""Tracking keeps ids across consecutive frames of a real video."""

from __future__ import annotations

import numpy as np

from riskwatch.imaging import Image
from riskwatch_detector.backends import Backend, RawDetections
from riskwatch_detector.config import TrackingConfig
from riskwatch_detector.tracking import CameraTracker


def test_most_ids_survive_ten_consecutive_vtest_frames(onnx_backend: Backend, vtest_frames: list[Image]) -> None:
    tracker = CameraTracker(TrackingConfig(frame_rate=10))
    detections = onnx_backend.infer(vtest_frames[:10])
    ids_per_frame = [set(tracker.update(d, 100.0 + i * 0.1).tolist()) - {0} for i, d in enumerate(detections)]
    # Confirmed from the second frame on.
    first = ids_per_frame[1]
    assert len(first) >= 3
    for later in ids_per_frame[2:]:
        assert len(first & later) >= 0.7 * len(first)
    kept_to_the_end = first & ids_per_frame[-1]
    assert len(kept_to_the_end) >= 0.7 * len(first)


def _boxes(*rows: tuple[float, float, float, float]) -> RawDetections:
    boxes = np.array(rows, np.float32).reshape(-1, 4)
    return RawDetections(boxes, np.full(len(boxes), 0.9, np.float32), np.zeros(len(boxes), np.int64))


def test_ids_follow_their_objects_whatever_the_detection_order() -> None:
    tracker = CameraTracker(TrackingConfig())
    a, b = (10.0, 10.0, 50.0, 110.0), (300.0, 10.0, 340.0, 110.0)
    tracker.update(_boxes(a, b), 1.0)
    first = tracker.update(_boxes(a, b), 1.1)
    assert all(first > 0)
    shifted_a, shifted_b = (12.0, 10.0, 52.0, 110.0), (302.0, 10.0, 342.0, 110.0)
    swapped = tracker.update(_boxes(shifted_b, shifted_a), 1.2)
    assert swapped.tolist() == [first[1], first[0]]


def test_unconfirmed_objects_have_track_id_zero() -> None:
    tracker = CameraTracker(TrackingConfig())
    ids = tracker.update(_boxes((10.0, 10.0, 50.0, 110.0)), 1.0)
    assert ids.tolist() == [0]
    assert tracker.update(RawDetections.empty(), 1.1).tolist() == []


def test_out_of_order_capture_time_leaves_ids_unset_instead_of_failing() -> None:
    tracker = CameraTracker(TrackingConfig())
    box = (10.0, 10.0, 50.0, 110.0)
    tracker.update(_boxes(box), 5.0)
    tracker.update(_boxes(box), 5.1)
    assert tracker.update(_boxes(box), 4.0).tolist() == [0]
    assert tracker.update(_boxes(box), 5.2).tolist()[0] > 0
