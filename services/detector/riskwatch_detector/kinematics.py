"""How each confirmed track of a camera moves, and the surrogate safety measures between pairs of them.

`CameraMotion` keeps, per camera, the recent ground points (bottom centre of the box) of every live track in
arrays (one row per track, a ring of the newest points), in pixels and, when the camera is calibrated, in metres
(each point projected through the homography before fitting, so perspective does not bias speeds). Each frame it
fits every present track at once: a weighted least-squares line over the last `window_s` seconds of capture
times (position and velocity at the frame's time), one robust pass that drops outliers, and a parabola over the
same points for the acceleration. `PairMeasurer` then measures the configured category pairs with
`riskwatch.domain.measure_pairs`. Why a windowed fit and not a Kalman filter: detector README.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from riskwatch.domain import Calibration, Conflict, Movers, PairMeasures, measure_pairs
from riskwatch.v1 import events_pb2
from riskwatch_detector.config import CategoryName, ConflictsConfig, KinematicsConfig

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_CATEGORY_ORDER = tuple(CategoryName)
# The mean absolute deviation of a normal distribution times this is its standard deviation (√(π/2)).
_MEAN_TO_SIGMA = 1.2533


def ground_points(boxes: npt.ArrayLike) -> FloatArray:
    """(N, 2) bottom centres of (N, 4) boxes: where an upright road user touches the ground."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]])


def compass_deg(velocity: FloatArray, *, image: bool) -> FloatArray:
    """Compass bearings (0..360, clockwise) of (N, 2) velocities: 0 = image up (−y) or ground +y, 90 = +x."""
    north = -velocity[:, 1] if image else velocity[:, 1]
    return np.asarray(np.degrees(np.arctan2(velocity[:, 0], north)) % 360.0, np.float64)


@dataclass(frozen=True, slots=True)
class _Fit:
    samples: IntArray
    history_s: FloatArray
    position: FloatArray
    velocity: FloatArray
    acceleration: FloatArray  # NaN where fewer than three points remain

    @classmethod
    def nothing(cls, count: int) -> _Fit:
        """No estimate for `count` rows (an uncalibrated camera's ground plane)."""
        nan = np.full((count, 2), np.nan)
        return cls(np.zeros(count, np.int64), np.zeros(count), nan, nan, nan)

    def split(self, count: int) -> tuple[_Fit, _Fit]:
        """The first `count` rows and the rest."""
        return self._rows(slice(None, count)), self._rows(slice(count, None))

    def _rows(self, rows: slice) -> _Fit:
        return _Fit(
            self.samples[rows], self.history_s[rows], self.position[rows], self.velocity[rows], self.acceleration[rows]
        )


@dataclass(frozen=True, slots=True)
class Motion:
    """The motion of the N tracks of one frame, in the order they were given; NaN where there is no estimate."""

    track_ids: IntArray
    estimated: BoolArray
    samples: IntArray
    history_s: FloatArray
    position_px: FloatArray
    velocity_px_s: FloatArray
    acceleration_px_s2: FloatArray
    speed_px_s: FloatArray
    speed_box_s: FloatArray
    heading_deg: FloatArray
    # Per track: estimated on the ground plane (calibrated camera, enough points below the horizon).
    estimated_m: BoolArray
    position_m: FloatArray
    velocity_m_s: FloatArray
    acceleration_m_s2: FloatArray
    speed_m_s: FloatArray
    ground_heading_deg: FloatArray

    def to_proto(self, index: int) -> events_pb2.Kinematics:
        """Track `index`'s Kinematics message: only samples and history_s while it is not estimated."""
        message = events_pb2.Kinematics()
        self.write(index, message)
        return message

    def write(self, index: int, message: events_pb2.Kinematics) -> None:
        """Fill an empty Kinematics `message` in place (e.g. a Detection's) with track `index`'s motion."""
        message.estimated = bool(self.estimated[index])
        message.samples = int(self.samples[index])
        message.history_s = float(self.history_s[index])
        if not message.estimated:
            return
        _set(message.ground_point_px, self.position_px[index])
        _set(message.velocity_px_s, self.velocity_px_s[index])
        _set(message.acceleration_px_s2, self.acceleration_px_s2[index])
        message.speed_px_s = float(self.speed_px_s[index])
        message.speed_box_s = float(self.speed_box_s[index])
        message.heading_deg = float(self.heading_deg[index])
        if self.estimated_m[index]:
            _set(message.ground_point_m, self.position_m[index])
            _set(message.velocity_m_s, self.velocity_m_s[index])
            _set(message.acceleration_m_s2, self.acceleration_m_s2[index])
            message.speed_m_s = float(self.speed_m_s[index])
            message.ground_heading_deg = float(self.ground_heading_deg[index])


