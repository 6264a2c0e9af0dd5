"""Track kinematics against known motion: speeds, headings and acceleration over irregular and dropped frames,
metres through a known perspective homography, too little history, forgetting, and the pair measures per frame."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from riskwatch.domain import Calibration
from riskwatch_detector.config import CategoryName, ConflictsConfig, KinematicsConfig
from riskwatch_detector.kinematics import CameraMotion, PairMeasurer

# A camera looking down a street: ground (x, y) metres → image pixels by this homography (inverse of the fit).
_GROUND_TO_IMAGE = np.array([[40.0, 0.0, 640.0], [0.0, -10.0, 700.0], [0.0, 0.05, 1.0]])


def _to_image(ground: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    h = np.column_stack([ground, np.ones(len(ground))]) @ _GROUND_TO_IMAGE.T
    return np.asarray(h[:, :2] / h[:, 2:3], np.float64)


def _calibration() -> Calibration:
    ground = np.array([[-5.0, 0.0], [5.0, 0.0], [-5.0, 40.0], [5.0, 40.0], [0.0, 20.0]])
    return Calibration.fit([tuple(p) for p in _to_image(ground)], [tuple(p) for p in ground], version=1)


def _box_at(point: tuple[float, float], width: float = 40.0, height: float = 80.0) -> list[float]:
    x, y = point
    return [x - width / 2, y - height, x + width / 2, y]


def test_constant_velocity_over_irregular_and_dropped_frames() -> None:
    motion = CameraMotion(KinematicsConfig(window_s=1.5, min_samples=3, min_history_s=0.3))
    rng = np.random.default_rng(3)
    # Irregular intervals (40–160 ms) with two frames dropped: only the capture times matter.
    times = np.cumsum(rng.uniform(0.04, 0.16, 20))
    times = np.delete(times, [5, 6, 12])
    velocity = np.array([120.0, -50.0])  # px/s: right and up
    for t in times:
        point = np.array([100.0, 400.0]) + velocity * t
        result = motion.update([5], [_box_at(tuple(point))], float(t), None)
    assert result.estimated[0]
    np.testing.assert_allclose(result.velocity_px_s[0], velocity, atol=1e-6)
    np.testing.assert_allclose(result.position_px[0], [100 + 120 * times[-1], 400 - 50 * times[-1]], atol=1e-6)
    assert result.speed_px_s[0] == pytest.approx(130.0)
    # Box size √(40·80): speed in box sizes per second.
    assert result.speed_box_s[0] == pytest.approx(130.0 / math.sqrt(3200))
    # Compass in the image: 0 = up, 90 = right; (120, −50) is up-right, atan2(120, 50).
    assert result.heading_deg[0] == pytest.approx(math.degrees(math.atan2(120, 50)))
    np.testing.assert_allclose(result.acceleration_px_s2[0], [0.0, 0.0], atol=1e-6)
    assert not result.estimated_m[0]  # no calibration


def test_acceleration_of_a_braking_track() -> None:
    motion = CameraMotion(KinematicsConfig(window_s=2.0))
    for t in np.arange(0, 1.6, 0.1):
        x = 200 + 300 * t - 0.5 * 80 * t * t  # decelerating at 80 px/s²
        result = motion.update([1], [_box_at((x, 500.0))], float(t), None)
    np.testing.assert_allclose(result.acceleration_px_s2[0], [-80.0, 0.0], atol=1e-6)


def test_too_little_history_is_not_estimated() -> None:
    motion = CameraMotion(KinematicsConfig(min_samples=3, min_history_s=0.3))
    first = motion.update([9], [_box_at((100, 100))], 10.0, None)
    assert not first.estimated[0] and first.samples[0] == 1
    # Three points, but only 0.2 s of history.
    motion.update([9], [_box_at((101, 100))], 10.1, None)
    third = motion.update([9], [_box_at((102, 100))], 10.2, None)
    assert third.samples[0] == 3 and third.history_s[0] == pytest.approx(0.2)
    assert not third.estimated[0]
    message = third.to_proto(0)
    assert not message.estimated and message.samples == 3
    assert not message.HasField("velocity_px_s") and message.speed_px_s == 0
    fourth = motion.update([9], [_box_at((103, 100))], 10.3, None)
    assert fourth.estimated[0] and fourth.to_proto(0).estimated


def test_metres_through_a_perspective_homography() -> None:
    # A vehicle drives away from the camera along +y at 10 m/s: in the image it slows and shrinks, on the ground
    # its speed is constant. Projecting before fitting gives 10 m/s exactly.
    calibration = _calibration()
    motion = CameraMotion(KinematicsConfig())
    for t in np.arange(0, 1.0, 0.1):
        image = _to_image(np.array([[1.0, 5.0 + 10.0 * t]]))[0]
        result = motion.update([4], [_box_at(tuple(image))], float(t), calibration)
    assert result.estimated_m[0]
    assert result.speed_m_s[0] == pytest.approx(10.0, rel=1e-4)
    np.testing.assert_allclose(result.velocity_m_s[0], [0.0, 10.0], atol=1e-3)
    np.testing.assert_allclose(result.position_m[0], [1.0, 14.0], atol=1e-3)
    # Ground +y is compass 0 (the fit may land just below 360).
    assert min(result.ground_heading_deg[0], 360 - result.ground_heading_deg[0]) == pytest.approx(0.0, abs=0.01)
    message = result.to_proto(0)
    assert message.speed_m_s == pytest.approx(10.0, rel=1e-4)
    # The image-plane speed is biased by perspective (it changes along the way); the metres are not.
    assert abs(result.speed_px_s[0] / 10.0 - 1) > 0.01


def test_a_changed_calibration_reprojects_the_history() -> None:
    motion = CameraMotion(KinematicsConfig())
    for t in np.arange(0, 1.0, 0.1):
        image = _to_image(np.array([[0.0, 10.0 + 4.0 * t]]))[0]
        before = motion.update([2], [_box_at(tuple(image))], float(t), None if t < 0.5 else _calibration())
    # Calibrated halfway through: the earlier points count in metres too.
    assert before.samples[0] == 10 and before.estimated_m[0]
    assert before.speed_m_s[0] == pytest.approx(4.0, rel=1e-4)


def test_forgotten_tracks_start_over_and_rows_are_reused() -> None:
    motion = CameraMotion(KinematicsConfig(), capacity=2)
    for t in (0.0, 0.1, 0.2, 0.3, 0.4):
        motion.update([1, 2, 3], [_box_at((10, 10)), _box_at((50, 10)), _box_at((90, 10))], t, None)
    assert motion.track_count == 3
    assert len(motion.trail(2)) == 5
    motion.keep({1, 3})
    assert motion.track_count == 2 and len(motion.trail(2)) == 0
    again = motion.update([2], [_box_at((50, 10))], 0.5, None)
    assert again.samples[0] == 1 and not again.estimated[0]


def test_an_outlier_point_is_left_out() -> None:
    motion = CameraMotion(KinematicsConfig(window_s=2.0, outlier_sigma=3.0))
    for i, t in enumerate(np.arange(0, 1.5, 0.1)):
        x = 100 + 50 * t + (60 if i == 7 else 0)  # one box jumps (occlusion) for one frame
        result = motion.update([1], [_box_at((x, 300))], float(t), None)
    assert result.samples[0] == 14
    assert result.velocity_px_s[0, 0] == pytest.approx(50.0, abs=1e-6)


def test_out_of_order_frames_are_ignored() -> None:
    motion = CameraMotion(KinematicsConfig())
    for t in (1.0, 1.1, 1.2, 1.3):
        motion.update([1], [_box_at((100 + 100 * t, 300))], t, None)
    late = motion.update([1], [_box_at((0, 0))], 1.15, None)
    assert late.samples[0] == 2  # fitted as of 1.15 s (1.0 and 1.1); the late point is not stored
    now = motion.update([1], [_box_at((100 + 100 * 1.4, 300))], 1.4, None)
    assert now.samples[0] == 5 and now.velocity_px_s[0, 0] == pytest.approx(100.0)


def test_pairs_of_a_calibrated_frame_are_in_metres() -> None:
    # A pedestrian crossing the street at 1.5 m/s and a vehicle heading for the same point at 10 m/s.
    calibration = _calibration()
    motion = CameraMotion(KinematicsConfig())
    categories = [CategoryName.PEDESTRIAN, CategoryName.VEHICLE, CategoryName.PEDESTRIAN]
    for t in np.arange(0, 1.0, 0.1):
        ground = np.array([[-3.0 + 1.5 * t, 20.0], [0.0, 4.0 + 10.0 * t], [4.0, 30.0]])
        image = _to_image(ground)
        boxes = [_box_at(tuple(p)) for p in image]
        result = motion.update([1, 2, 3], boxes, float(t), calibration)
    config = ConflictsConfig(pairs=["pedestrian-vehicle"])
    pairs = PairMeasurer(config).measure(result, categories, boxes)
    # Only the two pedestrian–vehicle pairs are measured.
    assert sorted(zip(pairs.first.tolist(), pairs.second.tolist(), strict=True)) == [(0, 1), (1, 2)]
    k = next(i for i in range(len(pairs)) if (pairs.first[i], pairs.second[i]) == (0, 1))
    conflict = pairs.conflict(k, result.track_ids, categories)
    assert conflict.calibrated and conflict.kind.value == "crossing"
    # At t = 0.9: pedestrian at x = −1.65 reaches x = 0 in 1.1 s; the vehicle at y = 13 reaches 20 in 0.7 s.
    assert conflict.pet_s == pytest.approx(0.4, abs=1e-3)
    assert conflict.ttc_s is not None and conflict.drac_m_s2 is not None
    assert conflict.distance == pytest.approx(math.hypot(1.65, 7.0) - 0.3 - 1.2, abs=1e-3)
