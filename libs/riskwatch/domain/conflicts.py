"""Surrogate safety measures of pairs of road users: time to collision, post-encroachment time, DRAC, conflict kind.

Pure, vectorised maths over arrays of pairs (one row per pair), in any consistent length unit: metres on a
calibrated camera, pixels otherwise. Each road user is a disc footprint (centre, radius) moving at constant
velocity. `measure_pairs` gives every measure with NaN where it is not defined; `Conflict` is one pair's result as
it travels (the proto `Conflict`) and as an operator reads it (`describe`). Definitions: services/detector/README.md,
"Kinematics and surrogate safety measures".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from riskwatch.v1 import events_pb2

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Heading difference bounds of the proto's ConflictKind (degrees).
HEAD_ON_DEG = 135.0
REAR_END_DEG = 45.0
_COS_HEAD_ON = math.cos(math.radians(HEAD_ON_DEG))
_COS_REAR_END = math.cos(math.radians(REAR_END_DEG))
# Velocities whose cross product is below this share of the product of their speeds are parallel (sin < 1e-6).
_PARALLEL = 1e-6


class ConflictKind(StrEnum):
    """How two paths meet (the proto ConflictKind, by name)."""

    HEAD_ON = "head_on"
    REAR_END = "rear_end"
    CROSSING = "crossing"
    STATIONARY = "stationary"

    @property
    def proto(self) -> events_pb2.ConflictKind.ValueType:
        return events_pb2.ConflictKind.Value(f"CONFLICT_KIND_{self.name}")

    @classmethod
    def from_proto(cls, value: int) -> ConflictKind:
        """The kind of a proto ConflictKind; ValueError for UNSPECIFIED or a number this build does not know."""
        try:
            return cls[
                events_pb2.ConflictKind.Name(events_pb2.ConflictKind.ValueType(value)).removeprefix("CONFLICT_KIND_")
            ]
        except (KeyError, ValueError):
            raise ValueError(f"unknown ConflictKind {value}") from None


_KIND_CODES = (ConflictKind.HEAD_ON, ConflictKind.REAR_END, ConflictKind.CROSSING, ConflictKind.STATIONARY)


def category_name(value: int) -> str:
    """'vehicle', 'pedestrian', 'two_wheeler' or 'other' for a proto Category; ValueError for any other number."""
    if value == events_pb2.CATEGORY_UNSPECIFIED:
        raise ValueError("category is unspecified")
    return events_pb2.Category.Name(events_pb2.Category.ValueType(value)).removeprefix("CATEGORY_").lower()


def category_proto(name: str) -> events_pb2.Category.ValueType:
    """The proto Category called `name` ('pedestrian', ...); ValueError for an unknown name."""
    return events_pb2.Category.Value(f"CATEGORY_{name.upper()}")


@dataclass(frozen=True, slots=True)
class PairMeasures:
    """The measures of P pairs, one entry each; NaN where a measure is not defined (the proto leaves it unset).

    Lengths are in the input unit (gaps) and per second (closing speed, DRAC per second squared).
    """

    ttc_s: FloatArray
    pet_s: FloatArray
    drac: FloatArray
    distance: FloatArray
    closing_speed: FloatArray
    kind: IntArray  # index into _KIND_CODES; see `kind_of`

    def kind_of(self, index: int) -> ConflictKind:
        return _KIND_CODES[int(self.kind[index])]


@dataclass(frozen=True, slots=True)
class Movers:
    """One side of P pairs: disc footprints with centre positions (P, 2), velocities (P, 2) and radii (P,)."""

    position: npt.ArrayLike
    velocity: npt.ArrayLike
    radius: npt.ArrayLike


def measure_pairs(
    a: Movers, b: Movers, *, horizon_s: float, stationary_speed: npt.ArrayLike, pet_past_s: float = 0.0
) -> PairMeasures:
    """TTC, predicted PET, DRAC, gap, closing speed and kind of the P pairs (a[i], b[i]).

    - TTC: smallest t >= 0 with |Δp + Δv·t| = rA + rB (constant velocities); 0 when the discs already touch and
      still close in at `stationary_speed` or faster; NaN when they never touch (diverging, parallel, passing wide),
      only after `horizon_s`, or touch without closing in (walking side by side).
    - PET: |tA − tB|, the times at which the two centres reach the crossing point of their straight paths; NaN
      for parallel paths, a user slower than `stationary_speed`, a crossing behind a user (more than `pet_past_s`
      seconds ago) or the second arrival after `horizon_s`.
    - DRAC: |Δv| / (2·TTC), the constant deceleration of the relative motion that stops it at the contact point
      (for a rear-end pair (v_following − v_leading)² / (2·gap), Cunto & Saccomanno); NaN when TTC is NaN or 0.
    - distance: the gap between the footprints (0 when they overlap); closing speed: the rate at which the
      centres approach (negative when they separate).
    - kind: STATIONARY when either speed is below `stationary_speed`, else by the angle between the headings
      (> 135° HEAD_ON, < 45° REAR_END, else CROSSING).
    """
    if horizon_s <= 0 or pet_past_s < 0:
        raise ValueError("horizon_s must be > 0 and pet_past_s >= 0")
    pa, va, pb, vb = (
        np.asarray(v, np.float64).reshape(-1, 2) for v in (a.position, a.velocity, b.position, b.velocity)
    )
    radius = np.asarray(a.radius, np.float64).reshape(-1) + np.asarray(b.radius, np.float64).reshape(-1)
    still = np.asarray(stationary_speed, np.float64)
    # Components as separate vectors: a few dozen operations on (P,) arrays whatever the number of pairs.
    (ax, ay), (bx, by) = va.T, vb.T
    dx, dy = (pb - pa).T
    ux, uy = bx - ax, by - ay  # relative velocity
    centre_gap = np.hypot(dx, dy)
    dot = dx * ux + dy * uy
    relative_speed_sq = ux * ux + uy * uy
    speed_a, speed_b = np.hypot(ax, ay), np.hypot(bx, by)
    cross = ax * by - ay * bx
    with np.errstate(divide="ignore", invalid="ignore"):
        # |dp + dv t|² = R²  ⇔  a t² + b t + c = 0 with a = |dv|², b = 2 dp·dv, c = |dp|² − R².
        c = centre_gap * centre_gap - radius * radius
        discriminant = dot * dot - relative_speed_sq * c  # (b/2)² − a c
        entry = (-dot - np.sqrt(discriminant)) / relative_speed_sq
        closing = np.where(centre_gap > 0, -dot / centre_gap, 0.0)
        # Touching discs collide only while they still close in: two people walking side by side, or a pedestrian
        # beside a parked car, touch without a collision course.
        touching = np.where(closing >= still, 0.0, np.nan)
        ttc = np.where(c <= 0, touching, np.where((dot < 0) & (entry <= horizon_s), entry, np.nan))
        drac = np.sqrt(relative_speed_sq) / (2 * ttc)
        drac[~(ttc > 0)] = np.nan
        # pa + va·tA = pb + vb·tB: cross both sides with vb (for tA) and with va (for tB).
        time_a = (dx * by - dy * bx) / cross
        time_b = (dx * ay - dy * ax) / cross
        first = np.minimum(time_a, time_b)
        second = np.maximum(time_a, time_b)
        moving = (speed_a >= still) & (speed_b >= still) & (speed_a > 0) & (speed_b > 0)
        speeds = speed_a * speed_b
        ahead = moving & (np.abs(cross) > _PARALLEL * speeds) & (first >= -pet_past_s) & (second >= 0)
        pet = np.where(ahead & (second <= horizon_s), second - first, np.nan)
    # The angle between the headings, from its cosine: > 135° head-on, < 45° rear-end, else crossing.
    alignment = ax * bx + ay * by
    kind = np.where(alignment < _COS_HEAD_ON * speeds, 0, np.where(alignment > _COS_REAR_END * speeds, 1, 2))
    kind[~moving] = 3
    return PairMeasures(
        ttc_s=ttc,
        pet_s=pet,
        drac=drac,
        distance=np.maximum(centre_gap - radius, 0.0),
        closing_speed=closing,
        kind=kind.astype(np.int64),
    )


@dataclass(frozen=True, slots=True)
class Conflict:
    """One pair's measures in one frame (proto Conflict): metres and m/s when `calibrated`, else box sizes."""

    track_a: int
    track_b: int
    category_a: str  # 'pedestrian', 'vehicle', 'two_wheeler', 'other'
    category_b: str
    kind: ConflictKind
    calibrated: bool
    ttc_s: float | None
    pet_s: float | None
    drac_m_s2: float | None
    distance: float
    closing_speed: float

    def __post_init__(self) -> None:
        for name in ("ttc_s", "pet_s", "drac_m_s2"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"conflict {name} must be a finite number >= 0, got {value}")
        if self.drac_m_s2 is not None and not self.calibrated:
            raise ValueError("conflict drac_m_s2 is defined only on a calibrated camera")
        if not (math.isfinite(self.distance) and self.distance >= 0 and math.isfinite(self.closing_speed)):
            raise ValueError("conflict distance must be finite and >= 0, closing_speed finite")
        for name in ("category_a", "category_b"):
            category_proto(getattr(self, name))  # ValueError for a name that is no category

    @property
    def severity(self) -> tuple[float, float]:
        """Sort key, most severe first: smallest TTC, then smallest PET (unset counts as infinite)."""
        return (
            math.inf if self.ttc_s is None else self.ttc_s,
            math.inf if self.pet_s is None else self.pet_s,
        )

    def describe(self) -> str:
        """One line an operator reads, e.g. 'pedestrian 3 and vehicle 7 head-on, TTC 0.8 s, PET 0.4 s'."""
        how = ", one stationary" if self.kind is ConflictKind.STATIONARY else f" {self.kind.value.replace('_', '-')}"
        parts = [
            f"{self.category_a.replace('_', '-')} {self.track_a} and {self.category_b.replace('_', '-')} "
            f"{self.track_b}{how}"
        ]
        if self.ttc_s is not None:
            parts.append(f"TTC {self.ttc_s:.1f} s")
        if self.pet_s is not None:
            parts.append(f"PET {self.pet_s:.1f} s")
        if self.drac_m_s2 is not None:
            parts.append(f"DRAC {self.drac_m_s2:.1f} m/s²")
        if len(parts) == 1:
            parts.append(f"{self.distance:.1f} m apart" if self.calibrated else f"{self.distance:.1f} box sizes apart")
        return ", ".join(parts)

    def to_proto(self) -> events_pb2.Conflict:
        message = events_pb2.Conflict(
            track_a=self.track_a,
            track_b=self.track_b,
            category_a=category_proto(self.category_a),
            category_b=category_proto(self.category_b),
            kind=self.kind.proto,
            calibrated=self.calibrated,
            distance=self.distance,
            closing_speed=self.closing_speed,
        )
        if self.ttc_s is not None:
            message.ttc_s = self.ttc_s
        if self.pet_s is not None:
            message.pet_s = self.pet_s
        if self.drac_m_s2 is not None:
            message.drac_m_s2 = self.drac_m_s2
        return message

    @classmethod
    def from_proto(cls, message: events_pb2.Conflict) -> Conflict:
        """The conflict in a message; ValueError for an unknown kind or category or an out-of-range measure."""
        return cls(
            track_a=message.track_a,
            track_b=message.track_b,
            category_a=category_name(message.category_a),
            category_b=category_name(message.category_b),
            kind=ConflictKind.from_proto(message.kind),
            calibrated=message.calibrated,
            ttc_s=message.ttc_s if message.HasField("ttc_s") else None,
            pet_s=message.pet_s if message.HasField("pet_s") else None,
            drac_m_s2=message.drac_m_s2 if message.HasField("drac_m_s2") else None,
            distance=message.distance,
            closing_speed=message.closing_speed,
        )