def _set(vector: events_pb2.Vector2, value: FloatArray) -> None:
    if math.isfinite(value[0]) and math.isfinite(value[1]):
        vector.x, vector.y = float(value[0]), float(value[1])


class CameraMotion:
    """The recent ground points of one camera's live tracks, and their fitted motion. Not thread-safe."""

    def __init__(self, config: KinematicsConfig, capacity: int = 64) -> None:
        self._config = config
        width = config.max_samples
        self._times = np.full((capacity, width), np.nan)
        self._px = np.full((capacity, width, 2), np.nan)
        self._m = np.full((capacity, width, 2), np.nan)
        self._head = np.zeros(capacity, np.int64)  # next slot to write, per row
        self._last = np.full(capacity, -np.inf)  # newest time, per row
        self._rows: dict[int, int] = {}
        self._free = list(range(capacity - 1, -1, -1))
        self._calibration: Calibration | None = None

    @property
    def track_count(self) -> int:
        return len(self._rows)

    def update(
        self, track_ids: Sequence[int] | IntArray, boxes: npt.ArrayLike, time_s: float, calibration: Calibration | None
    ) -> Motion:
        """Add each track's ground point at `time_s` and fit every given track (ids > 0, unique, with their boxes).

        A point not newer than the track's newest is ignored (out-of-order frame). A changed calibration
        re-projects the kept points, so metres never mix two homographies.
        """
        ids = np.asarray(track_ids, np.int64).reshape(-1)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if len(ids) != len(boxes):
            raise ValueError(f"{len(ids)} track ids for {len(boxes)} boxes")
        if not math.isfinite(time_s):
            raise ValueError("time_s must be finite")
        if calibration != self._calibration:
            self._calibration = calibration
            self._m = self._on_ground(self._px)
        rows = np.array([self._row(int(i)) for i in ids], np.int64)
        points = ground_points(boxes)
        fresh = rows[time_s > self._last[rows]]
        if len(fresh):
            slots = self._head[fresh]
            self._times[fresh, slots] = time_s
            self._px[fresh, slots] = points[time_s > self._last[rows]]
            self._m[fresh, slots] = self._on_ground(self._px[fresh, slots])
            self._head[fresh] = (slots + 1) % self._config.max_samples
            self._last[fresh] = time_s
        return self._motion(ids, rows, boxes, time_s)

    def keep(self, alive: Collection[int]) -> None:
        """Forget every track not in `alive` (the tracker dropped it); its row is reused."""
        for track_id in [t for t in self._rows if t not in alive]:
            row = self._rows.pop(track_id)
            self._times[row] = np.nan
            self._px[row] = np.nan
            self._m[row] = np.nan
            self._head[row] = 0
            self._last[row] = -np.inf
            self._free.append(row)

    def trail(self, track_id: int) -> FloatArray:
        """The track's kept ground points in pixels within the window, oldest first; (0, 2) for an unknown track."""
        row = self._rows.get(track_id)
        if row is None:
            return np.zeros((0, 2), np.float64)
        times = self._times[row]
        order = np.argsort(times)  # NaN (empty slots) sort last
        keep = order[times[order] >= self._last[row] - self._config.window_s]
        return np.asarray(self._px[row, keep], np.float64)

    # --- storage ---------------------------------------------------------------------------------

    def _row(self, track_id: int) -> int:
        row = self._rows.get(track_id)
        if row is None:
            if not self._free:
                self._grow()
            row = self._free.pop()
            self._rows[track_id] = row
        return row

    def _grow(self) -> None:
        old = len(self._head)
        self._times = np.concatenate([self._times, np.full_like(self._times, np.nan)])
        self._px = np.concatenate([self._px, np.full_like(self._px, np.nan)])
        self._m = np.concatenate([self._m, np.full_like(self._m, np.nan)])
        self._head = np.concatenate([self._head, np.zeros(old, np.int64)])
        self._last = np.concatenate([self._last, np.full(old, -np.inf)])
        self._free.extend(range(2 * old - 1, old - 1, -1))

    def _on_ground(self, pixels: FloatArray) -> FloatArray:
        if self._calibration is None:
            return np.full_like(pixels, np.nan)
        flat = pixels.reshape(-1, 2)
        ground = np.full_like(flat, np.nan)
        known = np.isfinite(flat[:, 0])
        ground[known] = self._calibration.to_ground(flat[known])
        return ground.reshape(pixels.shape)

    # --- fitting ---------------------------------------------------------------------------------

    def _motion(self, ids: IntArray, rows: IntArray, boxes: FloatArray, time_s: float) -> Motion:
        config = self._config
        offsets = self._times[rows] - time_s  # <= 0 for points up to now
        in_window = (offsets <= 0) & (offsets >= -config.window_s)
        # Image and ground rows are fitted in one pass (the ground rows only when the camera is calibrated).
        if self._calibration is None:
            image = _fit(offsets, self._px[rows], in_window, config.outlier_sigma)
            ground = _Fit.nothing(len(rows))
        else:
            both = _fit(
                np.concatenate([offsets, offsets]),
                np.concatenate([self._px[rows], self._m[rows]]),
                np.concatenate([in_window, in_window & np.isfinite(self._m[rows, :, 0])]),
                config.outlier_sigma,
            )
            image, ground = both.split(len(rows))
        estimated = (image.samples >= config.min_samples) & (image.history_s >= config.min_history_s)
        estimated_m = estimated & (ground.samples >= config.min_samples) & (ground.history_s >= config.min_history_s)
        speed_px = np.hypot(image.velocity[:, 0], image.velocity[:, 1])
        widths = np.maximum(boxes[:, 2] - boxes[:, 0], 0.0)
        heights = np.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
        sizes = np.sqrt(widths * heights)
        with np.errstate(divide="ignore", invalid="ignore"):
            speed_box = np.where(sizes > 0, speed_px / sizes, np.nan)
        return Motion(
            track_ids=ids,
            estimated=estimated,
            samples=image.samples,
            history_s=image.history_s,
            position_px=image.position,
            velocity_px_s=image.velocity,
            acceleration_px_s2=image.acceleration,
            speed_px_s=speed_px,
            speed_box_s=speed_box,
            heading_deg=compass_deg(image.velocity, image=True),
            estimated_m=estimated_m,
            position_m=ground.position,
            velocity_m_s=ground.velocity,
            acceleration_m_s2=ground.acceleration,
            speed_m_s=np.hypot(ground.velocity[:, 0], ground.velocity[:, 1]),
            ground_heading_deg=compass_deg(ground.velocity, image=False),
        )


