"""Road users with known motion on a ground plane, seen by a known elevated camera, rendered into noisy boxes.

Ground frame (metres): x across the street (right as the camera sees it), y along it away from the camera, z up.
The street: two lanes, centre lines x = -1.75 (traffic going away, +y) and x = +1.75 (coming towards the camera,
-y), kerbs at x = ±3.5, pavements beyond. The camera stands 8 m up on the kerb line x = 0, y = 0, looking along
+y, pitched 25° down: its 640×360 detection stream (the substream NVRs feed detectors) sees the ground from about
7.5 m to 140 m.

Everything here is closed-form and independent of the system's code: the camera is a pinhole projection, each
trajectory gives position and velocity at any time, and `render` draws each user's box (bottom centre = the
projected ground point, top = the projected head point) with the detector noise of issue 14: jitter of 2 % of the
box size per edge, 5 % missed detections, an occasional id switch (a one-second gap, after which the user reappears
where its motion took it: the tracker either bridges the gap or starts a new track, as with real detectors).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# ---- the camera -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Camera:
    """A pinhole camera `height_m` above the ground at (0, 0), looking along +y, pitched down by `pitch_deg`."""

    width_px: int = 640
    height_px: int = 360
    focal_px: float = 450.0
    height_m: float = 8.0
    pitch_deg: float = 25.0

    @property
    def _rotation(self) -> FloatArray:
        pitch = math.radians(self.pitch_deg)
        s, c = math.sin(pitch), math.cos(pitch)
        # Rows: the camera's right, down and forward axes in ground coordinates.
        return np.array([[1.0, 0.0, 0.0], [0.0, -s, -c], [0.0, c, -s]])

    def project(self, points: npt.ArrayLike) -> FloatArray:
        """(N, 3) ground-frame points (m) → (N, 2) image points (px); NaN behind the camera."""
        world = np.asarray(points, np.float64).reshape(-1, 3)
        cam = (world - np.array([0.0, 0.0, self.height_m])) @ self._rotation.T
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.focal_px * cam[:, 0] / cam[:, 2] + self.width_px / 2
            v = self.focal_px * cam[:, 1] / cam[:, 2] + self.height_px / 2
        out = np.column_stack([u, v])
        out[cam[:, 2] <= 0.1] = math.nan
        return out

    def ground_to_image(self) -> FloatArray:
        """The 3×3 homography from ground (x, y, 1) in metres to image pixels: K [r1 r2 t] of the z = 0 plane."""
        k = np.array([[self.focal_px, 0, self.width_px / 2], [0, self.focal_px, self.height_px / 2], [0, 0, 1]])
        rotation = self._rotation
        t = -rotation @ np.array([0.0, 0.0, self.height_m])
        matrix = k @ np.column_stack([rotation[:, 0], rotation[:, 1], t])
        return np.asarray(matrix / matrix[2, 2], np.float64)

    def image_to_ground(self) -> FloatArray:
        """The inverse homography: image pixels to ground metres (what the system gets as the calibration)."""
        inverse = np.linalg.inv(self.ground_to_image())
        return np.asarray(inverse / inverse[2, 2], np.float64)

    def calibration_points(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """Image points and their ground points for an operator-style calibration: a 16 m × 40 m rectangle on
        the street plus its centre, as someone would click road markings."""
        ground = [(-8.0, 10.0), (8.0, 10.0), (8.0, 50.0), (-8.0, 50.0), (0.0, 25.0)]
        image = self.project([(x, y, 0.0) for x, y in ground])
        return [(float(u), float(v)) for u, v in image], ground


# ---- trajectories ---------------------------------------------------------------------------------


class Trajectory(Protocol):
    """Position (m) and velocity (m/s) at times `t` (s), each (N, 2)."""

    def position(self, t: FloatArray) -> FloatArray: ...

    def velocity(self, t: FloatArray) -> FloatArray: ...


def _unit(vector: tuple[float, float]) -> FloatArray:
    v = np.asarray(vector, np.float64)
    norm = float(np.hypot(*v))
    return v / norm if norm > 0 else np.zeros(2)


@dataclass(frozen=True, slots=True)
class Linear:
    """Constant velocity: at `point` at time `at_s` (a standing user when the velocity is zero)."""

    point: tuple[float, float]
    velocity_m_s: tuple[float, float]
    at_s: float = 0.0

    def position(self, t: FloatArray) -> FloatArray:
        tau = (np.asarray(t, np.float64) - self.at_s)[:, None]
        return np.asarray(np.asarray(self.point) + tau * np.asarray(self.velocity_m_s), np.float64)

    def velocity(self, t: FloatArray) -> FloatArray:
        return np.tile(np.asarray(self.velocity_m_s, np.float64), (len(np.asarray(t)), 1))


@dataclass(frozen=True, slots=True)
class Braking:
    """Constant velocity from `start` (at t = 0) until `brake_at_s`, then a constant deceleration to a stop."""

    start: tuple[float, float]
    velocity_m_s: tuple[float, float]
    brake_at_s: float
    decel_m_s2: float

    def _travel(self, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Distance travelled and speed at `t` along the (fixed) direction of motion."""
        speed0 = float(np.hypot(*self.velocity_m_s))
        t = np.asarray(t, np.float64)
        tau = np.clip(t - self.brake_at_s, 0.0, speed0 / self.decel_m_s2)
        before = np.minimum(t, self.brake_at_s)
        distance = speed0 * before + speed0 * tau - 0.5 * self.decel_m_s2 * tau**2
        speed = np.where(t < self.brake_at_s, speed0, speed0 - self.decel_m_s2 * tau)
        return distance, speed

    def position(self, t: FloatArray) -> FloatArray:
        distance, _ = self._travel(t)
        return np.asarray(self.start) + distance[:, None] * _unit(self.velocity_m_s)

    def velocity(self, t: FloatArray) -> FloatArray:
        _, speed = self._travel(t)
        return speed[:, None] * _unit(self.velocity_m_s)


