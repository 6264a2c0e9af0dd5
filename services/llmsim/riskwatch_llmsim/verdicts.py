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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from riskwatch.domain import GroupFeatures, PromptFeatures, RiskLevel

CONFLICT_HIGH_DISTANCE = 0.5
CONFLICT_MEDIUM_DISTANCE = 1.5
CROWD_MEDIUM_PEDESTRIANS = 6
CROWD_MEDIUM_DENSITY = 2.0
CROWD_LOW_PEDESTRIANS = 3
CROWD_LOW_DENSITY = 1.0

VEHICLE_PEDESTRIAN_CONFLICT = "vehicle_pedestrian_conflict"
CROWDING = "crowding"

FEATURE_KEYS = PromptFeatures.json_keys()
VERDICT_KEYS = ("risk_level", "risk_types", "description", "confidence", "involved_track_ids")


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


def parse_features(raw: Mapping[str, object]) -> PromptFeatures:
    """Validate a features mapping; raises FeatureError naming the first offending key."""
    return PromptFeatures.from_dict(raw)


def assess(prompt: PromptFeatures) -> Verdict:
    """Apply the rule table in the module docstring."""
    features = prompt.features
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
        involved_track_ids=prompt.member_track_ids,
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
