"""Group features: what the detector measures about a group, with its proto message and the JSON forms on the wire.

A new feature is one field here (plus the proto field of the same name): the detector fills it, the task
generator's thresholds may watch it, the gateway's JSON and the LLM's prompt carry it, the simulator parses it.
The prompt's JSON also carries each member's motion (MemberMotion) and the group's worst conflict (domain.Conflict).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

from riskwatch.domain.conflicts import Conflict, ConflictKind, category_name
from riskwatch.v1 import events_pb2

# In the LLM request, the line after which the PromptFeatures JSON follows (the simulator looks for it).
FEATURES_MARKER = "Group features (JSON):"


class FeatureError(ValueError):
    """Features that are missing a key or hold a value of the wrong type; the message names the key."""


@dataclass(frozen=True, slots=True)
class GroupFeatures:
    """Distances are in units of the members' mean box size (independent of resolution and camera distance);
    times in seconds."""

    vehicles: int = 0
    pedestrians: int = 0
    two_wheelers: int = 0
    others: int = 0
    # Smallest pedestrian–vehicle gap; None when the group lacks either category.
    min_ped_vehicle_distance: float | None = None
    # Members per unit of normalised area.
    density: float = 0.0
    # Smallest gap between any two members; None for single-member groups.
    min_spacing: float | None = None
    # The worst surrogate safety measures over the group's pairs (detector README): smallest time to collision
    # and post-encroachment time (s), largest deceleration rate to avoid the crash (m/s², calibrated cameras
    # only); None when no pair has one.
    min_ttc_s: float | None = None
    min_pet_s: float | None = None
    max_drac_m_s2: float | None = None
    # Fastest member, in box sizes per second; None when no member's motion is estimated yet.
    max_speed_box_s: float | None = None

    @staticmethod
    def names() -> tuple[str, ...]:
        """Every feature's name, in the order the JSON forms list them."""
        return tuple(_KINDS)

    @classmethod
    def from_proto(cls, message: events_pb2.GroupFeatures) -> GroupFeatures:
        present = {field.name for field, _ in message.ListFields()}  # an optional field is listed when set
        values: dict[str, Any] = {
            name: getattr(message, name) if kind is not _OPTIONAL or name in present else None
            for name, kind in _KINDS.items()
        }
        return cls(**values)

    def to_proto(self) -> events_pb2.GroupFeatures:
        values: dict[str, Any] = {name: value for name, value in self._items() if value is not None}
        return events_pb2.GroupFeatures(**values)

    def to_dict(self, *, digits: int, omit_unset: bool) -> dict[str, Any]:
        """The JSON form: numbers rounded to `digits`; an unset optional feature left out or shown as null."""
        out: dict[str, Any] = {}
        for name, value in self._items():
            if value is None:
                if not omit_unset:
                    out[name] = None
            else:
                out[name] = round(value, digits) if isinstance(value, float) else value
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> GroupFeatures:
        """Validate the features in a JSON object (every key required); FeatureError names the first bad key."""
        missing = [name for name in _KINDS if name not in raw]
        if missing:
            raise FeatureError(f"features lack key(s): {', '.join(missing)}")
        parse = {int: _count, float: _number, _OPTIONAL: _optional_number}
        values: dict[str, Any] = {name: parse[kind](raw, name) for name, kind in _KINDS.items()}
        return cls(**values)

    def value(self, name: str) -> float | None:
        """The feature called `name` as a number (None when unset); KeyError for a name that is no feature."""
        if name not in _KINDS:
            raise KeyError(name)
        value: int | float | None = getattr(self, name)
        return None if value is None else float(value)

    def _items(self) -> list[tuple[str, int | float | None]]:
        return [(name, getattr(self, name)) for name in _KINDS]


