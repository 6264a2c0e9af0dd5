"""Ground-plane calibration: the homography a pinhole camera really has is recovered from four or more points,
bad point sets are refused with the reason, and points past the horizon are not mistaken for ground."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from riskwatch.domain import Calibration, CalibrationError
from riskwatch.v1 import events_pb2

# A 1280x720 camera 6 m above a road, pitched 25 degrees down, looking along the ground's +y axis.
FOCAL_PX = 900.0
CENTRE = (640.0, 360.0)
HEIGHT_M = 6.0
PITCH = math.radians(25.0)


def ground_to_image_matrix() -> npt.NDArray[np.float64]:
    """K [r1 r2 t]: where a ground point (x, y, 0) lands in the image of the camera above."""
    k = np.array([[FOCAL_PX, 0, CENTRE[0]], [0, FOCAL_PX, CENTRE[1]], [0, 0, 1]])
    # Camera axes in world coordinates: x right (= world x), z forward (along +y, tilted down), y down.
    forward = np.array([0.0, math.cos(PITCH), -math.sin(PITCH)])
    right = np.array([1.0, 0.0, 0.0])
    down = np.cross(forward, right)
    rotation = np.vstack([right, down, forward])  # world → camera
    centre = np.array([0.0, 0.0, HEIGHT_M])
    t = -rotation @ centre
    return np.asarray(k @ np.column_stack([rotation[:, 0], rotation[:, 1], t]), np.float64)


def project(points_m: npt.ArrayLike) -> npt.NDArray[np.float64]:
    points = np.asarray(points_m, np.float64).reshape(-1, 2)
    image = np.column_stack([points, np.ones(len(points))]) @ ground_to_image_matrix().T
    return np.asarray(image[:, :2] / image[:, 2:3], np.float64)


# A 7 m wide, 20 m long stretch of road starting 5 m in front of the camera.
GROUND = [(-3.5, 5.0), (3.5, 5.0), (3.5, 25.0), (-3.5, 25.0)]


def test_four_points_recover_the_camera_homography() -> None:
    image = [tuple(p) for p in project(GROUND)]
    calibration = Calibration.fit(image, GROUND, version=3)

    assert calibration.reprojection_error_m < 1e-6
    assert calibration.version == 3
    # Points that were not used in the fit land where the camera puts them, in both directions.
    others = np.array([[0.0, 12.0], [-2.0, 7.5], [3.0, 22.0], [1.0, 40.0]])
    np.testing.assert_allclose(calibration.to_ground(project(others)), others, atol=1e-6)
    np.testing.assert_allclose(calibration.to_image(others), project(others), atol=1e-4)


def test_speed_in_metres_does_not_depend_on_distance_from_the_camera() -> None:
    """The reason for calibrating: 1 m travelled far away is a few pixels, near by many; in metres both are 1 m."""
    calibration = Calibration.fit([tuple(p) for p in project(GROUND)], GROUND)
    near = project([(0.0, 6.0), (0.0, 7.0)])
    far = project([(0.0, 24.0), (0.0, 25.0)])
    assert np.linalg.norm(near[1] - near[0]) > 5 * np.linalg.norm(far[1] - far[0])
    for pair in (near, far):
        ground = calibration.to_ground(pair)
        assert np.linalg.norm(ground[1] - ground[0]) == pytest.approx(1.0, abs=1e-6)


def test_reprojection_error_reports_inexact_clicks() -> None:
    rng = np.random.default_rng(7)
    ground = [(x, y) for x in (-3.5, 0.0, 3.5) for y in (5.0, 12.0, 25.0)]
    # Clicks within a pixel or two of the true image points.
    clicked = project(ground) + rng.normal(0.0, 1.5, (len(ground), 2))
    calibration = Calibration.fit([tuple(p) for p in clicked], ground)
    # A pixel at 25 m is several centimetres: the error is visible but small.
    assert 0.005 < calibration.reprojection_error_m < 0.5


def test_points_past_the_horizon_are_not_ground() -> None:
    calibration = Calibration.fit([tuple(p) for p in project(GROUND)], GROUND)
    # The horizon of a camera pitched down 25 degrees is FOCAL * tan(25 deg) above the image centre.
    horizon_y = CENTRE[1] - FOCAL_PX * math.tan(PITCH)
    mapped = calibration.to_ground([(640.0, horizon_y - 50.0), (640.0, horizon_y + 50.0)])
    assert np.isnan(mapped[0]).all()
    assert np.isfinite(mapped[1]).all() and mapped[1][1] > 25.0  # just below the horizon: far away


@pytest.mark.parametrize(
    ("image", "ground", "message"),
    [
        ([(0, 0), (10, 0), (10, 10)], [(0, 0), (1, 0), (1, 1)], "4 to 64 points"),
        ([(0, 0), (10, 0), (20, 0), (30, 0)], [(0, 0), (1, 0), (1, 1), (0, 1)], "on one line"),
        ([(0, 0), (10, 0), (10, 10), (0, 10)], [(0, 0), (1, 0), (2, 0), (3, 0)], "on one line"),
        ([(0, 0), (10, 0), (10, 10), (10, 10)], [(0, 0), (1, 0), (1, 1), (0, 1)], "repeated"),
        ([(0, 0), (10, 0), (10, 10), (0, 10), (5, 5)], [(0, 0), (1, 0), (1, 1), (0, 1)], "pair up"),
        ([(0, 0), (10, 0), (10, math.nan), (0, 10)], [(0, 0), (1, 0), (1, 1), (0, 1)], "finite"),
        ([(0, 0), (10, 0), (10, 1e9), (0, 10)], [(0, 0), (1, 0), (1, 1), (0, 1)], "within"),
        ([(0, 0), (10, 0), (10, 10), (0, 10, 3)], [(0, 0), (1, 0), (1, 1), (0, 1)], "pair of numbers"),
        ([(i, i * i) for i in range(65)], [(i, i * i) for i in range(65)], "4 to 64 points"),
    ],
)
def test_bad_points_are_refused_with_the_reason(
    image: list[tuple[float, ...]], ground: list[tuple[float, ...]], message: str
) -> None:
    with pytest.raises(CalibrationError, match=message):
        Calibration.fit(image, ground)  # type: ignore[arg-type]


def test_the_proto_is_refitted_from_its_points_not_trusted() -> None:
    calibration = Calibration.fit([tuple(p) for p in project(GROUND)], GROUND, version=5)
    message = calibration.to_proto()
    assert len(message.homography) == 9 and message.version == 5
    # A homography on the wire that disagrees with its points is ignored: the points are refitted.
    del message.homography[:]
    message.homography.extend([1, 0, 0, 0, 1, 0, 0, 0, 1])
    again = Calibration.from_proto(message)
    np.testing.assert_allclose(again.homography, calibration.homography, rtol=1e-6, atol=1e-9)
    assert again.version == 5

    with pytest.raises(CalibrationError):
        Calibration.from_proto(events_pb2.GroundCalibration(image_points=message.image_points[:3]))


def test_json_form_carries_points_fit_and_error() -> None:
    calibration = Calibration.fit([tuple(p) for p in project(GROUND)], GROUND, version=2)
    form = calibration.to_dict()
    assert form["ground_points"] == [list(p) for p in GROUND]
    assert len(form["homography"]) == 9  # type: ignore[arg-type]
    assert form["version"] == 2
    assert form["reprojection_error_m"] == pytest.approx(0.0, abs=1e-4)