@dataclass(frozen=True, slots=True)
class Turning:
    """Constant speed: straight from `start` (t = 0) until `turn_at_s`, an arc of `radius_m` through `angle_deg`
    (positive = to the right, clockwise seen from above), then straight on."""

    start: tuple[float, float]
    velocity_m_s: tuple[float, float]
    turn_at_s: float
    radius_m: float
    angle_deg: float

    def _state(self, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        t = np.asarray(t, np.float64)
        speed = float(np.hypot(*self.velocity_m_s))
        heading0 = _unit(self.velocity_m_s)
        sign = -1.0 if self.angle_deg > 0 else 1.0  # clockwise = negative rotation in x-right, y-forward axes
        sweep = math.radians(abs(self.angle_deg))
        turn_start = np.asarray(self.start) + heading0 * speed * self.turn_at_s
        normal = _rotate(heading0[None, :], np.array([sign * math.pi / 2]))[0]
        centre = turn_start + self.radius_m * normal
        angle = np.clip((t - self.turn_at_s) * speed / self.radius_m, 0.0, sweep)
        on_arc = centre + _rotate(np.tile(turn_start - centre, (len(t), 1)), sign * angle)
        heading = _rotate(np.tile(heading0, (len(t), 1)), sign * angle)
        before = np.asarray(self.start) + heading0 * speed * np.minimum(t, self.turn_at_s)[:, None]
        after_s = np.maximum(t - self.turn_at_s - sweep * self.radius_m / speed, 0.0)
        position = np.where((t < self.turn_at_s)[:, None], before, on_arc + heading * speed * after_s[:, None])
        return position, heading * speed

    def position(self, t: FloatArray) -> FloatArray:
        return self._state(t)[0]

    def velocity(self, t: FloatArray) -> FloatArray:
        return self._state(t)[1]


def _rotate(vectors: FloatArray, angles: FloatArray) -> FloatArray:
    c, s = np.cos(angles), np.sin(angles)
    return np.column_stack([c * vectors[:, 0] - s * vectors[:, 1], s * vectors[:, 0] + c * vectors[:, 1]])


# ---- road users and scenarios ---------------------------------------------------------------------


class Category(StrEnum):
    """The system's categories (config/detector.yaml `categories` maps the class names below to them)."""

    PEDESTRIAN = "pedestrian"
    VEHICLE = "vehicle"
    TWO_WHEELER = "two_wheeler"


@dataclass(frozen=True, slots=True)
class Body:
    """What a kind of road user looks like: the detector's class name, footprint disc, size on the ground (length
    along its heading, width across it) and height, in metres."""

    category: Category
    class_name: str
    radius_m: float
    length_m: float
    width_m: float
    height_m: float

    def visible_width_m(self, heading: FloatArray) -> float:
        """The width of its box across the image: a car crossing the view shows its side, one coming on its front."""
        across = abs(float(heading[0]))  # the camera's horizontal axis is the ground's x axis
        return across * self.length_m + (1 - across) * self.width_m


PEDESTRIAN = Body(Category.PEDESTRIAN, "person", 0.3, 0.6, 0.6, 1.7)
CAR = Body(Category.VEHICLE, "car", 1.2, 4.5, 1.8, 1.5)
BICYCLE = Body(Category.TWO_WHEELER, "bicycle", 0.6, 1.8, 0.6, 1.7)
MOTORCYCLE = Body(Category.TWO_WHEELER, "motorcycle", 0.6, 2.1, 0.8, 1.5)
# The scripted detector's class ids (COCO order).
CLASS_IDS = {"person": 0, "bicycle": 1, "car": 2, "motorcycle": 3}


@dataclass(frozen=True, slots=True)
class RoadUser:
    name: str
    body: Body
    trajectory: Trajectory


class Kind(StrEnum):
    """What a scenario is designed to be; the truth (truth.py) confirms it."""

    COLLISION = "collision"  # the footprints touch
    NEAR_MISS = "near_miss"  # they come close (PET < 1 s or a late stop) without touching
    SAFE = "safe"  # passes by metres or seconds, parallel traffic, standing users


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    kind: Kind
    duration_s: float
    users: tuple[RoadUser, ...]


LANE_AWAY = -1.75  # x of the lane going away from the camera (+y)
LANE_TOWARDS = 1.75  # x of the lane coming towards it (-y)
KERB = 3.5


def through(point: tuple[float, float], at_s: float, velocity: tuple[float, float]) -> Linear:
    """A constant-velocity user that is at `point` at time `at_s`."""
    return Linear(point, velocity, at_s)


def catalogue(rng: np.random.Generator) -> list[Scenario]:
    """One instance of every scenario, its geometry varied by `rng` (where paths meet, when, how fast)."""
    y = float(rng.uniform(20.0, 32.0))  # where the street is crossed
    meet = float(rng.uniform(5.5, 7.0))  # when the paths meet
    k = float(rng.uniform(0.9, 1.1))  # speed factor
    car_v, ped_v, bike_v = 8.0 * k, 1.4 * k, 4.5 * k
    cross = (LANE_TOWARDS, y)
    oncoming = (0.0, -car_v)
    end = meet + 2.0

    def crossing_car(name: str, at_s: float = meet) -> RoadUser:
        return RoadUser(name, CAR, through(cross, at_s, oncoming))

    scenarios = [
        # -- collision courses
        Scenario(
            "ped_crossing_car",
            Kind.COLLISION,
            end,
            (RoadUser("ped", PEDESTRIAN, through(cross, meet, (ped_v, 0.0))), crossing_car("car")),
        ),
        Scenario(
            "ped_head_on_car",
            Kind.COLLISION,
            end,
            (RoadUser("ped", PEDESTRIAN, through(cross, meet, (0.0, ped_v))), crossing_car("car")),
        ),
        Scenario(
            "car_car_crossing",
            Kind.COLLISION,
            end,
            (RoadUser("car_a", CAR, through(cross, meet, (6.0 * k, 0.0))), crossing_car("car_b")),
        ),
        Scenario(
            "car_rear_end",
            Kind.COLLISION,
            end,
            (
                RoadUser("lead", CAR, through((LANE_AWAY, y + 2.0), meet, (0.0, 3.0 * k))),
                RoadUser("follower", CAR, through((LANE_AWAY, y), meet, (0.0, car_v))),
            ),
        ),
        Scenario(
            "car_rear_end_lead_brakes",
            Kind.COLLISION,
            end,
            (
                # 10 m apart at 6 m/s until the lead brakes hard (6 m/s², stops in 1 s): contact about 1.8 s later.
                RoadUser("lead", CAR, Braking((LANE_TOWARDS, 50.0), (0.0, -6.0 * k), meet - 1.8, 6.0)),
                RoadUser("follower", CAR, Linear((LANE_TOWARDS, 60.0), (0.0, -6.0 * k))),
            ),
        ),
        Scenario(
            "bike_crossing_car",
            Kind.COLLISION,
            end,
            (RoadUser("bike", BICYCLE, through(cross, meet, (bike_v, 0.0))), crossing_car("car")),
        ),
        _turning_motorcycle(y, meet, k, offset_s=0.0, kind=Kind.COLLISION, name="motorcycle_turns_into_car"),
        # -- near-misses: paths cross less than a second apart, or a late stop, without contact
        Scenario(
            "car_car_crossing_pet_0_7",
            Kind.NEAR_MISS,
            end,
            (RoadUser("car_a", CAR, through(cross, meet + 0.7, (6.0 * k, 0.0))), crossing_car("car_b")),
        ),
        Scenario(
            "bike_behind_car_pet_0_8",
            Kind.NEAR_MISS,
            end,
            (RoadUser("bike", BICYCLE, through(cross, meet + 0.8, (bike_v, 0.0))), crossing_car("car")),
        ),
        Scenario(
            "ped_runs_behind_car_pet_0_8",
            Kind.NEAR_MISS,
            end,
            (RoadUser("ped", PEDESTRIAN, through(cross, meet + 0.8, (3.0 * k, 0.0))), crossing_car("car")),
        ),
        Scenario(
            "car_stops_short_of_ped",
            Kind.NEAR_MISS,
            end,
            (
                RoadUser("ped", PEDESTRIAN, Linear((LANE_TOWARDS - 0.6, y), (0.0, 0.0))),
                # Brakes at 6.5 m/s² so that it stops 1 m short (centre gap = radii + 1 m).
                RoadUser(
                    "car",
                    CAR,
                    Braking(
                        (LANE_TOWARDS, y + 2.5 + car_v**2 / 13.0 + car_v * (meet - 2.0)),
                        oncoming,
                        meet - 2.0,
                        6.5,
                    ),
                ),
            ),
        ),
        # -- safe: seconds or metres apart, parallel traffic, standing users
        Scenario(
            "ped_crosses_4s_after_car",
            Kind.SAFE,
            end + 3.0,
            (RoadUser("ped", PEDESTRIAN, through(cross, meet + 4.0, (ped_v, 0.0))), crossing_car("car")),
        ),
        Scenario(
            "car_car_crossing_pet_3_5",
            Kind.SAFE,
            end + 3.0,
            (RoadUser("car_a", CAR, through(cross, meet + 3.5, (6.0 * k, 0.0))), crossing_car("car_b")),
        ),
        Scenario(
            "cars_pass_in_opposite_lanes",
            Kind.SAFE,
            end,
            (
                RoadUser("car_a", CAR, through((LANE_AWAY, y), meet, (0.0, car_v))),
                RoadUser("car_b", CAR, through((LANE_TOWARDS, y), meet, oncoming)),
            ),
        ),
        Scenario(
            "cars_follow_in_one_lane",
            Kind.SAFE,
            end,
            (
                RoadUser("lead", CAR, through((LANE_AWAY, y + 15.0), meet, (0.0, car_v))),
                RoadUser("follower", CAR, through((LANE_AWAY, y), meet, (0.0, car_v))),
            ),
        ),
        Scenario(
            "cars_side_by_side",
            Kind.SAFE,
            end,
            (
                RoadUser("left", CAR, through((LANE_AWAY, y), meet, (0.0, car_v))),
                RoadUser("right", CAR, through((LANE_AWAY + 3.5, y - 3.0), meet, (0.0, car_v))),
            ),
        ),
        Scenario(
            "ped_walks_past_parked_car",
            Kind.SAFE,
            end,
            (
                RoadUser("parked", CAR, Linear((-KERB - 1.0, y), (0.0, 0.0))),
                RoadUser("ped", PEDESTRIAN, through((-KERB - 3.2, y), meet, (0.0, ped_v))),
            ),
        ),
        Scenario(
            "ped_waits_at_kerb",
            Kind.SAFE,
            end,
            (
                RoadUser("ped", PEDESTRIAN, Linear((KERB + 0.4, y), (0.0, 0.0))),
                RoadUser("car", CAR, through(cross, meet, oncoming)),
            ),
        ),
        Scenario(
            "peds_pass_on_pavement",
            Kind.SAFE,
            end,
            (
                RoadUser("ped_a", PEDESTRIAN, through((KERB + 1.0, y), meet, (0.0, ped_v))),
                RoadUser("ped_b", PEDESTRIAN, through((KERB + 2.5, y), meet, (0.0, -ped_v))),
            ),
        ),
        Scenario(
            "car_brakes_behind_stopped_car",
            Kind.SAFE,
            end,
            (
                RoadUser("stopped", CAR, Linear((LANE_AWAY, y + 7.0), (0.0, 0.0))),
                # Brakes (3 m/s²) from t = 2 s with room to stop 4.6 m behind: TTC = v/6 + 4.6/v stays above 1.75 s.
                RoadUser(
                    "braking", CAR, Braking((LANE_AWAY, y - car_v**2 / 6.0 - car_v * 2.0), (0.0, car_v), 2.0, 3.0)
                ),
            ),
        ),
        _turning_motorcycle(y, meet, k, offset_s=3.5, kind=Kind.SAFE, name="motorcycle_turns_after_car"),
    ]
    return scenarios


def _turning_motorcycle(y: float, meet: float, k: float, *, offset_s: float, kind: Kind, name: str) -> Scenario:
    """A motorcycle going away turns right across the oncoming lane; the oncoming car reaches the end of the turn
    `offset_s` after the motorcycle (0: they collide there)."""
    speed, radius = 6.0 * k, 3.5
    turn_at = meet - (math.pi / 2) * radius / speed
    start_y = y - radius - speed * turn_at
    bike = Turning((LANE_AWAY, start_y), (0.0, speed), turn_at, radius, 90.0)
    end_point = tuple(float(v) for v in bike.position(np.array([meet]))[0])
    car = through((end_point[0], end_point[1]), meet + offset_s, (0.0, -8.0 * k))
    return Scenario(
        name, kind, meet + 2.0 + offset_s, (RoadUser("motorcycle", MOTORCYCLE, bike), RoadUser("car", CAR, car))
    )


# ---- rendering into detector boxes ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Noise:
    """The detector's errors (issue 14): per-edge jitter as a fraction of box size (standard deviation), the chance
    a user is missed in a frame, and the chance a user has one id switch (a gap of `switch_gap_s`) in a scenario."""

    jitter: float = 0.02
    miss: float = 0.05
    id_switch: float = 0.1
    switch_gap_s: float = 1.0

    @staticmethod
    def none() -> Noise:
        return Noise(jitter=0.0, miss=0.0, id_switch=0.0)


@dataclass(frozen=True, slots=True)
class RenderedFrame:
    """What the scripted detector returns for one frame: boxes (px), class ids and which user each box is."""

    index: int
    time_s: float
    boxes: FloatArray  # (N, 4) x1, y1, x2, y2
    class_ids: npt.NDArray[np.int64]
    users: tuple[int, ...]  # index into Scenario.users


@dataclass(frozen=True, slots=True)
class Rendering:
    scenario: Scenario
    fps: float
    frames: tuple[RenderedFrame, ...]
    switches: tuple[tuple[int, float], ...] = field(default=())  # (user, time the gap starts)


MIN_BOX_HEIGHT_PX = 10.0  # smaller boxes are beyond what the detector finds


def boxes_at(camera: Camera, scenario: Scenario, t: float) -> tuple[FloatArray, list[int]]:
    """Noise-free boxes of the users wholly in view at time `t`, and which users they are."""
    boxes, users = [], []
    for i, user in enumerate(scenario.users):
        x, y = user.trajectory.position(np.array([t]))[0]
        half = user.body.visible_width_m(_unit(tuple(user.trajectory.velocity(np.array([t]))[0]))) / 2
        left, right, head = camera.project([(x - half, y, 0.0), (x + half, y, 0.0), (x, y, user.body.height_m)])
        if not np.all(np.isfinite([left, right, head])):
            continue
        box = np.array([left[0], head[1], right[0], (left[1] + right[1]) / 2])
        inside = box[0] >= 0 and box[1] >= 0 and box[2] <= camera.width_px and box[3] <= camera.height_px
        if inside and box[3] - box[1] >= MIN_BOX_HEIGHT_PX:
            boxes.append(box)
            users.append(i)
    return np.array(boxes, np.float64).reshape(-1, 4), users


def render(scenario: Scenario, camera: Camera, fps: float, noise: Noise, rng: np.random.Generator) -> Rendering:
    """The scenario's frames at `fps` from t = 0 to its end, with the detector's noise drawn from `rng`."""
    if not 0.5 <= fps <= 60:
        raise ValueError(f"fps must be within 0.5..60, got {fps}")
    count = math.floor(scenario.duration_s * fps) + 1
    switches = tuple(
        (i, float(rng.uniform(0.5, max(0.6, scenario.duration_s - noise.switch_gap_s))))
        for i in range(len(scenario.users))
        if rng.random() < noise.id_switch
    )
    frames = []
    for index in range(count):
        t = index / fps
        clean, users = boxes_at(camera, scenario, t)
        keep = [
            j
            for j, u in enumerate(users)
            if rng.random() >= noise.miss
            and not any(u == s and start <= t < start + noise.switch_gap_s for s, start in switches)
        ]
        boxes = clean[keep]
        size = np.column_stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
        boxes = boxes + rng.normal(0.0, 1.0, boxes.shape) * noise.jitter * np.tile(size, (1, 2))
        chosen = tuple(users[j] for j in keep)
        class_ids = np.array([CLASS_IDS[scenario.users[u].body.class_name] for u in chosen], np.int64)
        frames.append(RenderedFrame(index, t, boxes, class_ids, chosen))
    return Rendering(scenario, fps, tuple(frames), switches)


def scenario_names(scenarios: Sequence[Scenario]) -> list[str]:
    return [s.name for s in scenarios]
