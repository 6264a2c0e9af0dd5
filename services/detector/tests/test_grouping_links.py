"""Conflict links in grouping: a linked pair is one group however far apart, and links never split groups."""

from __future__ import annotations

import pytest

from riskwatch_detector.config import CategoryName, GroupingConfig
from riskwatch_detector.grouping import cluster

P, V = CategoryName.PEDESTRIAN, CategoryName.VEHICLE
# A pedestrian and a car 10 box sizes apart, and two people side by side elsewhere.
BOXES = [(0, 0, 40, 80, P), (600, 0, 800, 100, V), (0, 400, 40, 480, P), (45, 400, 85, 480, P)]


def _groups(links: list[tuple[int, int]]) -> list[tuple[int, ...]]:
    boxes = [b[:4] for b in BOXES]
    return [c.members for c in cluster(boxes, [b[4] for b in BOXES], GroupingConfig(), links)]


def test_far_pair_is_grouped_only_when_linked() -> None:
    assert _groups([]) == [(2, 3)]
    assert _groups([(1, 0)]) == [(0, 1), (2, 3)]


def test_a_link_joins_two_groups() -> None:
    assert _groups([(0, 1), (1, 3)]) == [(0, 1, 2, 3)]


def test_links_must_index_the_objects() -> None:
    with pytest.raises(ValueError, match="links"):
        _groups([(0, 4)])
