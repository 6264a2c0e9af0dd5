"""The verdict oracle follows its documented rule table and rejects malformed features."""

from __future__ import annotations

import pytest

from riskwatch.domain import FeatureError
from riskwatch_llmsim.testing import sample_features
from riskwatch_llmsim.verdicts import FEATURE_KEYS, VERDICT_KEYS, verdict_for


@pytest.mark.parametrize(
    ("overrides", "level", "types"),
    [
        ({}, "none", []),
        ({"pedestrians": 1, "min_ped_vehicle_distance": 0.49}, "high", ["vehicle_pedestrian_conflict"]),
        ({"pedestrians": 1, "min_ped_vehicle_distance": 0.5}, "medium", ["vehicle_pedestrian_conflict"]),
        ({"pedestrians": 1, "min_ped_vehicle_distance": 1.49}, "medium", ["vehicle_pedestrian_conflict"]),
        ({"pedestrians": 1, "min_ped_vehicle_distance": 1.5}, "none", []),
        ({"pedestrians": 6}, "medium", ["crowding"]),
        ({"density": 2.0}, "medium", ["crowding"]),
        ({"pedestrians": 3}, "low", ["crowding"]),
        ({"density": 1.0}, "low", ["crowding"]),
        ({"pedestrians": 2, "density": 0.99}, "none", []),
        # both rules fire: the level is the higher, the types list both, most severe first
        ({"pedestrians": 7, "min_ped_vehicle_distance": 0.2}, "high", ["vehicle_pedestrian_conflict", "crowding"]),
        ({"pedestrians": 3, "min_ped_vehicle_distance": 1.0}, "medium", ["vehicle_pedestrian_conflict", "crowding"]),
        ({"pedestrians": 6, "min_ped_vehicle_distance": 1.0}, "medium", ["vehicle_pedestrian_conflict", "crowding"]),
        # near misses from the measured motion: TTC, PET, DRAC bounds
        ({"min_ttc_s": 0.99}, "high", ["near_miss"]),
        ({"min_ttc_s": 1.0}, "medium", ["near_miss"]),
        ({"min_ttc_s": 1.99}, "medium", ["near_miss"]),
        ({"min_ttc_s": 2.0}, "low", ["near_miss"]),
        ({"min_ttc_s": 3.0}, "none", []),
        ({"min_pet_s": 0.49}, "high", ["near_miss"]),
        ({"min_pet_s": 1.49}, "medium", ["near_miss"]),
        ({"min_pet_s": 1.5}, "none", []),
        ({"min_ttc_s": 2.5, "max_drac_m_s2": 3.5}, "high", ["near_miss"]),
        ({"max_drac_m_s2": 3.4}, "none", []),
        # a near miss outranks proximity on a tie
        (
            {"min_ttc_s": 1.5, "pedestrians": 1, "min_ped_vehicle_distance": 1.0},
            "medium",
            ["near_miss", "vehicle_pedestrian_conflict"],
        ),
        # standing still (fastest member < 0.2 box sizes/s): proximity alone fires one level lower
        ({"pedestrians": 6, "max_speed_box_s": 0.1}, "low", ["crowding"]),
        ({"pedestrians": 3, "max_speed_box_s": 0.1}, "none", []),
        (
            {"pedestrians": 1, "min_ped_vehicle_distance": 0.3, "max_speed_box_s": 0.19},
            "medium",
            ["vehicle_pedestrian_conflict"],
        ),
        ({"pedestrians": 6, "max_speed_box_s": 0.2}, "medium", ["crowding"]),  # moving: as before
        ({"min_ttc_s": 0.5, "max_speed_box_s": 0.1}, "high", ["near_miss"]),  # a stopped pair on contact course
    ],
)
def test_rule_table(overrides: dict[str, object], level: str, types: list[str]) -> None:
    verdict = verdict_for(sample_features(**overrides))
    assert verdict["risk_level"] == level
    assert verdict["risk_types"] == types
    assert set(verdict) == set(VERDICT_KEYS)
    assert 0.0 <= verdict["confidence"] <= 1.0


def test_involved_tracks_are_the_group_members() -> None:
    assert verdict_for(sample_features(member_track_ids=[7, 3, 9]))["involved_track_ids"] == [7, 3, 9]


def test_a_near_miss_involves_the_conflicting_pair_and_is_described() -> None:
    conflict = {
        "track_a": 3,
        "track_b": 7,
        "category_a": "pedestrian",
        "category_b": "vehicle",
        "kind": "crossing",
        "calibrated": True,
        "ttc_s": 0.8,
        "pet_s": None,
        "drac_m_s2": 5.0,
        "distance": 4.0,
        "closing_speed": 8.0,
    }
    verdict = verdict_for(sample_features(member_track_ids=[3, 7, 9], min_ttc_s=0.8, conflict=conflict))
    assert verdict["risk_level"] == "high" and verdict["involved_track_ids"] == [3, 7]
    assert verdict["description"].startswith("Near miss: pedestrian 3 and vehicle 7 crossing, TTC 0.8 s")


def test_same_features_same_verdict() -> None:
    features = sample_features(pedestrians=4, min_ped_vehicle_distance=0.8, density=1.3)
    assert verdict_for(features) == verdict_for(dict(features))


@pytest.mark.parametrize("missing", FEATURE_KEYS)
def test_missing_key_is_named(missing: str) -> None:
    features = sample_features()
    del features[missing]
    with pytest.raises(FeatureError, match=missing):
        verdict_for(features)


@pytest.mark.parametrize(
    "overrides",
    [
        {"pedestrians": True},
        {"pedestrians": -1},
        {"vehicles": 1.5},
        {"density": "high"},
        {"density": float("nan")},
        {"member_track_ids": "1,2"},
        {"member_track_ids": [1, "2"]},
        {"camera_id": ""},
        {"min_spacing": "close"},
        {"members": "3,7"},
        {"members": [{"track_id": 3, "category": "pedestrian", "estimated": "yes"}]},
        {"members": [{"track_id": 3, "category": "horse", "estimated": False}]},
        {"conflict": {"track_a": 3}},
        {"conflict": []},
    ],
)
def test_wrong_types_are_rejected(overrides: dict[str, object]) -> None:
    with pytest.raises(FeatureError):
        verdict_for(sample_features(**overrides))
