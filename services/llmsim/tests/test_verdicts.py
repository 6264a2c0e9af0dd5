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
    ],
)
def test_wrong_types_are_rejected(overrides: dict[str, object]) -> None:
    with pytest.raises(FeatureError):
        verdict_for(sample_features(**overrides))
