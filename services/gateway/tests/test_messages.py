"""JSON forms of the near-miss fields (PROTOCOL.md): a track's kinematics, a group's conflict, measured danger and
provisional alerts, and how a verdict resolved one — present when the proto has them, absent when it does not."""

from __future__ import annotations

import pytest

from riskwatch.v1 import events_pb2, gateway_pb2
from riskwatch_gateway.messages import alert_json, camera_json, detections_json, risk_state_json
from riskwatch_gateway.testing import near_miss_event


def test_kinematics_and_conflict_in_metres_when_calibrated() -> None:
    # t = 0.8 s: the pedestrian at x = 3.2 m, the car at 11.2 m; 8 m apart, closing at 7.5 m/s.
    message = detections_json(near_miss_event("cam-01", 5, 0.8))
    pedestrian, car = message["detections"]
    assert pedestrian["kinematics"] == {
        "samples": 5,
        "history_s": 0.8,
        "ground_point_px": [164.0, 300.0],
        "velocity_px_s": [30.0, 0.0],
        "acceleration_px_s2": [0.0, 0.0],
        "speed_px_s": 30.0,
        "speed_box_s": 0.87,  # 30 px/s over a 20×60 box (sqrt(1200) = 34.64 px)
        "heading_deg": 90.0,
        "ground_point_m": [3.2, 5.0],
        "velocity_m_s": [1.5, 0.0],
        "acceleration_m_s2": [0.0, 0.0],
        "speed_m_s": 1.5,
        "ground_heading_deg": 90.0,
    }
    assert car["kinematics"]["speed_m_s"] == 6.0 and car["kinematics"]["heading_deg"] == 270.0
    conflict = message["groups"][0]["conflict"]
    assert conflict == {
        "track_a": 1,
        "track_b": 2,
        "category_a": "pedestrian",
        "category_b": "vehicle",
        "kind": "head_on",
        "calibrated": True,
        "ttc_s": 1.067,  # 8 m / 7.5 m/s
        "drac_m_s2": 3.52,  # 7.5 / (2 × 1.0667)
        "distance": 8.0,
        "closing_speed": 7.5,
    }
    assert message["groups"][0]["features"]["min_ttc_s"] == pytest.approx(1.0667, abs=1e-4)


def test_uncalibrated_kinematics_have_no_metres_and_the_conflict_no_drac() -> None:
    message = detections_json(near_miss_event("cam-01", 5, 0.8, calibrated=False))
    kinematics = message["detections"][0]["kinematics"]
    assert kinematics["speed_box_s"] == 0.87 and kinematics["ground_point_px"] == [164.0, 300.0]
    assert not {"ground_point_m", "velocity_m_s", "acceleration_m_s2", "speed_m_s", "ground_heading_deg"} & set(
        kinematics
    )
    conflict = message["groups"][0]["conflict"]
    assert conflict["calibrated"] is False and conflict["ttc_s"] == 1.067
    assert "drac_m_s2" not in conflict and "pet_s" not in conflict


def test_tracks_without_an_estimate_and_groups_without_a_conflict_carry_neither() -> None:
    # t = 0: the first frame of both tracks, too little history to estimate anything.
    message = detections_json(near_miss_event("cam-01", 1, 0.0))
    assert all("kinematics" not in d for d in message["detections"])
    assert "conflict" not in message["groups"][0]
    assert "min_ttc_s" not in message["groups"][0]["features"]


def _measured(level: events_pb2.RiskLevel.ValueType = events_pb2.RISK_LEVEL_HIGH) -> events_pb2.MeasuredDanger:
    return events_pb2.MeasuredDanger(
        risk_level=level,
        risk_types=["near_miss"],
        description="pedestrian 1 and vehicle 2 head-on, TTC 1.1 s",
        conflict=near_miss_event("cam-01", 5, 0.8).groups[0].conflict,
    )


def test_a_measured_alert_is_provisional_with_its_level_description_and_conflict() -> None:
    alert = alert_json(
        events_pb2.AssessmentResult(task_id="cam-01:5/g1", camera_id="cam-01", group_id="g1", measured=_measured())
    )
    assert alert["type"] == "alert" and alert["provisional"] is True
    assert alert["risk_level"] == "high" and alert["risk_types"] == ["near_miss"]
    assert alert["description"] == "pedestrian 1 and vehicle 2 head-on, TTC 1.1 s"
    assert alert["conflict"]["kind"] == "head_on" and alert["conflict"]["ttc_s"] == 1.067
    assert "provisional_resolution" not in alert and "failure" not in alert


@pytest.mark.parametrize(
    ("resolution", "name"),
    [
        (events_pb2.PROVISIONAL_RESOLUTION_CONFIRMED, "confirmed"),
        (events_pb2.PROVISIONAL_RESOLUTION_UPGRADED, "upgraded"),
        (events_pb2.PROVISIONAL_RESOLUTION_DISMISSED, "dismissed"),
    ],
)
def test_a_verdict_that_resolves_a_provisional_alert_says_how(
    resolution: events_pb2.ProvisionalResolution.ValueType, name: str
) -> None:
    verdict = events_pb2.Verdict(risk_level=events_pb2.RISK_LEVEL_LOW, description="they pass each other")
    alert = alert_json(
        events_pb2.AssessmentResult(task_id="t", group_id="g1", verdict=verdict, provisional_resolution=resolution)
    )
    assert alert["provisional"] is False and alert["provisional_resolution"] == name
    assert alert["risk_level"] == "low"


def test_an_ordinary_verdict_alert_is_not_provisional_and_has_no_resolution() -> None:
    verdict = events_pb2.Verdict(risk_level=events_pb2.RISK_LEVEL_MEDIUM)
    alert = alert_json(events_pb2.AssessmentResult(task_id="t", group_id="g1", verdict=verdict))
    assert alert["provisional"] is False and "provisional_resolution" not in alert and "conflict" not in alert


def test_a_group_resting_on_measured_danger_carries_it_in_the_risk_state() -> None:
    state = events_pb2.CameraRiskState(
        camera_id="cam-01",
        version=3,
        max_level=events_pb2.RISK_LEVEL_HIGH,
        groups=[
            events_pb2.GroupRisk(group_id="g1", provisional=_measured()),
            events_pb2.GroupRisk(group_id="g2", verdict=events_pb2.Verdict(risk_level=events_pb2.RISK_LEVEL_LOW)),
        ],
    )
    first, second = risk_state_json(state)["groups"]
    assert first["risk_level"] == "unspecified"  # no LLM verdict yet
    assert first["provisional"]["risk_level"] == "high" and first["provisional"]["conflict"]["track_b"] == 2
    assert "provisional" not in second


def test_a_camera_says_whether_it_is_calibrated() -> None:
    info = gateway_pb2.CameraInfo(camera=gateway_pb2.Camera(camera_id="cam-01", source="push"), calibrated=True)
    assert camera_json(info)["calibrated"] is True
    assert camera_json(gateway_pb2.CameraInfo())["calibrated"] is False