def _fit(offsets: FloatArray, points: FloatArray, valid: BoolArray, outlier_sigma: float) -> _Fit:
    """Per row: a least-squares line through the valid (time offset, point) pairs, then a parabola (acceleration).

    With `outlier_sigma` > 0, points farther from the first line than that many standard deviations (estimated
    from the mean distance) are dropped and both fitted again.
    """
    t = np.where(valid, offsets, 0.0)
    p = np.where(valid[..., None], points, 0.0)
    weights = valid.astype(np.float64)
    moments = _Moments(t, p, weights)
    position, velocity = moments.line()
    if outlier_sigma > 0:
        residual = np.hypot(*np.moveaxis(p - position[:, None] - velocity[:, None] * t[..., None], -1, 0))
        # Robust scale without sorting: 1.2533 × the mean absolute residual is σ for normal noise, and one
        # outlier raises it by only its share of the row.
        count = np.maximum(weights.sum(axis=1), 1.0)
        scale = _MEAN_TO_SIGMA * (residual * weights).sum(axis=1) / count
        outlier = valid & (residual > outlier_sigma * scale[:, None])
        if outlier.any():
            weights = weights * ~outlier
            t = t * weights
            moments = _Moments(t, p, weights)
            position, velocity = moments.line()
    used = weights > 0
    samples = used.sum(axis=1).astype(np.int64)
    span = np.where(used, t, -np.inf).max(axis=1) - np.where(used, t, np.inf).min(axis=1)
    history = np.where(samples > 0, span, 0.0)
    return _Fit(samples, history, position, velocity, moments.acceleration())


