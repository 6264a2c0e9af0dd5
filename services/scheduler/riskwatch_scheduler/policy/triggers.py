"""Per-group triggers: what changed since a group was last sent (membership, thresholds, zones, verdict age)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from riskwatch.domain import GroupFeatures, RiskLevel
from riskwatch.v1 import events_pb2
from riskwatch_scheduler.policy.settings import PriorityWeights, SendNewGroups, ThresholdRule, Zone

NEW = "new"
MEMBERSHIP = "membership"
ZONE = "zone"
RECOVERY = "recovery"
REFRESH = "refresh"


@dataclass(frozen=True, slots=True)
class Observation:
    """What the policy looks at in one group of one frame."""

    members: frozenset[int]
    bands: tuple[int, ...]  # per threshold rule: how many of its bounds are crossed
    zones: frozenset[str]  # zones with at least one member's ground point inside

    @property
    def calm(self) -> bool:
        """No danger measure: no threshold bound crossed, no zone entered."""
        return not self.zones and not any(self.bands)


@dataclass(slots=True)
class GroupMemory:
    """The group as it was when last sent, so the next frames are compared with what the LLM saw."""

    sent: Observation
    last_sent: float
    last_seen: float


@dataclass(slots=True)
class VerdictMemory:
    """The latest verdict (or failure) the LLM gave for a group."""

    level: RiskLevel  # UNASSESSED after a failure
    capture: float
    last_seen: float
    # Lower than the verdict before it and not yet confirmed by another verdict at this level.
    dropped: bool = False


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def band(rule: ThresholdRule, value: float | None, previous: int) -> int:
    """How many of `rule.bounds` `value` is past, with the dead band applied to the bounds crossed before."""
    if value is None:
        return 0
    bounds = rule.bounds  # ascending
    crossed = 0
    for i, bound in enumerate(bounds):
        if rule.direction == "above":
            was = i < previous  # the lowest `previous` bounds were crossed
            limit = bound * (1 - rule.margin) if was else bound
            crossed += value >= limit
        else:
            was = i >= len(bounds) - previous  # the highest `previous` bounds were crossed
            limit = bound * (1 + rule.margin) if was else bound
            crossed += value < limit
    return crossed


def point_in_polygon(x: float, y: float, polygon: Sequence[tuple[float, float]]) -> bool:
    inside = False
    j = len(polygon) - 1
    for i, (xi, yi) in enumerate(polygon):
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def zones_entered(event: events_pb2.DetectionEvent, members: frozenset[int], zones: Iterable[Zone]) -> frozenset[str]:
    """Zones containing the ground point (bottom centre of the box) of at least one member."""
    zones = tuple(zones)
    if not zones or event.image_width <= 0 or event.image_height <= 0:
        return frozenset()
    points = [
        ((d.box.x1 + d.box.x2) / 2 / event.image_width, d.box.y2 / event.image_height)
        for d in event.detections
        if d.track_id in members
    ]
    return frozenset(z.name for z in zones if any(point_in_polygon(x, y, z.polygon) for x, y in points))


def observe(
    event: events_pb2.DetectionEvent,
    group: events_pb2.Group,
    rules: Sequence[ThresholdRule],
    zones: Iterable[Zone],
    memory: GroupMemory | None,
) -> Observation:
    members = frozenset(group.member_track_ids)
    previous = memory.sent.bands if memory is not None and len(memory.sent.bands) == len(rules) else (0,) * len(rules)
    features = GroupFeatures.from_proto(group.features)
    bands = tuple(band(rule, features.value(rule.feature), prev) for rule, prev in zip(rules, previous, strict=True))
    return Observation(members, bands, zones_entered(event, members, zones))


def trigger(
    now: Observation,
    memory: GroupMemory | None,
    *,
    rules: Sequence[ThresholdRule],
    min_jaccard: float,
    on_recovery: bool,
    refresh_after: float,
    clock: float,
    send_new: SendNewGroups = SendNewGroups.ALWAYS,
    verdict_level: RiskLevel = RiskLevel.UNASSESSED,
) -> str | None:
    """The reason to send this group now, or None. Checked most urgent first; the first that holds is named.

    With `send_new` ON_TRIGGER a group is compared with a calm one until it is first sent (so it goes out when a
    danger measure appears, named by it), and a calm group is sent for a membership change never, for a refresh
    only while its last verdict is above NONE (known danger is re-checked; a calm group the LLM found calm is not).
    """
    danger_only = send_new is SendNewGroups.ON_TRIGGER
    if memory is None:
        if not danger_only:
            return NEW
        sent = Observation(now.members, (0,) * len(now.bands), frozenset())
    else:
        sent = memory.sent
    if now.zones - sent.zones:
        return ZONE
    for rule, before, after in zip(rules, sent.bands, now.bands, strict=True):
        if after > before:
            return rule.reason
    if memory is None:
        return None
    quiet = danger_only and now.calm
    if jaccard(now.members, sent.members) < min_jaccard and not quiet:
        return MEMBERSHIP
    recovered = any(r.recovery and a < b for r, a, b in zip(rules, now.bands, sent.bands, strict=True))
    if on_recovery and (sent.zones - now.zones or recovered):
        return RECOVERY
    if clock - memory.last_sent >= refresh_after and (not quiet or verdict_level > RiskLevel.NONE):
        return REFRESH
    return None


def risk_score(
    features: GroupFeatures, weights: PriorityWeights, zone_weights: Iterable[float], verdict_level: RiskLevel
) -> float:
    """A cheap 0..1 guess at how risky a group is; orders tasks when the LLM budget is short.

    The components combine as 1 - Π(1 - c); a group with a measured conflict (TTC, PET or DRAC) then scores in
    [conflict_floor, 1] and any other in [0, conflict_floor), so near-misses go first.
    """
    parts = [weights.for_verdict(verdict_level.label), *zone_weights]
    if features.min_ped_vehicle_distance is not None:
        parts.append(1.0 / (1.0 + max(features.min_ped_vehicle_distance, 0.0) / weights.distance_scale))
    if features.min_ttc_s is not None:
        parts.append(1.0 / (1.0 + max(features.min_ttc_s, 0.0) / weights.ttc_scale))
    if features.min_pet_s is not None:
        parts.append(1.0 / (1.0 + max(features.min_pet_s, 0.0) / weights.pet_scale))
    if features.max_drac_m_s2 is not None:
        parts.append(min(max(features.max_drac_m_s2, 0.0) / weights.drac_scale, 1.0))
    parts.append(weights.density_weight * min(max(features.density, 0.0) / weights.density_scale, 1.0))
    safe = 1.0
    for part in parts:
        safe *= 1.0 - min(max(part, 0.0), 1.0)
    floor = weights.conflict_floor
    measured = any(v is not None for v in (features.min_ttc_s, features.min_pet_s, features.max_drac_m_s2))
    return round(floor + (1.0 - floor) * (1.0 - safe) if measured else floor * (1.0 - safe), 4)
