"""Surrogate safety measures against closed-form answers: head-on, right-angle crossing, parallel, diverging,
stationary, rear-end; the Conflict message and the operator's line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from riskwatch.domain import Conflict, ConflictKind, Movers, PairMeasures, measure_pairs
from riskwatch.v1 import events_pb2

Side = tuple[tuple[float, float], tuple[float, float], float]  # position, velocity, radius


def _one(a: Side, b: Side, *, horizon_s: float = 10.0, pet_past_s: float = 0.0) -> tuple[PairMeasures, ConflictKind]:
    """The measures of one pair (stationary below 0.2 units/s)."""
    m = measure_pairs(
        Movers([a[0]], [a[1]], [a[2]]),
        Movers([b[0]], [b[1]], [b[2]]),
        horizon_s=horizon_s,
        stationary_speed=0.2,
        pet_past_s=pet_past_s,
    )
    return m, m.kind_of(0)


def test_head_on_ttc_is_gap_over_summed_speeds() -> None:
    # 30 m apart, 10 m/s and 5 m/s towards each other, radii 1 and 0.5: TTC = (30 − 1.5) / 15 = 1.9 s.
    m, kind = _one(((0, 0), (10, 0), 1.0), ((30, 0), (-5, 0), 0.5))
    assert kind is ConflictKind.HEAD_ON
    assert m.ttc_s[0] == pytest.approx(1.9)
    assert m.distance[0] == pytest.approx(28.5)
    assert m.closing_speed[0] == pytest.approx(15.0)
    # DRAC = |Δv| / (2 TTC) = 15 / 3.8.
    assert m.drac[0] == pytest.approx(15 / 3.8)
    # Same line, same speed: the paths never cross at a point, so no PET.
    assert math.isnan(m.pet_s[0])


def test_right_angle_crossing_on_collision_course() -> None:
    # A goes east from x = −20 at 10 m/s, B north from y = −4 at 2 m/s: both reach the origin at t = 2 s (PET 0).
    # Δp = −2·Δv, so |Δp + Δv·t| = |Δv|·(2 − t) = 0.6 at t = 2 − 0.6 / √104.
    m, kind = _one(((-20, 0), (10, 0), 0.3), ((0, -4), (0, 2), 0.3))
    assert kind is ConflictKind.CROSSING
    assert m.pet_s[0] == pytest.approx(0.0, abs=1e-9)
    assert m.ttc_s[0] == pytest.approx(2 - 0.6 / math.sqrt(104))


def test_right_angle_near_miss_has_pet_and_no_ttc() -> None:
    # A passes the origin at t = 2 s, B at t = 3 s (from y = −6 at 2 m/s): PET 1 s; B is still 2 m short when A
    # is there, so the discs never meet.
    m, kind = _one(((-20, 0), (10, 0), 0.3), ((0, -6), (0, 2), 0.3))
    assert kind is ConflictKind.CROSSING
    assert m.pet_s[0] == pytest.approx(1.0)
    assert math.isnan(m.ttc_s[0])


def test_crossing_that_misses_has_pet_but_no_ttc() -> None:
    # A passes the origin at t = 1 s, B at t = 4 s: at A's crossing B is still 6 m short, so the discs never meet.
    m, _ = _one(((-10, 0), (10, 0), 0.3), ((0, -8), (0, 2), 0.3))
    assert m.pet_s[0] == pytest.approx(3.0)
    assert math.isnan(m.ttc_s[0])
    assert math.isnan(m.drac[0])


def test_parallel_same_speed_and_diverging_have_nothing() -> None:
    parallel, kind = _one(((0, 0), (5, 0), 0.5), ((0, 3), (5, 0), 0.5))
    assert kind is ConflictKind.REAR_END  # same heading
    assert math.isnan(parallel.ttc_s[0]) and math.isnan(parallel.pet_s[0])
    assert parallel.closing_speed[0] == pytest.approx(0.0)
    diverging, kind = _one(((0, 0), (-5, 0), 0.5), ((10, 0), (5, 0), 0.5))
    assert kind is ConflictKind.HEAD_ON  # headings opposite, but moving apart
    assert math.isnan(diverging.ttc_s[0]) and math.isnan(diverging.pet_s[0])
    assert diverging.closing_speed[0] == pytest.approx(-10.0)


def test_paths_that_crossed_in_the_past_have_no_pet_unless_allowed() -> None:
    # A crossed the origin 0.3 s ago; B reaches it in 0.5 s.
    a: Side = ((3, 0), (10, 0), 0.3)
    b: Side = ((0, -1), (0, 2), 0.3)
    strict, _ = _one(a, b)
    assert math.isnan(strict.pet_s[0])
    recent, _ = _one(a, b, pet_past_s=0.5)
    assert recent.pet_s[0] == pytest.approx(0.8)


def test_stationary_pedestrian_in_the_path_of_a_vehicle() -> None:
    # Vehicle 25 m away at 10 m/s straight at a standing pedestrian: TTC = (25 − 1.2 − 0.3) / 10.
    m, kind = _one(((0, 0), (10, 0), 1.2), ((25, 0), (0, 0), 0.3))
    assert kind is ConflictKind.STATIONARY
    assert m.ttc_s[0] == pytest.approx(2.35)
    assert math.isnan(m.pet_s[0])
    # Off its course by 3 m: no collision.
    off, kind = _one(((0, 0), (10, 0), 1.2), ((25, 3), (0, 0), 0.3))
    assert kind is ConflictKind.STATIONARY and math.isnan(off.ttc_s[0])


def test_rear_end_drac_is_cunto_saccomanno() -> None:
    # Follower 15 m/s, leader 10 m/s, 20 m between centres, radii 1 + 1: gap 18 m.
    # DRAC = (15 − 10)² / (2 × 18) = 25 / 36 m/s²; TTC = 18 / 5 s.
    m, kind = _one(((0, 0), (15, 0), 1.0), ((20, 0), (10, 0), 1.0))
    assert kind is ConflictKind.REAR_END
    assert m.ttc_s[0] == pytest.approx(3.6)
    assert m.drac[0] == pytest.approx(25 / 36)


def test_touching_is_ttc_zero_and_beyond_horizon_is_none() -> None:
    touching, _ = _one(((0, 0), (1, 0), 1.0), ((1.5, 0), (-1, 0), 1.0))
    assert touching.ttc_s[0] == 0.0 and touching.distance[0] == 0.0
    assert math.isnan(touching.drac[0])
    far, _ = _one(((0, 0), (1, 0), 0.5), ((100, 0), (-1, 0), 0.5), horizon_s=5.0)
    assert math.isnan(far.ttc_s[0])


def test_touching_without_closing_in_is_no_collision() -> None:
    # Two people walking side by side (same velocity), shoulders touching: no collision course, so no TTC.
    side_by_side, _ = _one(((0, 0), (1.4, 0), 0.3), ((0, 0.5), (1.4, 0), 0.3))
    assert side_by_side.distance[0] == 0.0
    assert math.isnan(side_by_side.ttc_s[0])
    # Touching and drifting apart slowly (below the stationary speed of 0.2): still none.
    drifting, _ = _one(((0, 0), (1.4, 0), 0.3), ((0, 0.5), (1.4, 0.1), 0.3))
    assert math.isnan(drifting.ttc_s[0])
    # Touching and still closing in faster than that: TTC 0.
    closing, _ = _one(((0, 0), (1.4, 0), 0.3), ((0, 0.5), (1.4, -0.5), 0.3))
    assert closing.ttc_s[0] == 0.0


def test_many_pairs_at_once_match_one_by_one() -> None:
    rng = np.random.default_rng(7)
    pa, pb = rng.uniform(-20, 20, (200, 2)), rng.uniform(-20, 20, (200, 2))
    va, vb = rng.uniform(-8, 8, (200, 2)), rng.uniform(-8, 8, (200, 2))
    together = measure_pairs(Movers(pa, va, 0.5), Movers(pb, vb, 0.5), horizon_s=5, stationary_speed=0.2)
    for i in range(0, 200, 37):
        alone = measure_pairs(
            Movers(pa[i : i + 1], va[i : i + 1], 0.5),
            Movers(pb[i : i + 1], vb[i : i + 1], 0.5),
            horizon_s=5,
            stationary_speed=0.2,
        )
        np.testing.assert_equal(together.ttc_s[i], alone.ttc_s[0])
        np.testing.assert_equal(together.pet_s[i], alone.pet_s[0])


def test_conflict_round_trips_and_reads_as_one_line() -> None:
    conflict = Conflict(3, 7, "pedestrian", "vehicle", ConflictKind.HEAD_ON, True, 0.75, 0.375, 4.25, 6.0, 7.5)
    again = Conflict.from_proto(events_pb2.Conflict.FromString(conflict.to_proto().SerializeToString()))
    assert again == conflict
    assert conflict.describe() == "pedestrian 3 and vehicle 7 head-on, TTC 0.8 s, PET 0.4 s, DRAC 4.2 m/s²"
    waiting = Conflict(1, 2, "pedestrian", "vehicle", ConflictKind.STATIONARY, False, None, None, None, 1.25, 0.0)
    assert waiting.describe() == "pedestrian 1 and vehicle 2, one stationary, 1.2 box sizes apart"
    assert not Conflict.from_proto(waiting.to_proto()).to_proto().HasField("ttc_s")


def test_conflict_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="ttc_s"):
        Conflict(1, 2, "pedestrian", "vehicle", ConflictKind.CROSSING, True, -1.0, None, None, 1.0, 0.0)
    with pytest.raises(ValueError, match="calibrated"):
        Conflict(1, 2, "pedestrian", "vehicle", ConflictKind.CROSSING, False, 1.0, None, 2.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="ConflictKind"):
        Conflict.from_proto(
            events_pb2.Conflict(category_a=events_pb2.CATEGORY_VEHICLE, category_b=events_pb2.CATEGORY_PEDESTRIAN)
        )