@dataclass(frozen=True, slots=True)
class MemberMotion:
    """How one member moves, as the LLM is shown it (Detection.kinematics): speed in box sizes per second and compass
    heading in the image (0 = up, 90 = right), and on the ground (m/s, degrees) when the camera is calibrated. The
    numbers are None while the track has too little history (`estimated` false) or the camera is not calibrated."""

    track_id: int
    category: str  # 'vehicle', 'pedestrian', 'two_wheeler' or 'other'
    estimated: bool
    speed_box_s: float | None = None
    heading_deg: float | None = None
    speed_m_s: float | None = None
    ground_heading_deg: float | None = None

    @classmethod
    def from_proto(cls, detection: events_pb2.Detection) -> MemberMotion:
        category = (
            "other" if detection.category == events_pb2.CATEGORY_UNSPECIFIED else category_name(detection.category)
        )
        motion = detection.kinematics
        if not motion.estimated:
            return cls(detection.track_id, category, estimated=False)
        return cls(
            detection.track_id,
            category,
            estimated=True,
            speed_box_s=motion.speed_box_s,
            heading_deg=motion.heading_deg,
            speed_m_s=motion.speed_m_s if motion.HasField("speed_m_s") else None,
            ground_heading_deg=motion.ground_heading_deg if motion.HasField("ground_heading_deg") else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "category": self.category,
            "estimated": self.estimated,
            **{name: _rounded(getattr(self, name)) for name in _MOTION_NUMBERS},
        }

    @classmethod
    def from_dict(cls, raw: object, where: str) -> MemberMotion:
        item = _object(raw, where)
        category = _string(item, "category", where)
        if category not in _CATEGORIES:
            raise FeatureError(f"{where}.category must be one of {', '.join(_CATEGORIES)}")
        numbers = {name: _optional_number(item, name, where) for name in _MOTION_NUMBERS}
        return cls(_count(item, "track_id", where), category, _bool(item, "estimated", where), **numbers)


