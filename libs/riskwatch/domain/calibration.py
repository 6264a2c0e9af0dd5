"""Ground-plane calibration of a camera: a homography from image pixels to metres on the ground.

An operator clicks four or more points in the camera's image and types where they lie on the ground (metres, in
any right-handed frame they choose: x east and y north, say). `Calibration.fit` fits the homography (OpenCV's
least-squares DLT), refuses degenerate input with a CalibrationError that says why, and reports how far each
ground point lies from its image point mapped through the fit (the reprojection error). The detector maps each
track's ground point through it, so speeds and gaps are in metres and m/s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from riskwatch.errors import InvalidRequest
from riskwatch.v1 import events_pb2

Point = tuple[float, float]
MIN_POINTS = 4
MAX_POINTS = 64
# Coordinates beyond these are typing mistakes, not cameras: pixels of an 8K-plus image, metres of a large site.
MAX_IMAGE_COORD = 100_000.0
MAX_GROUND_COORD = 100_000.0
# The smallest triangle (as a fraction of the points' spread squared) that still counts as "not collinear".
_MIN_SPREAD = 1e-3


class CalibrationError(InvalidRequest):
    """Points that do not define a ground plane: too few, too many, repeated, collinear, or non-finite."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """A fitted calibration: the points it came from, the homography (image px → ground m) and its error."""

    image_points: tuple[Point, ...]
    ground_points: tuple[Point, ...]
    homography: tuple[float, ...]  # row-major 3×3
    reprojection_error_m: float
    version: int = 0

    @classmethod
    def fit(cls, image_points: Sequence[Point], ground_points: Sequence[Point], *, version: int = 0) -> Calibration:
        """Fit the homography to matching point lists; CalibrationError names what is wrong with them."""
        image = _points(image_points, "image_points", MAX_IMAGE_COORD)
        ground = _points(ground_points, "ground_points", MAX_GROUND_COORD)
        if len(image) != len(ground):
            raise CalibrationError(
                f"image_points and ground_points must pair up: {len(image)} image points, {len(ground)} ground points"
            )
        _spread_out(image, "image_points")
        _spread_out(ground, "ground_points")
        found, _ = cv2.findHomography(image, ground, method=0)
        if found is None or not np.all(np.isfinite(found)) or abs(np.linalg.det(found)) < 1e-12:
            raise CalibrationError("the points do not define a ground plane (the fit is degenerate)")
        # Scale so that w > 0 on the calibrated side of the horizon (where the image points are).
        centre = np.append(image.mean(axis=0), 1.0)
        matrix = np.asarray(found, np.float64)
        matrix = matrix / float((matrix @ centre)[2])
        mapped = _apply(matrix, image)
        if not np.all(np.isfinite(mapped)):
            raise CalibrationError("a calibration point maps to the horizon (the fit is degenerate)")
        error = float(np.sqrt(np.mean(np.sum((mapped - ground) ** 2, axis=1))))
        return cls(
            image_points=tuple((float(x), float(y)) for x, y in image),
            ground_points=tuple((float(x), float(y)) for x, y in ground),
            homography=tuple(float(v) for v in matrix.ravel()),
            reprojection_error_m=error,
            version=version,
        )

    @property
    def matrix(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.homography, np.float64).reshape(3, 3)

    def to_ground(self, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(N, 2) image points in pixels → (N, 2) ground points in metres; NaN for points at or past the horizon."""
        return _apply(self.matrix, np.asarray(points, np.float64).reshape(-1, 2))

    def to_image(self, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(N, 2) ground points in metres → (N, 2) image points in pixels (the inverse mapping)."""
        inverse = np.asarray(np.linalg.inv(self.matrix), np.float64)
        return _apply(inverse, np.asarray(points, np.float64).reshape(-1, 2), one_sided=False)

    # --- the proto message ------------------------------------------------------------------------

    def to_proto(self) -> events_pb2.GroundCalibration:
        return events_pb2.GroundCalibration(
            image_points=[events_pb2.Vector2(x=x, y=y) for x, y in self.image_points],
            ground_points=[events_pb2.Vector2(x=x, y=y) for x, y in self.ground_points],
            homography=list(self.homography),
            reprojection_error_m=self.reprojection_error_m,
            version=self.version,
        )

    @classmethod
    def from_proto(cls, message: events_pb2.GroundCalibration) -> Calibration:
        """Refit from the message's points (never trust a homography from the wire); CalibrationError if bad."""
        return cls.fit(
            [(p.x, p.y) for p in message.image_points],
            [(p.x, p.y) for p in message.ground_points],
            version=message.version,
        )

    def to_dict(self) -> dict[str, object]:
        """The JSON form (REST, WebSocket, the dashboard)."""
        return {
            "image_points": [list(p) for p in self.image_points],
            "ground_points": [list(p) for p in self.ground_points],
            "homography": list(self.homography),
            "reprojection_error_m": round(self.reprojection_error_m, 4),
            "version": self.version,
        }


def _points(raw: Sequence[Point], name: str, limit: float) -> npt.NDArray[np.float64]:
    if not MIN_POINTS <= len(raw) <= MAX_POINTS:
        raise CalibrationError(f"{name}: {MIN_POINTS} to {MAX_POINTS} points are needed, got {len(raw)}")
    try:
        points = np.asarray(raw, np.float64).reshape(len(raw), 2)
    except (TypeError, ValueError):
        raise CalibrationError(f"{name}: each point must be a pair of numbers [x, y]") from None
    if not np.all(np.isfinite(points)) or np.any(np.abs(points) > limit):
        raise CalibrationError(f"{name}: coordinates must be finite and within ±{limit:g}")
    if len({(float(x), float(y)) for x, y in points}) != len(points):
        raise CalibrationError(f"{name}: a point is repeated")
    return points


def _spread_out(points: npt.NDArray[np.float64], name: str) -> None:
    """At least one triangle of the points must be far from flat, else the plane is undetermined."""
    centred = points - points.mean(axis=0)
    scale = float(np.max(np.sum(centred**2, axis=1)))
    # The smaller singular value of the centred points measures spread across the best-fitting line.
    smallest = float(np.linalg.svd(centred, compute_uv=False)[-1]) ** 2 / len(points)
    if scale <= 0 or smallest / scale < _MIN_SPREAD:
        raise CalibrationError(f"{name}: the points are (nearly) on one line")


def _apply(
    matrix: npt.NDArray[np.float64], points: npt.NDArray[np.float64], *, one_sided: bool = True
) -> npt.NDArray[np.float64]:
    if len(points) == 0:
        return np.zeros((0, 2), np.float64)
    homogeneous = np.column_stack([points, np.ones(len(points))]) @ matrix.T
    w = homogeneous[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = homogeneous[:, :2] / w
    # Image points on or above the horizon line have w <= 0 (fit scales w > 0 at the calibration points):
    # they are not on the visible ground.
    beyond = w[:, 0] <= 1e-12 if one_sided else np.abs(w[:, 0]) <= 1e-12
    out[beyond | ~np.isfinite(out).all(axis=1)] = math.nan
    return np.asarray(out, np.float64)
