"""The simulated model's judgement: a deterministic verdict for a group's features, usable as a test oracle.

Two rules are evaluated independently; the verdict's level is the higher of the two, and
`risk_types` lists every rule that fired, most severe first (conflict before crowding on a tie).

=========================  =====================================================  ======  ==========
rule                       condition (first matching row of the rule wins)        level   confidence
=========================  =====================================================  ======  ==========
vehicle_pedestrian_        min_ped_vehicle_distance < 0.5 (boxes touching)        high    0.90
conflict                   min_ped_vehicle_distance < 1.5                         medium  0.75
crowding                   pedestrians >= 6 or density >= 2.0                     medium  0.70
                           pedestrians >= 3 or density >= 1.0                     low     0.60
(nothing fired)            —                                                      none    0.80
=========================  =====================================================  ======  ==========

A null `min_ped_vehicle_distance` (no pedestrian/vehicle pair) never fires the conflict rule.
The verdict's confidence is that of its most severe rule; `involved_track_ids` is always the
group's `member_track_ids`; `description` is a fixed rendering of the features. `min_spacing`,
`two_wheelers` and `others` only appear in the description.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

CONFLICT_HIGH_DISTANCE = 0.5
CONFLICT_MEDIUM_DISTANCE = 1.5
CROWD_MEDIUM_PEDESTRIANS = 6
CROWD_MEDIUM_DENSITY = 2.0
CROWD_LOW_PEDESTRIANS = 3
CROWD_LOW_DENSITY = 1.0

VEHICLE_PEDESTRIAN_CONFLICT = "vehicle_pedestrian_conflict"
CROWDING = "crowding"

FEATURE_KEYS = (
    "camera_id",
    "group_id",
    "member_track_ids",
    "vehicles",
    "pedestrians",
    "two_wheelers",
    "others",
    "min_ped_vehicle_distance",
    "density",
    "min_spacing",
)
VERDICT_KEYS = ("risk_level", "risk_types", "description", "confidence", "involved_track_ids")
RISK_LEVELS = ("none", "low", "medium", "high")


class FeatureError(ValueError):
    """The features are missing a key or hold a value of the wrong type."""


class RiskLevel(IntEnum):
    """Ordered so that max() picks the most severe."""

    NONE = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def label(self) -> str:
        return RISK_LEVELS[self.value]


@dataclass(frozen=True, slots=True)
class GroupFeatures:
    """The features the scheduler sends for one group, validated."""

    camera_id: str
    group_id: str
    member_track_ids: tuple[int, ...]
    vehicles: int
    pedestrians: int
    two_wheelers: int
    others: int
    min_ped_vehicle_distance: float | None
    density: float
    min_spacing: float | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The simulated model's answer, in the reply schema."""

    risk_level: RiskLevel
    risk_types: tuple[str, ...]
    description: str
    confidence: float
    involved_track_ids: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "risk_level": self.risk_level.label,
            "risk_types": list(self.risk_types),
            "description": self.description,
            "confidence": self.confidence,
            "involved_track_ids": list(self.involved_track_ids),
        }


def parse_features(raw: Mapping[str, object]) -> GroupFeatures:
    """Validate a features mapping; raises FeatureError naming the first offending key."""
    if not isinstance(raw, Mapping):
        raise FeatureError("features must be a JSON object")
    missing = [key for key in FEATURE_KEYS if key not in raw]
    if missing:
        raise FeatureError(f"features lack key(s): {', '.join(missing)}")
    return GroupFeatures(
        camera_id=_string(raw, "camera_id"),
        group_id=_string(raw, "group_id"),
        member_track_ids=_int_list(raw, "member_track_ids"),
        vehicles=_count(raw, "vehicles"),
        pedestrians=_count(raw, "pedestrians"),
        two_wheelers=_count(raw, "two_wheelers"),
        others=_count(raw, "others"),
        min_ped_vehicle_distance=_optional_number(raw, "min_ped_vehicle_distance"),
        density=_number(raw, "density"),
        min_spacing=_optional_number(raw, "min_spacing"),
    )


