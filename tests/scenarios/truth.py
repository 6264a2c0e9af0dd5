"""The analytic truth a scenario's measurements are scored against, from the true positions and velocities.

Written from the definitions, not from the system's code (libs/riskwatch/domain/conflicts.py is not imported):

- TTC at time t: both users keep their velocity at t; the first s ≥ 0 at which their footprint discs touch,
  |Δp + Δv·s| = rA + rB (the smaller root of a quadratic); 0 while they touch; None when they never do.
- Predicted PET at time t: where the two straight constant-velocity paths cross, the time between the first and
  the second user reaching that point; None when the point is behind either user or the paths are parallel.
- Actual PET of a pair: where the two true paths (sampled finely) cross, the difference of the times the users
  pass that point; None when the paths never cross.
- A TTC episode: true TTC below 1.5 s for at least 0.5 s without a break (issue 14).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tests.scenarios.world import Category, FloatArray, RoadUser, Scenario

EPISODE_TTC_S = 1.5
EPISODE_MIN_S = 0.5
TRUTH_STEP_S = 0.01  # the grid on which episodes are found: onsets are exact to 10 ms whatever the frame rate
# The category pairs the detector measures by default (config/detector.yaml conflicts.pairs); others are not scored.
SCORED_PAIRS = frozenset(
    {
        frozenset({Category.PEDESTRIAN, Category.VEHICLE}),
        frozenset({Category.VEHICLE}),
        frozenset({Category.TWO_WHEELER, Category.VEHICLE}),
        frozenset({Category.PEDESTRIAN, Category.TWO_WHEELER}),
        frozenset({Category.PEDESTRIAN}),
    }
)


def ttc(pa: FloatArray, va: FloatArray, pb: FloatArray, vb: FloatArray, radius: float) -> FloatArray:
    """(N,) time to collision of two discs of summed radius `radius`, rows of positions/velocities; NaN = never."""
    d = pb - pa
    w = vb - va
    a = np.sum(w * w, axis=1)
    b = np.sum(d * w, axis=1)
    c = np.sum(d * d, axis=1) - radius**2
    disc = b * b - a * c
    out = np.full(len(d), math.nan)
    touching = c <= 0
    moving = (a > 1e-12) & (disc >= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        first = (-b - np.sqrt(np.where(moving, disc, 0.0))) / np.where(moving, a, 1.0)
    ahead = moving & ~touching & (first >= 0)
    out[ahead] = first[ahead]
    out[touching] = 0.0
    return out


def predicted_pet(pa: FloatArray, va: FloatArray, pb: FloatArray, vb: FloatArray) -> FloatArray:
    """(N,) PET at the crossing point of the two straight paths ahead of both; NaN when there is none."""
    cross = va[:, 0] * vb[:, 1] - va[:, 1] * vb[:, 0]
    d = pb - pa
    out = np.full(len(d), math.nan)
    ok = np.abs(cross) > 1e-9
    with np.errstate(invalid="ignore", divide="ignore"):
        # pa + va·ta = pb + vb·tb, solved by Cramer's rule.
        ta = (d[:, 0] * vb[:, 1] - d[:, 1] * vb[:, 0]) / cross
        tb = (d[:, 0] * va[:, 1] - d[:, 1] * va[:, 0]) / cross
    ahead = ok & (ta >= 0) & (tb >= 0)
    out[ahead] = np.abs(ta[ahead] - tb[ahead])
    return out


@dataclass(frozen=True, slots=True)
class PairTruth:
    """True measures of one pair (users `a` < `b`) on the times `t`."""

    a: int
    b: int
    t: FloatArray
    ttc_s: FloatArray
    pet_s: FloatArray


def pair_truth(user_a: RoadUser, user_b: RoadUser, t: FloatArray, a: int = 0, b: int = 1) -> PairTruth:
    ta, tb = user_a.trajectory, user_b.trajectory
    pa, va, pb, vb = ta.position(t), ta.velocity(t), tb.position(t), tb.velocity(t)
    radius = user_a.body.radius_m + user_b.body.radius_m
    return PairTruth(a, b, t, ttc(pa, va, pb, vb, radius), predicted_pet(pa, va, pb, vb))


def scored_pairs(scenario: Scenario) -> list[tuple[int, int]]:
    users = scenario.users
    return [
        (a, b)
        for a, b in itertools.combinations(range(len(users)), 2)
        if frozenset({users[a].body.category, users[b].body.category}) in SCORED_PAIRS
    ]


def truth_grid(scenario: Scenario) -> FloatArray:
    return np.arange(0.0, scenario.duration_s + TRUTH_STEP_S / 2, TRUTH_STEP_S)


def truths(scenario: Scenario, t: FloatArray | None = None) -> list[PairTruth]:
    """Every scored pair's truth, on `t` (default: the fine grid)."""
    grid = truth_grid(scenario) if t is None else t
    return [pair_truth(scenario.users[a], scenario.users[b], grid, a, b) for a, b in scored_pairs(scenario)]


