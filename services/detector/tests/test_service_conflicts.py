"""The Detector end to end with motion: a pedestrian and a car on a collision course on a calibrated camera give
kinematics on their detections and one group with the analytic TTC, DRAC and speeds; a bad calibration does not
fail the frame; crops show the members' trails."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from riskwatch import events
from riskwatch.bus import InMemoryBus
from riskwatch.domain import Calibration, Conflict, ConflictKind
from riskwatch.v1 import detector_pb2, events_pb2
from riskwatch_detector.config import CropConfig, DetectorConfig
from riskwatch_detector.service import Detector
from riskwatch_detector.testing import ScriptedBackend, ScriptedBox, scene_png

PERSON, CAR = 0, 1
FPS = 10
FRAMES = 8
# A top-down camera: 20 px per metre, ground +y is image up (x_m = x_px / 20, y_m = (600 − y_px) / 20).
PX_PER_M = 20.0
# The pedestrian walks east at 3 m/s from x = 100 px; the car drives west at 10 m/s from x = 700 px; both with
# their ground points on the row y = 400 px. A second pedestrian stands far off their path.
PED_M_S, CAR_M_S = 3.0, 10.0


def _scene(k: int) -> list[ScriptedBox]:
    t = k / FPS
    ped_x = 100 + PED_M_S * PX_PER_M * t
    car_x = 700 - CAR_M_S * PX_PER_M * t
    return [
        (ped_x - 20, 320, ped_x + 20, 400, PERSON),
        (car_x - 100, 300, car_x + 100, 400, CAR),
        (380, 60, 420, 140, PERSON),
    ]


def _calibration(valid: bool = True) -> events_pb2.GroundCalibration:
    image = [(0.0, 600.0), (800.0, 600.0), (800.0, 0.0), (0.0, 0.0)]
    ground = [(x / PX_PER_M, (600 - y) / PX_PER_M) for x, y in image]
    if valid:
        return Calibration.fit(image, ground, version=3).to_proto()
    # Collinear image points: Calibration.from_proto refuses them.
    message = Calibration.fit(image, ground, version=4).to_proto()
    for i, point in enumerate(message.image_points):
        point.x, point.y = 100.0 * i, 100.0 * i
    return message


async def _run(
    config: DetectorConfig, calibration: events_pb2.GroundCalibration | None
) -> list[events_pb2.DetectionEvent]:
    detector = Detector(
        config, ScriptedBackend({k: _scene(k) for k in range(FRAMES)}), InMemoryBus(), "t", group_id_prefix="g"
    )
    await detector.start()
    out = []
    for k in range(FRAMES):
        message = detector_pb2.Frame(camera_id="cam-m", frame_id=k, image=scene_png(k))
        message.capture_time.CopyFrom(events.timestamp(1_700_000_000 + k / FPS))
        if calibration is not None:
            message.calibration.CopyFrom(calibration)
        out.append(await detector.detect(message))
    await detector.stop()
    return out


@pytest.fixture
def config(tmp_path_factory: pytest.TempPathFactory) -> DetectorConfig:
    return DetectorConfig(model_path=tmp_path_factory.mktemp("model") / "scripted.onnx", input_size=64)


def _expected_ttc(t: float) -> float:
    # Centres (7.1 m apart at t = 0.7 s, …) close at 13 m/s; footprint radii 0.3 (pedestrian) + 1.2 (vehicle).
    gap = (700 - 100) / PX_PER_M - (PED_M_S + CAR_M_S) * t
    return (gap - 0.3 - 1.2) / (PED_M_S + CAR_M_S)


async def test_collision_course_gives_group_conflict_and_kinematics(config: DetectorConfig) -> None:
    out = await _run(config, _calibration())
    last = out[-1]
    by_category = {d.category: d for d in last.detections if d.box.y2 == 400}
    ped, car = by_category[events_pb2.CATEGORY_PEDESTRIAN], by_category[events_pb2.CATEGORY_VEHICLE]
    assert ped.kinematics.estimated and car.kinematics.estimated
    assert ped.kinematics.speed_m_s == pytest.approx(PED_M_S, rel=1e-3)
    assert car.kinematics.speed_m_s == pytest.approx(CAR_M_S, rel=1e-3)
    assert ped.kinematics.ground_heading_deg == pytest.approx(90, abs=0.1)  # east
    assert car.kinematics.ground_heading_deg == pytest.approx(270, abs=0.1)  # west
    assert car.kinematics.heading_deg == pytest.approx(270, abs=0.1)  # image left
    assert car.kinematics.speed_px_s == pytest.approx(CAR_M_S * PX_PER_M, rel=1e-3)
    assert car.kinematics.speed_box_s == pytest.approx(CAR_M_S * PX_PER_M / math.sqrt(200 * 100), rel=1e-3)
    # Too far apart for grouping by closeness (≈ 3 box sizes, the bound is 1.5), grouped by their conflict.
    (group,) = [g for g in last.groups if car.track_id in g.member_track_ids]
    assert sorted(group.member_track_ids) == sorted([ped.track_id, car.track_id])
    conflict = Conflict.from_proto(group.conflict)
    assert conflict.kind is ConflictKind.HEAD_ON and conflict.calibrated
    assert {conflict.track_a, conflict.track_b} == {ped.track_id, car.track_id}
    t = (FRAMES - 1) / FPS
    assert conflict.ttc_s == pytest.approx(_expected_ttc(t), rel=1e-3)
    assert conflict.pet_s is None  # one line: no crossing point
    assert conflict.drac_m_s2 == pytest.approx(13 / (2 * _expected_ttc(t)), rel=1e-3)
    assert conflict.closing_speed == pytest.approx(13, rel=1e-3)
    features = group.features
    assert features.min_ttc_s == pytest.approx(_expected_ttc(t), rel=1e-3)
    assert features.max_drac_m_s2 == pytest.approx(conflict.drac_m_s2, rel=1e-5)
    assert not features.HasField("min_pet_s")
    assert features.max_speed_box_s == pytest.approx(car.kinematics.speed_box_s, rel=1e-5)
    # The standing pedestrian is measured (not moving, far away) but in no group.
    assert all(len(g.member_track_ids) == 2 for g in last.groups)
    assert "TTC 1.5 s" in conflict.describe()


async def test_first_frames_have_too_little_history(config: DetectorConfig) -> None:
    out = await _run(config, _calibration())
    assert all(d.track_id == 0 and not d.HasField("kinematics") for d in out[0].detections)
    second = [d for d in out[1].detections if d.track_id > 0]
    assert second and all(not d.kinematics.estimated and d.kinematics.samples <= 2 for d in second)
    assert all(not g.HasField("conflict") for g in out[1].groups)


async def test_an_invalid_calibration_measures_in_the_image(config: DetectorConfig) -> None:
    before = REGISTRY.get_sample_value("detector_calibration_invalid_total", {"camera_id": "cam-m"}) or 0
    out = await _run(config, _calibration(valid=False))
    after = REGISTRY.get_sample_value("detector_calibration_invalid_total", {"camera_id": "cam-m"}) or 0
    assert after - before == FRAMES
    car = next(d for d in out[-1].detections if d.category == events_pb2.CATEGORY_VEHICLE)
    assert car.kinematics.estimated and not car.kinematics.HasField("speed_m_s")
    (group,) = [g for g in out[-1].groups if car.track_id in g.member_track_ids]
    conflict = Conflict.from_proto(group.conflict)
    assert not conflict.calibrated and conflict.drac_m_s2 is None
    # In the image the footprints are half a box wide: radii 20 + 100 px, centres closing at 260 px/s.
    gap_px = 600 - 260 * (FRAMES - 1) / FPS
    assert conflict.ttc_s == pytest.approx((gap_px - 120) / 260, rel=1e-3)


async def test_crops_show_the_members_trails(config: DetectorConfig) -> None:
    def yellow(event: events_pb2.DetectionEvent) -> int:
        group = next(g for g in event.groups if g.HasField("conflict"))
        crop = cv2.imdecode(np.frombuffer(group.crop_jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert crop is not None
        b, g, r = (crop[..., i].astype(int) for i in range(3))
        return int(np.sum((b < 90) & (g > 170) & (r > 200)))

    with_trails = await _run(config, _calibration())
    plain = await _run(config.model_copy(update={"crop": CropConfig(draw_trails=False)}), _calibration())
    assert yellow(with_trails[-1]) > 50
    assert yellow(plain[-1]) == 0
