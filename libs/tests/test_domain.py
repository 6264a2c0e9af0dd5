"""The domain vocabulary: levels order and convert both ways, features round-trip every wire form, ids validate."""

from __future__ import annotations

import json

import pytest

from riskwatch.domain import (
    VERDICT_LEVELS,
    FailureKind,
    FeatureError,
    GroupFeatures,
    PromptFeatures,
    RiskLevel,
    check_camera_id,
    is_valid_camera_id,
)
from riskwatch.errors import InvalidRequest
from riskwatch.v1 import events_pb2

# --- risk levels ---------------------------------------------------------------------------------


def test_levels_order_by_severity_with_unassessed_lowest() -> None:
    assert sorted(RiskLevel, reverse=True) == [
        RiskLevel.HIGH,
        RiskLevel.MEDIUM,
        RiskLevel.LOW,
        RiskLevel.NONE,
        RiskLevel.UNASSESSED,
    ]
    assert max(RiskLevel.LOW, RiskLevel.HIGH, RiskLevel.NONE) is RiskLevel.HIGH
    assert VERDICT_LEVELS == (RiskLevel.NONE, RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH)


@pytest.mark.parametrize(
    ("level", "proto", "label", "protocol_name"),
    [
        (RiskLevel.UNASSESSED, events_pb2.RISK_LEVEL_UNSPECIFIED, "unassessed", "unspecified"),
        (RiskLevel.NONE, events_pb2.RISK_LEVEL_NONE, "none", "none"),
        (RiskLevel.LOW, events_pb2.RISK_LEVEL_LOW, "low", "low"),
        (RiskLevel.MEDIUM, events_pb2.RISK_LEVEL_MEDIUM, "medium", "medium"),
        (RiskLevel.HIGH, events_pb2.RISK_LEVEL_HIGH, "high", "high"),
    ],
)
def test_each_level_converts_to_and_from_proto_and_its_names(
    level: RiskLevel, proto: int, label: str, protocol_name: str
) -> None:
    assert level.proto == proto and RiskLevel.from_proto(proto) is level
    assert level.label == label and RiskLevel.from_label(label) is level
    assert level.protocol_name == protocol_name


def test_unknown_levels_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown RiskLevel 9"):
        RiskLevel.from_proto(9)
    with pytest.raises(ValueError, match="severe"):
        RiskLevel.from_label("severe")
    with pytest.raises(ValueError):
        RiskLevel.from_label("High")  # labels are exact; callers normalise what a model replies


# --- failure kinds -------------------------------------------------------------------------------


def test_every_failure_kind_has_its_proto_value_and_back() -> None:
    assert {kind.proto for kind in FailureKind} == set(events_pb2.FailureKind.values())
    for kind in FailureKind:
        assert FailureKind.from_proto(kind.proto) is kind
        # the name on metrics and in alerts is the proto name without its prefix
        assert events_pb2.FailureKind.Name(kind.proto) == "FAILURE_KIND_" + kind.value.upper()
    with pytest.raises(ValueError):
        FailureKind.from_proto(42)


def test_every_proto_risk_level_is_a_domain_level() -> None:
    assert {level.proto for level in RiskLevel} == set(events_pb2.RiskLevel.values())


# --- group features ------------------------------------------------------------------------------

CONFLICT = GroupFeatures(vehicles=1, pedestrians=2, min_ped_vehicle_distance=0.25, density=1.23456)


def test_the_features_are_exactly_the_proto_fields() -> None:
    # A new feature is one dataclass field plus the proto field of the same name.
    assert set(GroupFeatures.names()) == {f.name for f in events_pb2.GroupFeatures.DESCRIPTOR.fields}


def test_features_round_trip_through_proto_keeping_unset_optionals_unset() -> None:
    message = CONFLICT.to_proto()
    assert message.HasField("min_ped_vehicle_distance") and not message.HasField("min_spacing")
    back = GroupFeatures.from_proto(message)
    assert back.min_spacing is None and back.min_ped_vehicle_distance == pytest.approx(0.25)
    assert back.density == pytest.approx(1.23456, rel=1e-6)  # float32 on the wire
    assert GroupFeatures.from_proto(events_pb2.GroupFeatures()) == GroupFeatures()


def test_the_gateway_form_rounds_and_leaves_unset_features_out() -> None:
    assert GroupFeatures.from_proto(CONFLICT.to_proto()).to_dict(digits=4, omit_unset=True) == {
        "vehicles": 1,
        "pedestrians": 2,
        "two_wheelers": 0,
        "others": 0,
        "min_ped_vehicle_distance": 0.25,
        "density": 1.2346,
    }


def test_the_prompt_form_lists_every_key_in_order_with_nulls() -> None:
    task = events_pb2.AssessmentTask(
        camera_id="cam-1", group_id="g1", member_track_ids=[4, 2], features=CONFLICT.to_proto()
    )
    form = PromptFeatures.from_task(task).to_dict()
    # key order is part of the prompt text the LLM sees
    assert json.dumps(form) == (
        '{"camera_id": "cam-1", "group_id": "g1", "member_track_ids": [4, 2], "vehicles": 1, "pedestrians": 2, '
        '"two_wheelers": 0, "others": 0, "min_ped_vehicle_distance": 0.25, "density": 1.235, "min_spacing": null, '
        '"min_ttc_s": null, "min_pet_s": null, "max_drac_m_s2": null, "max_speed_box_s": null, "members": [], '
        '"conflict": null}'
    )
    assert tuple(form) == PromptFeatures.json_keys()
    parsed = PromptFeatures.from_dict(json.loads(json.dumps(form)))
    assert parsed.member_track_ids == (4, 2) and parsed.features.density == 1.235


def test_the_prompt_form_names_what_is_missing_or_wrong() -> None:
    form = PromptFeatures("cam-1", "g1", (1,), CONFLICT).to_dict()
    with pytest.raises(FeatureError, match=r"lack key.*density"):
        PromptFeatures.from_dict({k: v for k, v in form.items() if k != "density"})
    with pytest.raises(FeatureError, match=r"features\.vehicles must be a non-negative integer"):
        PromptFeatures.from_dict({**form, "vehicles": True})
    with pytest.raises(FeatureError, match=r"features\.min_spacing must be a finite number"):
        PromptFeatures.from_dict({**form, "min_spacing": float("inf")})
    with pytest.raises(FeatureError, match="JSON object"):
        PromptFeatures.from_dict(json.loads("[]"))


def test_a_feature_reads_as_a_number_or_none() -> None:
    assert CONFLICT.value("pedestrians") == 2.0
    assert CONFLICT.value("min_spacing") is None
    with pytest.raises(KeyError):
        CONFLICT.value("speed")


# --- camera ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("camera_id", ["cam-01", "A", "site.3:north_gate", "x" * 64])
def test_valid_camera_ids(camera_id: str) -> None:
    assert is_valid_camera_id(camera_id) and check_camera_id(camera_id) == camera_id


@pytest.mark.parametrize("camera_id", ["", "-cam", "cam 1", "cam/1", "cam\n", "x" * 65, "kamera-ü"])
def test_invalid_camera_ids_are_refused_without_echoing_them_whole(camera_id: str) -> None:
    assert not is_valid_camera_id(camera_id)
    with pytest.raises(InvalidRequest, match="invalid camera id") as caught:
        check_camera_id(camera_id)
    assert len(str(caught.value)) < 250
    with pytest.raises(InvalidRequest) as huge:
        check_camera_id("y" * 100_000)
    assert len(str(huge.value)) < 250