class _Moments:
    """Weighted sums Σw·tᵏ (k ≤ 4) and Σw·tᵏ·p (k ≤ 2) per row: both fits solve their normal equations from them."""

    def __init__(self, t: FloatArray, p: FloatArray, w: FloatArray) -> None:
        powers = np.empty((5, *t.shape))
        powers[0] = w
        for k in range(1, 5):
            np.multiply(powers[k - 1], t, out=powers[k])
        self.s: FloatArray = powers.sum(axis=2)  # (5, N)
        self.sp: FloatArray = np.einsum("knw,nwd->knd", powers[:3], p)  # (3, N, 2)

    def line(self) -> tuple[FloatArray, FloatArray]:
        """Position at t = 0 and velocity of p ≈ p0 + v·t; NaN for rows with fewer than two distinct times."""
        s0, s1, s2 = self.s[0], self.s[1], self.s[2]
        sp, stp = self.sp[0], self.sp[1]
        det = s0 * s2 - s1 * s1
        ok = det > 1e-12 * s0 * s2
        inverse = np.divide(1.0, det, out=np.full_like(det, np.nan), where=ok)[:, None]
        velocity = (s0[:, None] * stp - s1[:, None] * sp) * inverse
        position = (s2[:, None] * sp - s1[:, None] * stp) * inverse
        return position, velocity

    def acceleration(self) -> FloatArray:
        """2·c of p ≈ a + b·t + c·t² (Cramer's rule on the 3×3 normal equations); NaN under three distinct times."""
        s0, s1, s2, s3, s4 = self.s
        c13 = s1 * s3 - s2 * s2
        c23 = s1 * s2 - s0 * s3
        c33 = s0 * s2 - s1 * s1
        det = s0 * (s2 * s4 - s3 * s3) + s1 * (s2 * s3 - s1 * s4) + s2 * c13
        ok = det > 1e-9 * np.abs(s0 * s2 * s4)
        inverse = np.divide(2.0, det, out=np.full_like(det, np.nan), where=ok)[:, None]
        combined = c13[:, None] * self.sp[0] + c23[:, None] * self.sp[1] + c33[:, None] * self.sp[2]
        return np.asarray(combined * inverse, np.float64)


# --- pairs -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FramePairs:
    """The measured pairs of one frame: indices into the Motion's tracks, their measures and units."""

    first: IntArray
    second: IntArray
    measures: PairMeasures
    calibrated: BoolArray  # per pair: metres and m/s, else box sizes

    def __len__(self) -> int:
        return len(self.first)

    @property
    def has_measure(self) -> BoolArray:
        """Pairs with a TTC or a PET: the conflicts."""
        return np.isfinite(self.measures.ttc_s) | np.isfinite(self.measures.pet_s)

    def conflict(self, index: int, track_ids: IntArray, categories: Sequence[CategoryName]) -> Conflict:
        m, a, b = self.measures, int(self.first[index]), int(self.second[index])
        return Conflict(
            track_a=int(track_ids[a]),
            track_b=int(track_ids[b]),
            category_a=categories[a].value,
            category_b=categories[b].value,
            kind=m.kind_of(index),
            calibrated=bool(self.calibrated[index]),
            ttc_s=_optional(m.ttc_s[index]),
            pet_s=_optional(m.pet_s[index]),
            drac_m_s2=_optional(m.drac[index]),
            distance=float(m.distance[index]),
            closing_speed=float(m.closing_speed[index]),
        )


