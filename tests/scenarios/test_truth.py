"""The scenario generator and its truth against hand-computed answers: if these are wrong, every score is."""

from __future__ import annotations

import math

import numpy as np
import pytest

from riskwatch.domain import Calibration
from tests.scenarios import truth, world

CAMERA = world.Camera()


def _rows(*values: tuple[float, float]) -> world.FloatArray:
    return np.array(values, np.float64)


def test_head_on_ttc_is_the_gap_over_the_closing_speed() -> None:
    # 20 m apart centre to centre, radii 0.3 + 1.0, closing at 1.5 + 8.5 m/s: (20 - 1.3) / 10.
    got = truth.ttc(_rows((0, 0)), _rows((0, 1.5)), _rows((0, 20)), _rows((0, -8.5)), 1.3)
    assert got[0] == pytest.approx(1.87)


def test_right_angle_crossing_ttc_matches_fine_sampling() -> None:
    pa, va = _rows((-10, 0)), _rows((5, 0))
    pb, vb = _rows((0.5, -12)), _rows((0, 6))
    s = np.arange(0, 10, 1e-4)
    gap = np.hypot(pa[0, 0] + va[0, 0] * s - pb[0, 0] - vb[0, 0] * s, pa[0, 1] + va[0, 1] * s - pb[0, 1] - vb[0, 1] * s)
    sampled = s[np.argmax(gap <= 2.0)]
    assert truth.ttc(pa, va, pb, vb, 2.0)[0] == pytest.approx(sampled, abs=2e-4)


@pytest.mark.parametrize(
    ("va", "vb"),
    [((0, 8), (0, 8)), ((0, -8), (0, 8)), ((0, 0), (0, 0))],
    ids=["parallel-same-speed", "diverging", "both-standing"],
)
def test_no_ttc_when_the_discs_never_touch(va: tuple[float, float], vb: tuple[float, float]) -> None:
    assert math.isnan(truth.ttc(_rows((0, 0)), _rows(va), _rows((0, 10)), _rows(vb), 2.0)[0])


def test_a_standing_user_on_the_movers_course_and_touching_discs() -> None:
    assert truth.ttc(_rows((0, 0)), _rows((0, 0)), _rows((0, 30)), _rows((0, -10)), 2.0)[0] == pytest.approx(2.8)
    assert truth.ttc(_rows((0, 0)), _rows((0, 0)), _rows((0, 1.5)), _rows((0, -10)), 2.0)[0] == 0.0


def test_predicted_pet_is_the_difference_of_arrival_times_at_the_crossing() -> None:
    # A reaches (0, 0) in 10/5 = 2 s, B in 12/6 = 2 s + B starts 3 m further: 15/6 = 2.5 s.
    got = truth.predicted_pet(_rows((-10, 0)), _rows((5, 0)), _rows((0, -15)), _rows((0, 6)))
    assert got[0] == pytest.approx(0.5)
    behind = truth.predicted_pet(_rows((10, 0)), _rows((5, 0)), _rows((0, -15)), _rows((0, 6)))
    assert math.isnan(behind[0])


def test_the_homographies_are_inverse_and_agree_with_the_pinhole_projection() -> None:
    ground = np.array([[-3.0, 12.0], [2.0, 25.0], [5.0, 60.0]])
    image = CAMERA.project(np.column_stack([ground, np.zeros(3)]))
    homogeneous = np.column_stack([ground, np.ones(3)]) @ CAMERA.ground_to_image().T
    assert homogeneous[:, :2] / homogeneous[:, 2:] == pytest.approx(image)
    back = np.column_stack([image, np.ones(3)]) @ CAMERA.image_to_ground().T
    assert back[:, :2] / back[:, 2:] == pytest.approx(ground)
    # An elevated camera: the near ground is at the bottom of the image, far ground higher up.
    assert image[0, 1] > image[1, 1] > image[2, 1]


def test_the_operator_style_calibration_recovers_the_cameras_ground_plane() -> None:
    image_points, ground_points = CAMERA.calibration_points()
    calibration = Calibration.fit(image_points, ground_points)
    assert calibration.reprojection_error_m < 1e-6
    point = CAMERA.project([(1.75, 30.0, 0.0)])
    assert calibration.to_ground(point)[0] == pytest.approx([1.75, 30.0], abs=1e-6)


@pytest.mark.parametrize(
    "trajectory",
    [
        world.Braking((0.0, 10.0), (0.0, 8.0), 2.0, 6.0),
        world.Turning((-1.75, 10.0), (0.0, 6.0), 2.0, 3.5, 90.0),
    ],
    ids=["braking", "turning"],
)
def test_velocity_is_the_derivative_of_position(trajectory: world.Trajectory) -> None:
    t = np.linspace(0.1, 6.0, 200)
    h = 1e-5
    derivative = (trajectory.position(t + h) - trajectory.position(t - h)) / (2 * h)
    assert trajectory.velocity(t) == pytest.approx(derivative, abs=1e-3)


