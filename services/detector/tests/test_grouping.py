"""Group clustering: size-normalised distances, per-pair thresholds, features, stable ids; plus properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from riskwatch_detector.config import CategoryName, GroupingConfig
from riskwatch_detector.grouping import Cluster, GroupIdentity, cluster, normalised_gaps

PED, CAR, BIKE, OTHER = CategoryName.PEDESTRIAN, CategoryName.VEHICLE, CategoryName.TWO_WHEELER, CategoryName.OTHER


def person(x: float, y: float = 100.0, scale: float = 1.0) -> tuple[float, float, float, float]:
    """A 40×100 person (size √4000 ≈ 63) with its top-left corner at (x, y)."""
    return (x * scale, y * scale, (x + 40) * scale, (y + 100) * scale)


def car(x: float, y: float = 150.0) -> tuple[float, float, float, float]:
    return (x, y, x + 200, y + 100)


def boxes(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(rows, np.float64).reshape(-1, 4)


def member_sets(clusters: list[Cluster]) -> set[frozenset[int]]:
    return {frozenset(c.members) for c in clusters}


def test_gap_is_measured_in_box_sizes_not_pixels() -> None:
    size = math.sqrt(40 * 100)
    gaps = normalised_gaps(boxes(person(0), person(40 + size)))
    assert gaps[0, 1] == pytest.approx(1.0)
    assert gaps[0, 0] == 0.0
    # Overlapping boxes are at distance 0.
    assert normalised_gaps(boxes(person(0), person(20)))[0, 1] == 0.0


def test_people_close_together_form_a_crowd_and_a_distant_one_stays_out() -> None:
    config = GroupingConfig()
    found = cluster(boxes(person(0), person(50), person(100), person(1000)), [PED] * 4, config)
    assert member_sets(found) == {frozenset({0, 1, 2})}
    crowd = found[0]
    assert crowd.features.pedestrians == 3 and crowd.features.vehicles == 0
    assert crowd.features.min_ped_vehicle_distance is None
    assert crowd.features.min_spacing == pytest.approx(10 / math.sqrt(4000))
    assert crowd.box == (0.0, 100.0, 140.0, 200.0)


def test_pedestrian_vehicle_threshold_is_more_generous_than_pedestrian_pedestrian() -> None:
    config = GroupingConfig(thresholds={"pedestrian-vehicle": 1.5, "pedestrian-pedestrian": 0.5})
    # A person 100 px from a car (mean size ≈ 110 px → gap ≈ 0.9) is linked; two people 100 px apart are not.
    found = cluster(boxes(person(0), car(140), person(600), person(740)), [PED, CAR, PED, PED], config)
    assert member_sets(found) == {frozenset({0, 1})}
    features = found[0].features
    assert features.vehicles == 1 and features.pedestrians == 1
    assert features.min_ped_vehicle_distance is not None
    assert 0.8 < features.min_ped_vehicle_distance < 1.0


def test_pair_keys_are_order_free_and_unlisted_pairs_never_link() -> None:
    config = GroupingConfig(thresholds={"vehicle-pedestrian": 2.0})
    assert config.threshold(PED, CAR) == 2.0
    assert config.threshold(OTHER, PED) is None
    assert cluster(boxes(person(0), person(10)), [OTHER, PED], config) == []


def test_bad_pair_name_is_rejected_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="not a pair like"):
        GroupingConfig(thresholds={"pedestrian-spaceship": 1.0})


def test_density_grows_as_a_crowd_packs_together() -> None:
    config = GroupingConfig(thresholds={"pedestrian-pedestrian": 5.0})
    loose = cluster(boxes(person(0), person(200)), [PED, PED], config)[0]
    tight = cluster(boxes(person(0), person(45)), [PED, PED], config)[0]
    assert tight.features.density > loose.features.density


def test_min_group_size() -> None:
    config = GroupingConfig(min_group_size=3)
    assert cluster(boxes(person(0), person(50)), [PED, PED], config) == []
    assert len(cluster(boxes(person(0), person(50), person(100)), [PED] * 3, config)) == 1


def test_group_ids_follow_their_members() -> None:
    identity = GroupIdentity(GroupingConfig(), id_prefix="g")
    first = identity.assign([frozenset({1, 2}), frozenset({5, 6, 7})])
    assert first == ["g1", "g2"]
    # Order changes, one member joins, one leaves: ids stay with the groups.
    assert identity.assign([frozenset({5, 6, 8}), frozenset({1, 2, 3})]) == ["g2", "g1"]
    # A group made of strangers gets a new id.
    assert identity.assign([frozenset({20, 21})]) == ["g3"]


def test_a_split_group_keeps_its_id_on_the_larger_part() -> None:
    identity = GroupIdentity(GroupingConfig(), id_prefix="g")
    identity.assign([frozenset({1, 2, 3, 4, 5})])
    assert identity.assign([frozenset({1, 2}), frozenset({3, 4, 5})]) == ["g2", "g1"]


def test_a_group_missing_for_a_few_frames_gets_its_id_back_but_not_after_the_memory() -> None:
    identity = GroupIdentity(GroupingConfig(id_memory_frames=2), id_prefix="g")
    identity.assign([frozenset({1, 2})])
    identity.assign([])
    assert identity.assign([frozenset({1, 2})]) == ["g1"]
    for _ in range(3):
        identity.assign([])
    assert identity.assign([frozenset({1, 2})]) == ["g2"]


# --- properties -------------------------------------------------------------------------------------

CATEGORIES = st.sampled_from([PED, CAR, BIKE, OTHER])


@st.composite
def scenes(draw: st.DrawFn) -> tuple[np.ndarray, list[CategoryName]]:
    count = draw(st.integers(min_value=0, max_value=14))
    rows, categories = [], []
    for _ in range(count):
        x = draw(st.floats(0, 1500))
        y = draw(st.floats(0, 800))
        w = draw(st.floats(4, 300))
        h = draw(st.floats(4, 300))
        rows.append((x, y, x + w, y + h))
        categories.append(draw(CATEGORIES))
    return boxes(*rows), categories


def _far_from_thresholds(scene_boxes: np.ndarray, categories: list[CategoryName], config: GroupingConfig) -> bool:
    """Pairs within float noise of their threshold may flip under rescaling; such scenes prove nothing."""
    gaps = normalised_gaps(scene_boxes)
    for i in range(len(categories)):
        for j in range(i + 1, len(categories)):
            threshold = config.threshold(categories[i], categories[j])
            if threshold is not None and abs(gaps[i, j] - threshold) < 1e-6:
                return False
    return True


CONFIG = GroupingConfig()


@settings(max_examples=150, deadline=None)
@given(scene=scenes(), scale=st.floats(0.05, 20))
def test_groups_do_not_depend_on_image_scale(scene: tuple[np.ndarray, list[CategoryName]], scale: float) -> None:
    scene_boxes, categories = scene
    assume(_far_from_thresholds(scene_boxes, categories, CONFIG))
    original = cluster(scene_boxes, categories, CONFIG)
    scaled = cluster(scene_boxes * scale, categories, CONFIG)
    assert member_sets(scaled) == member_sets(original)
    for a, b in zip(original, scaled, strict=True):
        assert b.features.density == pytest.approx(a.features.density, rel=1e-6)
        assert (a.features.min_spacing is None) == (b.features.min_spacing is None)
        if a.features.min_spacing is not None and b.features.min_spacing is not None:
            assert b.features.min_spacing == pytest.approx(a.features.min_spacing, rel=1e-6, abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(scene=scenes(), data=st.data())
def test_groups_do_not_depend_on_detection_order(
    scene: tuple[np.ndarray, list[CategoryName]], data: st.DataObject
) -> None:
    scene_boxes, categories = scene
    order = data.draw(st.permutations(range(len(categories))))
    original = member_sets(cluster(scene_boxes, categories, CONFIG))
    shuffled = cluster(scene_boxes[list(order)], [categories[i] for i in order], CONFIG)
    # Map the shuffled indices back to the original ones.
    assert {frozenset(order[m] for m in members) for members in member_sets(shuffled)} == original


@settings(max_examples=150, deadline=None)
@given(scene=scenes(), min_size=st.integers(1, 4))
def test_each_member_in_exactly_one_group_and_no_group_below_min_size(
    scene: tuple[np.ndarray, list[CategoryName]], min_size: int
) -> None:
    scene_boxes, categories = scene
    config = GroupingConfig(min_group_size=min_size)
    found = cluster(scene_boxes, categories, config)
    members = [m for c in found for m in c.members]
    assert len(members) == len(set(members))
    assert all(len(c.members) >= min_size for c in found)
    # Linked objects are never left in different groups or out of a big-enough group.
    gaps = normalised_gaps(scene_boxes)
    group_of = {m: i for i, c in enumerate(found) for m in c.members}
    for i in range(len(categories)):
        for j in range(i + 1, len(categories)):
            threshold = config.threshold(categories[i], categories[j])
            if threshold is not None and gaps[i, j] <= threshold and (i in group_of or j in group_of):
                assert group_of.get(i) == group_of.get(j)
    for c in found:
        f = c.features
        assert f.vehicles + f.pedestrians + f.two_wheelers + f.others == len(c.members)