@dataclass(frozen=True, slots=True)
class Episode:
    """True TTC below EPISODE_TTC_S from `onset_s` to `end_s` (at least EPISODE_MIN_S long)."""

    a: int
    b: int
    onset_s: float
    end_s: float
    min_ttc_s: float


def episodes(scenario: Scenario) -> list[Episode]:
    out = []
    for truth in truths(scenario):
        below = np.nan_to_num(truth.ttc_s, nan=math.inf) < EPISODE_TTC_S
        for start, stop in _runs(below):
            onset, end = float(truth.t[start]), float(truth.t[stop - 1])
            if end - onset >= EPISODE_MIN_S - TRUTH_STEP_S / 2:
                out.append(Episode(truth.a, truth.b, onset, end, float(np.min(truth.ttc_s[start:stop]))))
    return out


def _runs(mask: FloatArray | np.ndarray) -> Iterable[tuple[int, int]]:
    """(start, stop) of each run of True in a boolean array."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True)


def min_distance(scenario: Scenario, a: int, b: int) -> float:
    """The smallest gap between the two footprint discs over the scenario (negative: they overlap)."""
    t = truth_grid(scenario)
    ua, ub = scenario.users[a], scenario.users[b]
    centres = np.hypot(*(ua.trajectory.position(t) - ub.trajectory.position(t)).T)
    return float(np.min(centres)) - ua.body.radius_m - ub.body.radius_m


def actual_pet(scenario: Scenario, a: int, b: int) -> float | None:
    """Time between the two users passing the point where their true paths cross; None when they never cross."""
    t = truth_grid(scenario)
    pa, pb = scenario.users[a].trajectory.position(t), scenario.users[b].trajectory.position(t)
    best: float | None = None
    # Segments of each path; a pair of segments that intersect gives the crossing and, by interpolation, the times.
    for i in _moving_segments(pa):
        p, r = pa[i], pa[i + 1] - pa[i]
        q, s = pb[:-1], pb[1:] - pb[:-1]
        denom = r[0] * s[:, 1] - r[1] * s[:, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            u = ((q[:, 0] - p[0]) * s[:, 1] - (q[:, 1] - p[1]) * s[:, 0]) / denom
            v = ((q[:, 0] - p[0]) * r[1] - (q[:, 1] - p[1]) * r[0]) / denom
        hits = np.flatnonzero((np.abs(denom) > 1e-12) & (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1))
        for j in hits:
            pet = abs((t[i] + u[j] * TRUTH_STEP_S) - (t[j] + v[j] * TRUTH_STEP_S))
            best = float(pet) if best is None else min(best, float(pet))
    return best


def _moving_segments(points: FloatArray) -> list[int]:
    steps = np.hypot(*(points[1:] - points[:-1]).T)
    return np.flatnonzero(steps > 1e-9).tolist()