def _optional(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


class PairMeasurer:
    """Measures the pairs of one frame's tracks whose categories `config.pairs` lists (tables built once)."""

    def __init__(self, config: ConflictsConfig) -> None:
        self._config = config
        self._measured = np.array([[config.measured(a, b) for b in _CATEGORY_ORDER] for a in _CATEGORY_ORDER], bool)
        self._radius_m = np.array([config.radius_m[c] for c in _CATEGORY_ORDER])
        self._codes = {c: i for i, c in enumerate(_CATEGORY_ORDER)}

    def measure(self, motion: Motion, categories: Sequence[CategoryName], boxes: npt.ArrayLike) -> FramePairs:
        """Every listed pair of estimated tracks, on the ground plane when both tracks are estimated there, else in
        the image (radius: a share of the box width; gaps and closing speeds in box sizes)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        codes = np.array([self._codes[c] for c in categories], np.int64)
        first, second = np.triu_indices(len(codes), k=1)
        keep = self._measured[codes[first], codes[second]] & motion.estimated[first] & motion.estimated[second]
        first, second = first[keep].astype(np.int64), second[keep].astype(np.int64)
        calibrated = motion.estimated_m[first] & motion.estimated_m[second]
        # A calibrated camera measures on the ground; a track without a ground estimate (above the horizon) falls
        # back to the image for its pairs. Each is computed only when some pair needs it.
        if calibrated.all():
            measures = self._on_ground(motion, self._radius_m[codes], first, second)
        elif not calibrated.any():
            measures = self._in_image(motion, boxes, first, second)
        else:
            ground = self._on_ground(motion, self._radius_m[codes], first, second)
            image = self._in_image(motion, boxes, first, second)
            measures = PairMeasures(
                *(np.where(calibrated, g, i) for g, i in zip(_columns(ground), _columns(image), strict=True))
            )
        return FramePairs(first, second, measures, calibrated)

    def _on_ground(self, motion: Motion, radius: FloatArray, first: IntArray, second: IntArray) -> PairMeasures:
        config = self._config
        return measure_pairs(
            Movers(motion.position_m[first], motion.velocity_m_s[first], radius[first]),
            Movers(motion.position_m[second], motion.velocity_m_s[second], radius[second]),
            horizon_s=config.horizon_s,
            stationary_speed=config.stationary_speed_m_s,
            pet_past_s=config.pet_past_s,
        )

    def _in_image(self, motion: Motion, boxes: FloatArray, first: IntArray, second: IntArray) -> PairMeasures:
        """Measures in pixels, then gaps and closing speeds in the pair's mean box size; no DRAC (not in m/s²)."""
        config = self._config
        widths = np.maximum(boxes[:, 2] - boxes[:, 0], 0.0)
        sizes = np.sqrt(widths * np.maximum(boxes[:, 3] - boxes[:, 1], 0.0))
        pair_size = np.maximum((sizes[first] + sizes[second]) / 2, 1e-9)
        radius = config.radius_box_width * widths
        pixels = measure_pairs(
            Movers(motion.position_px[first], motion.velocity_px_s[first], radius[first]),
            Movers(motion.position_px[second], motion.velocity_px_s[second], radius[second]),
            horizon_s=config.horizon_s,
            stationary_speed=config.stationary_speed_box_s * pair_size,
            pet_past_s=config.pet_past_s,
        )
        return PairMeasures(
            ttc_s=pixels.ttc_s,
            pet_s=pixels.pet_s,
            drac=np.full(len(first), np.nan),
            distance=pixels.distance / pair_size,
            closing_speed=pixels.closing_speed / pair_size,
            kind=pixels.kind,
        )


def _columns(measures: PairMeasures) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, IntArray]:
    m = measures
    return (m.ttc_s, m.pet_s, m.drac, m.distance, m.closing_speed, m.kind)