@dataclass(frozen=True, slots=True)
class PromptFeatures:
    """One group as the LLM is shown it (the prompt's features JSON): whose group, its members, its features, how its
    members move and its most severe pair's conflict (None when no pair has a measure)."""

    camera_id: str
    group_id: str
    member_track_ids: tuple[int, ...]
    features: GroupFeatures
    members: tuple[MemberMotion, ...] = ()
    conflict: Conflict | None = None

    @staticmethod
    def json_keys() -> tuple[str, ...]:
        return ("camera_id", "group_id", "member_track_ids", *GroupFeatures.names(), "members", "conflict")

    @classmethod
    def from_task(cls, task: events_pb2.AssessmentTask) -> PromptFeatures:
        return cls(
            task.camera_id,
            task.group_id,
            tuple(task.member_track_ids),
            GroupFeatures.from_proto(task.features),
            tuple(MemberMotion.from_proto(d) for d in task.members),
            Conflict.from_proto(task.conflict) if task.HasField("conflict") else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "camera_id": self.camera_id,
            "group_id": self.group_id,
            "member_track_ids": list(self.member_track_ids),
            **self.features.to_dict(digits=3, omit_unset=False),
            "members": [member.to_dict() for member in self.members],
            "conflict": None if self.conflict is None else _conflict_dict(self.conflict),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> PromptFeatures:
        """Validate a prompt's features object; FeatureError names the missing keys or the first bad one."""
        if not isinstance(raw, Mapping):
            raise FeatureError("features must be a JSON object")
        missing = [key for key in cls.json_keys() if key not in raw]
        if missing:
            raise FeatureError(f"features lack key(s): {', '.join(missing)}")
        members = raw["members"]
        if not isinstance(members, Sequence) or isinstance(members, str | bytes) or len(members) > MAX_MEMBERS:
            raise FeatureError(f"features.members must be a list of at most {MAX_MEMBERS} objects")
        return cls(
            camera_id=_string(raw, "camera_id"),
            group_id=_string(raw, "group_id"),
            member_track_ids=_int_list(raw, "member_track_ids"),
            features=GroupFeatures.from_dict(raw),
            members=tuple(MemberMotion.from_dict(m, f"features.members[{i}]") for i, m in enumerate(members)),
            conflict=None if raw["conflict"] is None else _conflict_from_dict(raw["conflict"]),
        )


# At most this many members are described to the LLM (a group is bounded by the detector's grouping).
MAX_MEMBERS = 256
_CATEGORIES = ("vehicle", "pedestrian", "two_wheeler", "other")
_MOTION_NUMBERS = ("speed_box_s", "heading_deg", "speed_m_s", "ground_heading_deg")
_CONFLICT_NUMBERS = ("ttc_s", "pet_s", "drac_m_s2")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _conflict_dict(conflict: Conflict) -> dict[str, Any]:
    """The prompt's form of a conflict: the proto's fields by name, numbers rounded, unset measures null."""
    return {
        "track_a": conflict.track_a,
        "track_b": conflict.track_b,
        "category_a": conflict.category_a,
        "category_b": conflict.category_b,
        "kind": conflict.kind.value,
        "calibrated": conflict.calibrated,
        **{name: _rounded(getattr(conflict, name)) for name in _CONFLICT_NUMBERS},
        "distance": round(conflict.distance, 3),
        "closing_speed": round(conflict.closing_speed, 3),
    }


def _conflict_from_dict(raw: object) -> Conflict:
    where = "features.conflict"
    item = _object(raw, where)
    kind = _string(item, "kind", where)
    if kind not in {k.value for k in ConflictKind}:
        raise FeatureError(f"{where}.kind must be one of {', '.join(k.value for k in ConflictKind)}")
    try:
        return Conflict(
            track_a=_count(item, "track_a", where),
            track_b=_count(item, "track_b", where),
            category_a=_string(item, "category_a", where),
            category_b=_string(item, "category_b", where),
            kind=ConflictKind(kind),
            calibrated=_bool(item, "calibrated", where),
            ttc_s=_optional_number(item, "ttc_s", where),
            pet_s=_optional_number(item, "pet_s", where),
            drac_m_s2=_optional_number(item, "drac_m_s2", where),
            distance=_number(item, "distance", where),
            closing_speed=_number(item, "closing_speed", where),
        )
    except ValueError as error:  # out of range, or an unknown category
        raise FeatureError(f"{where}: {error}") from None


_OPTIONAL = object()  # the kind of a `float | None` feature


def _kind(hint: object) -> object:
    if hint is int or hint is float:
        return hint
    if hint == float | None:
        return _OPTIONAL
    raise TypeError(f"a group feature is an int, a float or an optional float, not {hint}")


_KINDS: dict[str, object] = {
    f.name: _kind(hint) for f in fields(GroupFeatures) for hint in [get_type_hints(GroupFeatures)[f.name]]
}


def _object(raw: object, where: str) -> Mapping[str, object]:
    if not isinstance(raw, Mapping):
        raise FeatureError(f"{where} must be a JSON object")
    return raw


def _value(raw: Mapping[str, object], key: str, where: str) -> object:
    if key not in raw:
        raise FeatureError(f"{where} lacks key {key}")
    return raw[key]


def _string(raw: Mapping[str, object], key: str, where: str = "features") -> str:
    value = _value(raw, key, where)
    if not isinstance(value, str) or not value:
        raise FeatureError(f"{where}.{key} must be a non-empty string")
    return value


def _bool(raw: Mapping[str, object], key: str, where: str) -> bool:
    value = _value(raw, key, where)
    if not isinstance(value, bool):
        raise FeatureError(f"{where}.{key} must be true or false")
    return value


def _count(raw: Mapping[str, object], key: str, where: str = "features") -> int:
    value = _value(raw, key, where)
    # bool is an int subclass; `true` for a count is a sender bug worth surfacing
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FeatureError(f"{where}.{key} must be a non-negative integer")
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


def _number(raw: Mapping[str, object], key: str, where: str = "features") -> float:
    value = _value(raw, key, where)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FeatureError(f"{where}.{key} must be a finite number")
    return float(value)


def _optional_number(raw: Mapping[str, object], key: str, where: str = "features") -> float | None:
    return None if _value(raw, key, where) is None else _number(raw, key, where)