def test_a_right_turn_ends_heading_right_having_moved_by_the_radius() -> None:
    turn = world.Turning((0.0, 0.0), (0.0, 5.0), 1.0, 4.0, 90.0)
    end = 1.0 + (math.pi / 2) * 4.0 / 5.0
    assert turn.position(np.array([end]))[0] == pytest.approx([4.0, 9.0])
    assert turn.velocity(np.array([end + 1.0]))[0] == pytest.approx([5.0, 0.0])


@pytest.mark.parametrize("seed", range(6))
def test_each_scenario_is_what_its_kind_says(seed: int) -> None:
    for scenario in world.catalogue(np.random.default_rng(seed)):
        pairs = truth.scored_pairs(scenario)
        assert pairs, scenario.name
        episodes = truth.episodes(scenario)
        gaps = [truth.min_distance(scenario, a, b) for a, b in pairs]
        pets = [truth.actual_pet(scenario, a, b) for a, b in pairs]
        if scenario.kind is world.Kind.COLLISION:
            assert min(gaps) < 0 and episodes, scenario.name
            assert all(e.onset_s >= 2.0 for e in episodes), f"{scenario.name}: too little history before onset"
        elif scenario.kind is world.Kind.NEAR_MISS:
            assert min(gaps) > 0.5, scenario.name
            assert episodes or any(p is not None and p < 1.0 for p in pets), scenario.name
        else:
            assert not episodes and min(gaps) > 0.5, scenario.name
            assert all(p is None or p > 3.0 for p in pets), scenario.name


def test_an_episode_starts_where_the_true_ttc_first_drops_below_1_5_s() -> None:
    # Head-on at 1.4 + 8 m/s (times the scenario's speed factor) meeting centre to centre at `meet`: the discs
    # (0.3 + 1.2 m) touch 1.5 m / closing speed earlier, and TTC < 1.5 s from 1.5 s before that.
    scenario = next(s for s in world.catalogue(np.random.default_rng(0)) if s.name == "ped_head_on_car")
    (episode,) = truth.episodes(scenario)
    k = np.hypot(*scenario.users[1].trajectory.velocity(np.array([0.0]))[0]) / 8.0
    closing = 9.4 * k
    meet = float(scenario.duration_s - 2.0)
    assert episode.onset_s == pytest.approx(meet - 1.5 / closing - 1.5, abs=0.011)


def test_noise_free_boxes_stand_on_the_true_ground_points() -> None:
    scenario = world.catalogue(np.random.default_rng(1))[0]
    rendering = world.render(scenario, CAMERA, 5.0, world.Noise.none(), np.random.default_rng(0))
    frame = rendering.frames[20]
    bottom = np.column_stack(
        [(frame.boxes[:, 0] + frame.boxes[:, 2]) / 2, frame.boxes[:, 3], np.ones(len(frame.users))]
    )
    ground = bottom @ CAMERA.image_to_ground().T
    expected = [scenario.users[u].trajectory.position(np.array([frame.time_s]))[0] for u in frame.users]
    assert ground[:, :2] / ground[:, 2:] == pytest.approx(np.array(expected), abs=1e-6)


def test_the_noise_is_the_issues_2_percent_jitter_and_5_percent_misses() -> None:
    scenario = next(s for s in world.catalogue(np.random.default_rng(2)) if s.name == "ped_waits_at_kerb")
    clean = world.render(scenario, CAMERA, 10.0, world.Noise.none(), np.random.default_rng(0))
    noise = world.Noise(id_switch=0.0)
    noisy = [world.render(scenario, CAMERA, 10.0, noise, np.random.default_rng(seed)) for seed in range(20)]
    shown = sum(len(f.users) for r in noisy for f in r.frames)
    possible = 20 * sum(len(f.users) for f in clean.frames)
    assert 1 - shown / possible == pytest.approx(0.05, abs=0.01)
    # The standing pedestrian (user 0): x edges jitter by 2 % of its width.
    errors, widths = [], []
    for rendering in noisy:
        for c, n in zip(clean.frames, rendering.frames, strict=True):
            if 0 in n.users and 0 in c.users:
                box_c, box_n = c.boxes[c.users.index(0)], n.boxes[n.users.index(0)]
                errors.append(box_n[0] - box_c[0])
                widths.append(box_c[2] - box_c[0])
    assert np.std(errors) / np.mean(widths) == pytest.approx(0.02, rel=0.1)
