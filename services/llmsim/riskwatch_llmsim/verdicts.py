"""The simulated model's judgement: a deterministic verdict for a group's features, usable as a test oracle.

Three rules are evaluated independently; the verdict's level is the highest, and `risk_types` lists every rule
that fired, most severe first (on a tie: near miss, then conflict, then crowding).

=========================  =====================================================  ======  ==========
rule                       condition (first matching row of the rule wins)        level   confidence
=========================  =====================================================  ======  ==========
near_miss                  min_ttc_s < 1.0 or min_pet_s < 0.5                      high    0.90
                           or max_drac_m_s2 > 3.4
                           min_ttc_s < 2.0 or min_pet_s < 1.5                      medium  0.80
                           min_ttc_s < 3.0                                         low     0.65
vehicle_pedestrian_        min_ped_vehicle_distance < 0.5 (boxes touching)        high    0.90
conflict                   min_ped_vehicle_distance < 1.5                         medium  0.75
crowding                   pedestrians >= 6 or density >= 2.0                     medium  0.70
                           pedestrians >= 3 or density >= 1.0                     low     0.60
(nothing fired)            —                                                      none    0.80
=========================  =====================================================  ======  ==========

The bounds of near_miss are those of the task generator's conflict triggers and provisional levels
(config/taskgen.yaml). Standing still: when the group's motion is known and its fastest member is slower than
0.2 box sizes per second (`max_speed_box_s`; people standing together, a parked car beside a waiting pedestrian),
the two proximity rules (vehicle_pedestrian_conflict, crowding) fire one level lower (high → medium → low →
not at all): closeness without motion is not a collision course. An unknown speed (null: no estimate yet) leaves
them as they are. A null measure never fires its rule.

The verdict's confidence is that of its most severe rule; `involved_track_ids` is the conflict's pair when
near_miss fired and the conflict is given, else the group's `member_track_ids`; `description` is a fixed rendering
of the features. `min_spacing`, `two_wheelers` and `others` only appear in the description.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from riskwatch.domain import GroupFeatures, PromptFeatures, RiskLevel

NEAR_MISS_HIGH_TTC_S = 1.0
NEAR_MISS_HIGH_PET_S = 0.5
NEAR_MISS_HIGH_DRAC_M_S2 = 3.4
NEAR_MISS_MEDIUM_TTC_S = 2.0
NEAR_MISS_MEDIUM_PET_S = 1.5
NEAR_MISS_LOW_TTC_S = 3.0
STANDING_SPEED_BOX_S = 0.2
CONFLICT_HIGH_DISTANCE = 0.5
CONFLICT_MEDIUM_DISTANCE = 1.5
CROWD_MEDIUM_PEDESTRIANS = 6
CROWD_MEDIUM_DENSITY = 2.0
CROWD_LOW_PEDESTRIANS = 3
CROWD_LOW_DENSITY = 1.0

NEAR_MISS = "near_miss"
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
    fired = [rule for rule in (_near_miss(features), *_proximity(features)) if rule is not None]
    # stable sort: on equal levels the rules keep the order above
    fired.sort(key=lambda rule: rule[0], reverse=True)
    level = fired[0][0] if fired else RiskLevel.NONE
    confidence = fired[0][2] if fired else 0.80
    conflict = prompt.conflict
    involved = (
        (conflict.track_a, conflict.track_b)
        if conflict is not None and any(name == NEAR_MISS for _, name, _ in fired)
        else prompt.member_track_ids
    )
    return Verdict(
        risk_level=level,
        risk_types=tuple(name for _, name, _ in fired),
        description=_describe(prompt, level),
        confidence=confidence,
        involved_track_ids=involved,
    )


Rule = tuple[RiskLevel, str, float]


def _near_miss(features: GroupFeatures) -> Rule | None:
    ttc = math.inf if features.min_ttc_s is None else features.min_ttc_s
    pet = math.inf if features.min_pet_s is None else features.min_pet_s
    drac = 0.0 if features.max_drac_m_s2 is None else features.max_drac_m_s2
    if ttc < NEAR_MISS_HIGH_TTC_S or pet < NEAR_MISS_HIGH_PET_S or drac > NEAR_MISS_HIGH_DRAC_M_S2:
        return (RiskLevel.HIGH, NEAR_MISS, 0.90)
    if ttc < NEAR_MISS_MEDIUM_TTC_S or pet < NEAR_MISS_MEDIUM_PET_S:
        return (RiskLevel.MEDIUM, NEAR_MISS, 0.80)
    if ttc < NEAR_MISS_LOW_TTC_S:
        return (RiskLevel.LOW, NEAR_MISS, 0.65)
    return None


def _proximity(features: GroupFeatures) -> list[Rule]:
    """The box-geometry rules, one level lower for a group known to be standing still."""
    fired: list[Rule] = []
    distance = features.min_ped_vehicle_distance
    if distance is not None and distance < CONFLICT_HIGH_DISTANCE:
        fired.append((RiskLevel.HIGH, VEHICLE_PEDESTRIAN_CONFLICT, 0.90))
    elif distance is not None and distance < CONFLICT_MEDIUM_DISTANCE:
        fired.append((RiskLevel.MEDIUM, VEHICLE_PEDESTRIAN_CONFLICT, 0.75))
    if features.pedestrians >= CROWD_MEDIUM_PEDESTRIANS or features.density >= CROWD_MEDIUM_DENSITY:
        fired.append((RiskLevel.MEDIUM, CROWDING, 0.70))
    elif features.pedestrians >= CROWD_LOW_PEDESTRIANS or features.density >= CROWD_LOW_DENSITY:
        fired.append((RiskLevel.LOW, CROWDING, 0.60))
    if features.max_speed_box_s is None or features.max_speed_box_s >= STANDING_SPEED_BOX_S:
        return fired
    return [(RiskLevel(level - 1), name, confidence) for level, name, confidence in fired if level > RiskLevel.LOW]


def verdict_for(features: Mapping[str, object]) -> dict[str, Any]:
    """The reply the simulator gives for `features`, as the JSON object it sends."""
    return assess(parse_features(features)).as_dict()


def _describe(prompt: PromptFeatures, level: RiskLevel) -> str:
    features = prompt.features
    scene = (
        f"{features.vehicles} vehicle(s), {features.pedestrians} pedestrian(s), "
        f"{features.two_wheelers} two-wheeler(s), {features.others} other object(s); "
        f"density {features.density:.2f}"
    )
    if features.min_spacing is not None:
        scene += f", closest spacing {features.min_spacing:.2f}"
    if features.max_speed_box_s is not None:
        scene += f", fastest member {features.max_speed_box_s:.2f} box sizes/s"
    distance = features.min_ped_vehicle_distance
    near_miss = _near_miss(features)
    if near_miss is not None:
        pair = prompt.conflict.describe() if prompt.conflict is not None else "two members"
        lead = f"Near miss: {pair}."
    elif level is RiskLevel.NONE:
        lead = "No hazard observed."
    elif distance is not None and distance < CONFLICT_HIGH_DISTANCE:
        lead = f"A pedestrian is in contact with a vehicle (distance {distance:.2f})."
    elif distance is not None and distance < CONFLICT_MEDIUM_DISTANCE:
        lead = f"A pedestrian is close to a vehicle (distance {distance:.2f})."
    else:
        lead = f"Pedestrians are crowding ({features.pedestrians} people, density {features.density:.2f})."
    return f"{lead} Scene: {scene}."
