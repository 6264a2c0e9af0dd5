"""Short scenario runs with fixed seeds at 5 FPS, through the real detector and task generator (and, end to end,
every stage to a WebSocket client): collision courses are flagged within 1 s of onset, safe traffic is not, the
measured TTC is close to the truth, and a provisional alert reaches a client before any LLM verdict could."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from riskwatch.config.loader import load_settings
from riskwatch_detector.config import DetectorSettings
from riskwatch_embedded.config import EmbeddedSettings
from riskwatch_scheduler.config import SchedulerSettings
from tests.scenarios import live, replay, scoring
from tests.scenarios.bench_conflicts import conflict_trigger
from tests.scenarios.world import Camera, Kind, Noise
from tests.support.stack import REPO, free_port

CAMERA = Camera()
COLLISIONS = ("ped_crossing_car", "ped_head_on_car", "car_car_crossing", "car_rear_end", "bike_crossing_car")
SAFE = ("ped_waits_at_kerb", "cars_pass_in_opposite_lanes", "cars_follow_in_one_lane", "peds_pass_on_pavement")


def _runs(names: tuple[str, ...], seeds: list[int]) -> list[scoring.ScenarioRun]:
    return [r for r in replay.make_runs(5.0, seeds, Noise(), CAMERA) if r.rendering.scenario.name in names]


@pytest.fixture(scope="module")
def offline() -> tuple[list[scoring.ScenarioRun], dict[str, object]]:
    runs = _runs(COLLISIONS + SAFE, [0, 1])
    detector = load_settings(DetectorSettings, REPO / "config").detector
    config = detector.model_copy(update={"crop": detector.crop.model_copy(update={"enabled": False})})
    scheduler = load_settings(SchedulerSettings, REPO / "config")
    seen = asyncio.run(replay.detect_runs(runs, config, CAMERA))
    taskgen = replay.replay_taskgen(seen, scheduler)
    flags = replay.conflict_flags(seen, conflict_trigger(scheduler.taskgen)) + taskgen.provisional
    return runs, scoring.score(runs, seen, flags, taskgen.tasks)


def test_every_collision_course_is_flagged_within_a_second_of_onset(
    offline: tuple[list[scoring.ScenarioRun], dict[str, object]],
) -> None:
    runs, metrics = offline
    assert sum(len(r.episodes) for r in runs if r.kind is Kind.COLLISION) == 2 * len(COLLISIONS)
    assert metrics["episode_recall"] == 1.0, metrics["missed_episodes"]
    # ... and the LLM was asked about each in time.
    assert metrics["llm_episode_recall"] == 1.0


def test_safe_traffic_raises_no_alarm(offline: tuple[list[scoring.ScenarioRun], dict[str, object]]) -> None:
    _, metrics = offline
    assert metrics["safe_alarms"] == 0, metrics["false_alarms"]


def test_measured_ttc_is_close_to_the_truth(offline: tuple[list[scoring.ScenarioRun], dict[str, object]]) -> None:
    _, metrics = offline
    assert isinstance(metrics["ttc_mae_s"], float) and metrics["ttc_mae_s"] < 0.2
    assert isinstance(metrics["ttc_coverage"], float) and metrics["ttc_coverage"] > 0.8


@pytest.fixture
def embedded_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[EmbeddedSettings]:
    monkeypatch.setenv("ALGO_GATEWAY__GRPC_PORT", "0")
    monkeypatch.setenv("ALGO_GATEWAY__HTTP_PORT", "0")
    monkeypatch.setenv("ALGO_CAMERAS__CAMERAS", "[]")
    monkeypatch.setenv("ALGO_GATEWAY__STATE_DIR", str(tmp_path))
    monkeypatch.setenv("RW_LLM_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    yield EmbeddedSettings.load(REPO / "config")


@pytest.mark.e2e
async def test_a_provisional_alert_reaches_a_websocket_client_at_once(embedded_env: EmbeddedSettings) -> None:
    runs = _runs(("ped_crossing_car", "ped_waits_at_kerb"), [0])
    result = await live.live_run(runs, embedded_env, CAMERA, drain_s=2.0)
    (collision,) = [r for r in runs if r.kind is Kind.COLLISION]
    flags = result.provisional_flags()
    assert {f.camera_id for f in flags} == {collision.camera_id}, "the kerbside pedestrian raised an alert"
    (episode,) = collision.episodes
    first = min(f.t_s for f in flags)
    assert episode.onset_s - scoring.LEAD_S <= first <= episode.onset_s + scoring.DETECT_WITHIN_S
    # Frame capture to the client within a second: the simulated LLM alone takes a second (median).
    assert max(result.provisional_latencies()) < 1.0
