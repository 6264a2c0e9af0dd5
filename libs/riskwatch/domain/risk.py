"""Risk levels (one ordered enum, UNASSESSED < NONE < LOW < MEDIUM < HIGH, with the proto RiskLevel) and risk types."""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType

from riskwatch.v1 import events_pb2


class RiskLevel(IntEnum):
    """How dangerous a group (or a camera, its worst group) is; ordered, so comparisons and max() mean severity.

    UNASSESSED is "no verdict": none yet, or the last assessment failed (proto RISK_LEVEL_UNSPECIFIED).
    """

    UNASSESSED = 0
    NONE = 1
    LOW = 2
    MEDIUM = 3
    HIGH = 4

    @property
    def label(self) -> str:
        """'unassessed', 'none', 'low', 'medium' or 'high': the LLM's reply, the simulator's, taskgen.yaml's keys."""
        return self.name.lower()

    @property
    def protocol_name(self) -> str:
        """The name in the gateway's WebSocket and REST JSON (PROTOCOL.md), which spells UNASSESSED 'unspecified'."""
        return "unspecified" if self is RiskLevel.UNASSESSED else self.label

    @property
    def proto(self) -> events_pb2.RiskLevel.ValueType:
        return _TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> RiskLevel:
        """The level of a proto RiskLevel; ValueError for a number this build does not know."""
        try:
            return _FROM_PROTO[value]
        except KeyError:
            raise ValueError(f"unknown RiskLevel {value}") from None

    @classmethod
    def from_label(cls, label: str) -> RiskLevel:
        """The level named `label` (exactly, lower case); ValueError for any other string."""
        level = _BY_LABEL.get(label)
        if level is None:
            raise ValueError(f"unknown risk level {label!r}")
        return level


# The levels a verdict may carry: what the LLM is asked to answer with.
VERDICT_LEVELS = (RiskLevel.NONE, RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH)

_TO_PROTO: dict[RiskLevel, events_pb2.RiskLevel.ValueType] = {
    RiskLevel.UNASSESSED: events_pb2.RISK_LEVEL_UNSPECIFIED,
    RiskLevel.NONE: events_pb2.RISK_LEVEL_NONE,
    RiskLevel.LOW: events_pb2.RISK_LEVEL_LOW,
    RiskLevel.MEDIUM: events_pb2.RISK_LEVEL_MEDIUM,
    RiskLevel.HIGH: events_pb2.RISK_LEVEL_HIGH,
}
_FROM_PROTO: dict[int, RiskLevel] = {int(proto): level for level, proto in _TO_PROTO.items()}
_BY_LABEL = {level.label: level for level in RiskLevel}

# The risk types a verdict may name, with what each means (the default prompt lists them for the LLM). A camera's
# custom prompt may ask for more: the scheduler's prompts.yaml `risk_types` adds to these.
RISK_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "vehicle_pedestrian_conflict": "a vehicle and a pedestrian on converging paths or too close",
        "near_miss": "two road users on a collision course or passing within moments of each other",
        "tailgating": "a vehicle following another too closely",
        "sudden_lane_change": "a vehicle cutting across lanes abruptly",
        "wrong_way_driving": "a vehicle moving against the direction of traffic",
        "red_light_running": "a vehicle entering a junction against a red signal",
        "emergency_lane_use": "a vehicle driving or stopping in the emergency lane or hard shoulder",
        "crowding": "people or vehicles packed densely enough to be dangerous",
    }
)
