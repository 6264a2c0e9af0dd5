"""The models of config/taskgen.yaml's nested sections (TaskGeneratorConfig in config.py composes them)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from riskwatch.config import FrozenModel
from riskwatch.domain import GroupFeatures, RiskLevel


class ThresholdRule(FrozenModel):
    """Send a group when `feature` crosses one of `bounds` in the risky `direction`."""

    # Any GroupFeatures field (an unset optional one counts as "nothing to fear").
    feature: str
    # below: risk grows as the value falls (distances); above: as it rises (density, counts).
    direction: Literal["below", "above"]
    bounds: tuple[float, ...] = Field(min_length=1)
    # The `reason` label of the task (and of the metric).
    reason: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    # Relative dead band: a value must pass a bound by this fraction of it to count as back across it.
    margin: float = Field(default=0.0, ge=0, lt=1)
    # Whether falling back across a bound sends the group again (`trigger_on_recovery` must be on too).
    recovery: bool = True

    @field_validator("feature")
    @classmethod
    def _a_feature(cls, feature: str) -> str:
        if feature not in GroupFeatures.names():
            raise ValueError(f"{feature!r} is not a group feature (one of {', '.join(GroupFeatures.names())})")
        return feature

    @field_validator("bounds")
    @classmethod
    def _sorted_distinct(cls, bounds: tuple[float, ...]) -> tuple[float, ...]:
        if len(set(bounds)) != len(bounds):
            raise ValueError("bounds must be distinct")
        return tuple(sorted(bounds))


class Zone(FrozenModel):
    """A polygon in normalised image coordinates (x, y in 0..1, origin top-left)."""

    name: str = Field(min_length=1)
    polygon: tuple[tuple[float, float], ...] = Field(min_length=3)
    # Added to the risk score of a group with a member inside (0..1).
    weight: float = Field(default=0.5, ge=0, le=1)

    @field_validator("polygon")
    @classmethod
    def _normalised(cls, polygon: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        for x, y in polygon:
            if not (0 <= x <= 1 and 0 <= y <= 1):
                raise ValueError(f"point ({x}, {y}) is outside 0..1 (coordinates are normalised by image size)")
        return polygon


class RefreshIntervals(FrozenModel):
    """Seconds after the last task of a group before it is re-assessed, by its last verdict."""

    none: float = Field(default=30.0, gt=0)
    low: float = Field(default=15.0, gt=0)
    medium: float = Field(default=6.0, gt=0)
    high: float = Field(default=3.0, gt=0)
    # No verdict yet (result pending or lost) or the last attempt failed.
    unassessed: float = Field(default=6.0, gt=0)
    # A verdict lower than the one before is re-checked this soon (if shorter than its level's interval),
    # so the aggregator can confirm the de-escalation after its hold (aggregator.yaml deescalate_hold_s).
    after_drop: float = Field(default=10.0, gt=0)

    def for_level(self, level: str) -> float:
        value: float = getattr(self, level, self.unassessed)
        return value


class CameraPolicy(FrozenModel):
    """Per-camera overrides; unset fields fall back to the global value."""

    zones: tuple[Zone, ...] = ()
    min_group_interval_s: float | None = Field(default=None, ge=0)
    camera_min_interval_s: float | None = Field(default=None, ge=0)
    # Relative share of the LLM budget when cameras compete for it.
    weight: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _unique_zone_names(self) -> CameraPolicy:
        names = [z.name for z in self.zones]
        if len(set(names)) != len(names):
            raise ValueError("zone names must be unique per camera")
        return self


class PriorityWeights(FrozenModel):
    """How the heuristic risk score (0..1) is built; components combine as 1 - Π(1 - c), then the conflict tier."""

    # Ped–vehicle distance d contributes 1 / (1 + d / distance_scale): 1 when touching, 0.5 at d = scale.
    distance_scale: float = Field(default=0.5, gt=0)
    # The group's worst conflict: time to collision t contributes 1 / (1 + t / ttc_scale), post-encroachment
    # time likewise with pet_scale, and DRAC d min(d / drac_scale, 1).
    ttc_scale: float = Field(default=1.0, gt=0)
    pet_scale: float = Field(default=0.5, gt=0)
    drac_scale: float = Field(default=3.4, gt=0)
    # A group with a measured conflict scores in [conflict_floor, 1], any other in [0, conflict_floor).
    conflict_floor: float = Field(default=0.5, gt=0, lt=1)
    # Density contributes density_weight * min(density / density_scale, 1).
    density_scale: float = Field(default=2.0, gt=0)
    density_weight: float = Field(default=0.6, ge=0, le=1)
    # The group's last verdict contributes this much, so known danger is refreshed first.
    verdict_none: float = Field(default=0.0, ge=0, le=1)
    verdict_low: float = Field(default=0.2, ge=0, le=1)
    verdict_medium: float = Field(default=0.5, ge=0, le=1)
    verdict_high: float = Field(default=0.8, ge=0, le=1)

    def for_verdict(self, level: str) -> float:
        value: float = getattr(self, f"verdict_{level}", 0.0)
        return value


class MeasuredBounds(FrozenModel):
    """A conflict reaches a level when any of its measures is past its bound (an unset bound is not watched)."""

    ttc_s: float | None = Field(default=None, gt=0)  # time to collision below this (s)
    pet_s: float | None = Field(default=None, gt=0)  # post-encroachment time below this (s)
    drac_m_s2: float | None = Field(default=None, gt=0)  # deceleration to avoid the crash above this (m/s²)

    def reached(self, features: GroupFeatures) -> bool:
        ttc, pet, drac = features.min_ttc_s, features.min_pet_s, features.max_drac_m_s2
        return (
            (self.ttc_s is not None and ttc is not None and ttc < self.ttc_s)
            or (self.pet_s is not None and pet is not None and pet < self.pet_s)
            or (self.drac_m_s2 is not None and drac is not None and drac > self.drac_m_s2)
        )


class ProvisionalPolicy(FrozenModel):
    """When a measured conflict raises a provisional result at once, before (and whatever) the LLM says."""

    enabled: bool = True
    high: MeasuredBounds = MeasuredBounds(ttc_s=1.0, pet_s=0.5, drac_m_s2=3.4)
    medium: MeasuredBounds = MeasuredBounds(ttc_s=2.0, pet_s=1.5)
    # An episode ends when the group's conflict has stayed within both levels' bounds for this many seconds
    # (capture time); only then may a new one be published at a level already published.
    episode_gap_s: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _medium_is_looser(self) -> ProvisionalPolicy:
        for name in ("ttc_s", "pet_s"):
            high, medium = getattr(self.high, name), getattr(self.medium, name)
            if high is not None and medium is not None and medium < high:
                raise ValueError(f"medium.{name} ({medium}) must not be below high.{name} ({high})")
        high_drac, medium_drac = self.high.drac_m_s2, self.medium.drac_m_s2
        if high_drac is not None and medium_drac is not None and medium_drac > high_drac:
            raise ValueError(f"medium.drac_m_s2 ({medium_drac}) must not be above high.drac_m_s2 ({high_drac})")
        return self

    def level(self, features: GroupFeatures) -> RiskLevel | None:
        """HIGH or MEDIUM when the group's measures are past that level's bounds, else None."""
        if not self.enabled:
            return None
        if self.high.reached(features):
            return RiskLevel.HIGH
        if self.medium.reached(features):
            return RiskLevel.MEDIUM
        return None


class SendNewGroups(StrEnum):
    """Which groups are sent without a danger measure (see taskgen.yaml `send_new_groups`)."""

    # Every new group is sent; membership changes and refreshes are sent whatever the group shows.
    ALWAYS = "always"
    # Only groups with a danger measure (a crossed threshold, a zone) are sent, and a calm group is refreshed
    # only while its last verdict says it is at risk.
    ON_TRIGGER = "on_trigger"


DEFAULT_THRESHOLDS = (
    # Conflicts first: the first rule crossed names the task's reason.
    ThresholdRule(feature="min_ttc_s", direction="below", bounds=(1.0, 2.0), reason="ttc", recovery=False),
    ThresholdRule(feature="min_pet_s", direction="below", bounds=(0.5, 1.0), reason="pet", recovery=False),
    ThresholdRule(feature="max_drac_m_s2", direction="above", bounds=(3.4,), reason="drac", recovery=False),
    ThresholdRule(feature="min_ped_vehicle_distance", direction="below", bounds=(0.5, 1.5), reason="distance"),
    ThresholdRule(feature="density", direction="above", bounds=(1.0, 2.0), reason="density"),
    ThresholdRule(feature="pedestrians", direction="above", bounds=(3, 6), reason="crowd"),
)

NO_CAMERA_OVERRIDES = CameraPolicy()