def assess(features: GroupFeatures) -> Verdict:
    """Apply the rule table in the module docstring."""
    fired: list[tuple[RiskLevel, str, float]] = []
    distance = features.min_ped_vehicle_distance
    if distance is not None and distance < CONFLICT_HIGH_DISTANCE:
        fired.append((RiskLevel.HIGH, VEHICLE_PEDESTRIAN_CONFLICT, 0.90))
    elif distance is not None and distance < CONFLICT_MEDIUM_DISTANCE:
        fired.append((RiskLevel.MEDIUM, VEHICLE_PEDESTRIAN_CONFLICT, 0.75))
    if features.pedestrians >= CROWD_MEDIUM_PEDESTRIANS or features.density >= CROWD_MEDIUM_DENSITY:
        fired.append((RiskLevel.MEDIUM, CROWDING, 0.70))
    elif features.pedestrians >= CROWD_LOW_PEDESTRIANS or features.density >= CROWD_LOW_DENSITY:
        fired.append((RiskLevel.LOW, CROWDING, 0.60))
    # stable sort: on equal levels the conflict rule, appended first, stays first
    fired.sort(key=lambda rule: rule[0], reverse=True)
    level = fired[0][0] if fired else RiskLevel.NONE
    confidence = fired[0][2] if fired else 0.80
    return Verdict(
        risk_level=level,
        risk_types=tuple(name for _, name, _ in fired),
        description=_describe(features, level),
        confidence=confidence,
        involved_track_ids=features.member_track_ids,
    )


def verdict_for(features: Mapping[str, object]) -> dict[str, Any]:
    """The reply the simulator gives for `features`, as the JSON object it sends."""
    return assess(parse_features(features)).as_dict()


def _describe(features: GroupFeatures, level: RiskLevel) -> str:
    scene = (
        f"{features.vehicles} vehicle(s), {features.pedestrians} pedestrian(s), "
        f"{features.two_wheelers} two-wheeler(s), {features.others} other object(s); "
        f"density {features.density:.2f}"
    )
    if features.min_spacing is not None:
        scene += f", closest spacing {features.min_spacing:.2f}"
    distance = features.min_ped_vehicle_distance
    if distance is not None and distance < CONFLICT_HIGH_DISTANCE:
        lead = f"A pedestrian is in contact with a vehicle (distance {distance:.2f})."
    elif distance is not None and distance < CONFLICT_MEDIUM_DISTANCE:
        lead = f"A pedestrian is close to a vehicle (distance {distance:.2f})."
    elif level is not RiskLevel.NONE:
        lead = f"Pedestrians are crowding ({features.pedestrians} people, density {features.density:.2f})."
    else:
        lead = "No hazard observed."
    return f"{lead} Scene: {scene}."


def _string(raw: Mapping[str, object], key: str) -> str:
    value = raw[key]
    if not isinstance(value, str) or not value:
        raise FeatureError(f"features.{key} must be a non-empty string")
    return value


def _count(raw: Mapping[str, object], key: str) -> int:
    value = raw[key]
    # bool is an int subclass; `true` for a count is a sender bug worth surfacing
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FeatureError(f"features.{key} must be a non-negative integer")
    return value


def _int_list(raw: Mapping[str, object], key: str) -> tuple[int, ...]:
    value = raw[key]
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise FeatureError(f"features.{key} must be a list of integers")
    items: list[int] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            raise FeatureError(f"features.{key} must be a list of integers")
        items.append(item)
    return tuple(items)


def _number(raw: Mapping[str, object], key: str) -> float:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FeatureError(f"features.{key} must be a finite number")
    return float(value)


def _optional_number(raw: Mapping[str, object], key: str) -> float | None:
    return None if raw[key] is None else _number(raw, key)
