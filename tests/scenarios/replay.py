"""Scenarios through the real detector and task generator on a simulated clock (the offline half of the bench).

Every scenario instance is its own camera. Its frames go through `Detector.detect` (scripted backend → ByteTrack
→ kinematics → conflicts → groups) with the camera's calibration on each Frame, all cameras tick by tick; the
events are then replayed in capture order through the real `TaskGenerator`, as services/scheduler/bench/
bench_taskgen.py does (provisional results from `observe_danger`, as `handle` publishes them); each task is
answered by the simulator's deterministic verdict after a simulated LLM
latency, and fed back as the results topic would.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from riskwatch import events
from riskwatch.bus import InMemoryBus
from riskwatch.domain import Calibration, PromptFeatures
from riskwatch.v1 import detector_pb2, events_pb2
from riskwatch_detector.config import DetectorConfig
from riskwatch_detector.service import Detector
from riskwatch_llmsim import verdicts
from riskwatch_scheduler.config import SchedulerSettings
from riskwatch_scheduler.taskgen import TaskGenerator
from services.scheduler.bench.bench_taskgen import T0, Clock, Due
from tests.scenarios import truth
from tests.scenarios.backend import ScenarioBackend, frame_png
from tests.scenarios.scoring import Flag, Pair, ScenarioRun, Seen, SentTask
from tests.scenarios.world import Camera, Noise, catalogue, render


def make_runs(
    fps: float, seeds: Sequence[int], noise: Noise, camera: Camera, kinds: Sequence[str] = ()
) -> list[ScenarioRun]:
    """Every scenario of the catalogue once per seed (geometry from the seed, noise from the seed and scenario)."""
    runs = []
    for seed in seeds:
        for i, scenario in enumerate(catalogue(np.random.default_rng(seed))):
            if kinds and scenario.kind not in kinds:
                continue
            rendering = render(scenario, camera, fps, noise, np.random.default_rng([seed, i, round(fps * 10)]))
            runs.append(ScenarioRun.of(f"{scenario.name}.s{seed}", seed, rendering))
    return runs


def scenario_frame(
    run: ScenarioRun,
    index: int,
    *,
    backend: ScenarioBackend,
    camera: Camera,
    calibration: events_pb2.GroundCalibration,
    t0: float,
) -> detector_pb2.Frame:
    frame = run.rendering.frames[index]
    key = backend.register(frame)
    return detector_pb2.Frame(
        camera_id=run.camera_id,
        frame_id=index + 1,
        capture_time=events.timestamp(t0 + frame.time_s),
        image=frame_png(key, camera.width_px, camera.height_px),
        calibration=calibration,
    )


def calibration_of(camera: Camera) -> events_pb2.GroundCalibration:
    """The camera's calibration as an operator would enter it (the system refits it from the points)."""
    image_points, ground_points = camera.calibration_points()
    return Calibration.fit(image_points, ground_points, version=1).to_proto()


async def detect_runs(runs: Sequence[ScenarioRun], config: DetectorConfig, camera: Camera) -> list[Seen]:
    """Every run's frames through a real Detector (scripted backend), all cameras tick by tick."""
    backend = ScenarioBackend()
    bus = InMemoryBus(partitions=1)
    bus.create_topic("scenario-detections", 1)
    detector = Detector(config, backend, bus, "scenario-detections", group_id_prefix="g-")
    calibration = calibration_of(camera)
    seen: list[Seen] = []
    await detector.start()
    try:
        ticks = max(len(run.rendering.frames) for run in runs)
        for index in range(ticks):
            batch = [run for run in runs if index < len(run.rendering.frames)]
            frames = [
                scenario_frame(run, index, backend=backend, camera=camera, calibration=calibration, t0=T0)
                for run in batch
            ]
            results = await asyncio.gather(*(detector.detect(frame) for frame in frames))
            for run, event in zip(batch, results, strict=True):
                rendered = run.rendering.frames[index]
                seen.append(Seen(run, rendered.time_s, event, rendered.users))
    finally:
        await detector.stop()
    if backend.unknown:
        raise RuntimeError(f"{backend.unknown} frames reached the backend without registered boxes")
    return seen


def conflict_flags(seen: Sequence[Seen], passes: Callable[[events_pb2.Conflict], bool]) -> list[Flag]:
    """A flag for every group conflict that passes the task generator's conflict trigger."""
    flags = []
    for frame in seen:
        for group in frame.event.groups:
            if group.HasField("conflict") and passes(group.conflict):
                pair = frame.pair_of(group.conflict)
                if pair is not None:
                    flags.append(Flag(frame.run.camera_id, frame.t_s, pair, "conflict"))
    return flags


@dataclass(frozen=True, slots=True)
class TaskgenReplay:
    naive_calls: int
    policy_calls: int
    tasks: list[SentTask]
    provisional: list[Flag]
    reasons: dict[str, int]


def _group_pairs(frame: Seen, track_ids: Sequence[int]) -> frozenset[Pair]:
    users = {u for u in (frame.user_of(t) for t in track_ids) if u is not None}
    scored = set(truth.scored_pairs(frame.run.rendering.scenario))
    return frozenset(pair for pair in itertools.combinations(sorted(users), 2) if pair in scored)


def replay_taskgen(
    seen: Sequence[Seen], settings: SchedulerSettings, *, llm_latency_s: float = 1.0, detect_latency_s: float = 0.05
) -> TaskgenReplay:
    """The task generator over every event in capture order, answered by the simulator's verdicts."""
    clock = Clock()
    generator = TaskGenerator(settings, clock=clock)
    frames = {(f.run.camera_id, f.event.frame_id): f for f in seen}
    ordered = sorted(seen, key=lambda f: (f.t_s, f.run.camera_id))
    tasks_topic = settings.kafka.topics.assessment_tasks.name
    due: list[Due] = []
    tasks: list[SentTask] = []
    provisional: list[Flag] = []
    naive = 0
    seq = itertools.count()
    for frame in ordered:
        clock.now = T0 + frame.t_s + detect_latency_s
        while due and due[0].at <= clock.now:
            generator.observe_result(heapq.heappop(due).result)
        naive += len(frame.event.groups)
        for result in generator.observe_danger(frame.event):
            pair = frame.pair_of(result.measured.conflict)
            if pair is not None:
                provisional.append(Flag(frame.run.camera_id, frame.t_s, pair, "provisional"))
        generator.observe_event(frame.event)
        for out in generator.release():
            if out.topic != tasks_topic:
                continue
            task = events_pb2.AssessmentTask.FromString(out.value)
            origin = frames[task.camera_id, task.frame_id]
            tasks.append(SentTask(task.camera_id, origin.t_s, _group_pairs(origin, task.member_track_ids)))
            level = verdicts.assess(verdicts.parse_features(PromptFeatures.from_task(task).to_dict())).risk_level
            result = events_pb2.AssessmentResult(
                task_id=task.task_id,
                camera_id=task.camera_id,
                group_id=task.group_id,
                capture_time=task.capture_time,
                verdict=events_pb2.Verdict(risk_level=level.proto),
            )
            heapq.heappush(due, Due(clock.now + llm_latency_s, next(seq), result))
    reasons: dict[str, int] = {}
    for (_, reason), n in generator.generated.items():
        reasons[reason] = reasons.get(reason, 0) + n
    return TaskgenReplay(naive, len(tasks), tasks, provisional, reasons)
