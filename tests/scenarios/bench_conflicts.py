"""`make bench-conflicts`: how well the system measures near-misses against scenarios with analytic truth.

At each frame rate (2, 5 and 10 FPS) every scenario of tests/scenarios/world.py runs once per seed, each on its
own calibrated camera, with the issue's detector noise:

- offline (replay.py): the frames through the real Detector (ByteTrack → kinematics → conflicts → groups), then
  the real TaskGenerator on a simulated clock with the simulator's verdicts: ttc_mae_s, episode recall and
  precision, false alarms on the safe scenarios, naive and policy LLM calls, llm_episode_recall;
- live (live.py): the collision and near-miss scenarios of one seed in real time through embedded mode to a
  WebSocket client: provisional_alert_p95_s (frame capture → provisional alert received);
- cpu_ms_per_frame: the detector's kinematics + conflict step for one frame of 50 tracks, timed directly;
- real video: vtest.avi (pedestrians) through the real model (detections cached under var/bench/), uncalibrated:
  the pedestrian–pedestrian conflicts the system flags and the distribution of speeds.

Writes bench-results/conflicts.json and bench-results/conflicts.md. `--quick` (CI): two seeds, a shorter live run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import statistics
import struct
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from riskwatch import events
from riskwatch.bus import InMemoryBus
from riskwatch.config.loader import load_settings
from riskwatch.domain import Calibration
from riskwatch.v1 import detector_pb2, events_pb2
from riskwatch_detector.backends import RawDetections, create_backend
from riskwatch_detector.config import CategoryName, DetectorConfig, DetectorSettings
from riskwatch_detector.kinematics import CameraMotion, PairMeasurer
from riskwatch_detector.service import Detector
from riskwatch_scheduler.config import SchedulerSettings, TaskGeneratorConfig
from services.scheduler.bench.bench_taskgen import T0, video_frames
from tests.scenarios import live, replay, scoring
from tests.scenarios.backend import ScenarioBackend, frame_png
from tests.scenarios.world import Camera, Kind, Noise

REPO = Path(__file__).resolve().parents[2]
TARGETS_5_FPS = {
    "episode_recall": 0.99,
    "episode_precision": 0.95,
    "reduction": 10,
    "llm_episode_recall": 0.99,
    "provisional_alert_p95_s": 0.5,
    "cpu_ms_per_frame": 1.0,
}


# ---- the task generator's conflict trigger --------------------------------------------------------


def conflict_trigger(config: TaskGeneratorConfig) -> Callable[[events_pb2.Conflict], bool]:
    """Whether a conflict passes one of the task generator's threshold rules on TTC, PET or DRAC (taskgen.yaml)."""
    below: dict[str, float] = {}
    above: dict[str, float] = {}
    fields = {"min_ttc_s": "ttc_s", "min_pet_s": "pet_s", "max_drac_m_s2": "drac_m_s2"}
    for rule in config.thresholds:
        if rule.feature in fields:
            name = fields[rule.feature]
            if rule.direction == "below":
                below[name] = max(below.get(name, -np.inf), *rule.bounds)
            else:
                above[name] = min(above.get(name, np.inf), *rule.bounds)
    if not below and not above:
        raise SystemExit("config/taskgen.yaml has no threshold rule on min_ttc_s, min_pet_s or max_drac_m_s2")

    def passes(conflict: events_pb2.Conflict) -> bool:
        set_fields = {field.name for field, _ in conflict.ListFields()}
        return any(f in set_fields and getattr(conflict, f) < bound for f, bound in below.items()) or any(
            f in set_fields and getattr(conflict, f) > bound for f, bound in above.items()
        )

    return passes


# ---- scenarios at one frame rate ------------------------------------------------------------------


def offline(fps: float, seeds: Sequence[int], args: argparse.Namespace, camera: Camera) -> dict[str, Any]:
    detector_settings = load_settings(DetectorSettings, args.config_dir).detector
    config = detector_settings.model_copy(update={"crop": detector_settings.crop.model_copy(update={"enabled": False})})
    scheduler = load_settings(SchedulerSettings, args.config_dir)
    runs = replay.make_runs(fps, seeds, Noise(), camera)
    started = time.perf_counter()
    seen = asyncio.run(replay.detect_runs(runs, config, camera))
    detect_s = time.perf_counter() - started
    taskgen = replay.replay_taskgen(seen, scheduler, llm_latency_s=args.llm_latency)
    flags = replay.conflict_flags(seen, conflict_trigger(scheduler.taskgen)) + taskgen.provisional
    metrics = scoring.score(runs, seen, flags, taskgen.tasks)
    minutes = sum(run.duration_s for run in runs) / 60
    naive, policy = taskgen.naive_calls / minutes, taskgen.policy_calls / minutes
    kinds = {kind.value: sum(run.kind is kind for run in runs) for kind in Kind}
    return {
        **metrics,
        "naive_calls_per_cam_min": round(naive, 1),
        "policy_calls_per_cam_min": round(policy, 1),
        "reduction": round(naive / policy, 2) if policy else None,
        "tasks_by_reason": taskgen.reasons,
        "provisional_results": len(taskgen.provisional),
        "scenarios": {"instances": len(runs), "by_kind": kinds, "camera_minutes": round(minutes, 2)},
        "id_switch_gaps": sum(len(run.rendering.switches) for run in runs),
        "frames": len(seen),
        "detector_wall_ms_per_frame": round(1000 * detect_s / len(seen), 2),
    }


def online(fps: float, seed: int, args: argparse.Namespace, camera: Camera) -> dict[str, Any]:
    """The collision and near-miss scenarios of one seed, live through embedded mode."""
    from riskwatch_embedded.config import EmbeddedSettings  # noqa: PLC0415 - after the environment is set

    runs = replay.make_runs(fps, [seed], Noise(), camera, kinds=(Kind.COLLISION, Kind.NEAR_MISS))
    if args.quick:
        runs = runs[:4]
    result = asyncio.run(live.live_run(runs, EmbeddedSettings.load(args.config_dir), camera))
    latencies = sorted(result.provisional_latencies())
    flags = result.provisional_flags()
    metrics = scoring.score(runs, result.seen, flags, [])
    return {
        "cameras": len(runs),
        "provisional_alerts": len(latencies),
        "provisional_alert_p50_s": _percentile(latencies, 50),
        "provisional_alert_p95_s": _percentile(latencies, 95),
        "provisional_alert_max_s": round(latencies[-1], 3) if latencies else None,
        # Episodes with a provisional alert at the WebSocket client for a frame within 1 s of onset.
        "provisional_episode_recall": metrics["episode_recall"],
        "episodes": metrics["episodes"],
        "missed_episodes": metrics["missed_episodes"],
        "alerts": len(result.alerts),
        # Frames answered with an event (the others were refused or superseded under load).
        "frames_sent": sum(len(run.rendering.frames) for run in runs),
        "frames_answered": len(result.seen),
    }


def _percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


# ---- the kinematics + conflicts step, timed directly ----------------------------------------------


def cpu_ms_per_frame(config: DetectorConfig, camera: Camera, *, tracks: int = 50, frames: int = 200) -> dict[str, Any]:
    """Median over runs of the mean time of CameraMotion.update + PairMeasurer.measure for `tracks` tracks."""
    rng = np.random.default_rng(7)
    categories = [CategoryName.PEDESTRIAN] * 25 + [CategoryName.VEHICLE] * 20 + [CategoryName.TWO_WHEELER] * 5
    categories = categories[:tracks]
    start = np.column_stack([rng.uniform(-8, 8, tracks), rng.uniform(12, 45, tracks)])
    velocity = rng.normal(0, 3, (tracks, 2))
    image_points, ground_points = camera.calibration_points()
    calibration = Calibration.fit(image_points, ground_points, version=1)
    ids = np.arange(1, tracks + 1)
    boxes_per_frame = []
    for k in range(frames + 20):
        ground = start + velocity * (k / 5)
        bottom = camera.project(np.column_stack([ground, np.zeros(tracks)]))
        boxes_per_frame.append(np.column_stack([bottom[:, 0] - 15, bottom[:, 1] - 60, bottom[:, 0] + 15, bottom[:, 1]]))
    runs = []
    for _ in range(7):
        motion = CameraMotion(config.kinematics)
        measurer = PairMeasurer(config.conflicts)
        for k in range(20):
            measurer.measure(motion.update(ids, boxes_per_frame[k], k / 5, calibration), categories, boxes_per_frame[k])
        began = time.perf_counter()
        for k in range(20, frames + 20):
            fitted = motion.update(ids, boxes_per_frame[k], k / 5, calibration)
            measurer.measure(fitted, categories, boxes_per_frame[k])
        runs.append(1000 * (time.perf_counter() - began) / frames)
    return {"tracks": tracks, "ms": round(statistics.median(runs), 3), "runs_ms": [round(r, 3) for r in runs]}


# ---- real video: vtest.avi ------------------------------------------------------------------------


def video_check(args: argparse.Namespace) -> dict[str, Any]:
    """vtest.avi at 5 FPS through the real model (cached) and the real detector after it, uncalibrated."""
    settings = load_settings(DetectorSettings, args.config_dir).detector
    config = settings.model_copy(update={"crop": settings.crop.model_copy(update={"enabled": False})})
    frames = video_frames(args.video, 5.0)
    key = hashlib.sha256(
        f"{args.video.stat().st_size}:{config.model_path.resolve()}:{config.model_path.stat().st_size}".encode()
    ).hexdigest()[:12]
    cache = REPO / "var" / "bench" / f"conflicts-vtest-{key}.bin"
    model = create_backend(config)
    names = dict(model.class_names)
    if cache.exists():
        raws = _load_raws(cache)
    else:
        print(f"  running the model on {args.video.name} ({len(frames)} frames, cached to {cache.relative_to(REPO)})")
        raws = [model.infer([f])[0] for f in frames]
        cache.parent.mkdir(parents=True, exist_ok=True)
        _save_raws(cache, raws)
    model.close()
    backend = ScenarioBackend(names)
    height, width = frames[0].shape[:2]
    seen = asyncio.run(_detect_video(config, backend, raws, width, height))
    trigger = conflict_trigger(load_settings(SchedulerSettings, args.config_dir).taskgen)
    ped = events_pb2.CATEGORY_PEDESTRIAN
    flagged = [
        (event.frame_id, group.conflict)
        for event in seen
        for group in event.groups
        if group.HasField("conflict")
        and group.conflict.category_a == ped
        and group.conflict.category_b == ped
        and trigger(group.conflict)
    ]
    speeds = [
        d.kinematics.speed_box_s
        for event in seen
        for d in event.detections
        if d.kinematics.estimated and d.category == ped
    ]
    pairs = {(min(c.track_a, c.track_b), max(c.track_a, c.track_b)) for _, c in flagged}
    ttcs = [c.ttc_s for _, c in flagged if c.HasField("ttc_s")]
    return {
        "video": str(args.video.relative_to(REPO)) if args.video.is_relative_to(REPO) else str(args.video),
        "frames": len(seen),
        "fps": 5.0,
        "pedestrian_detections": sum(d.category == ped for e in seen for d in e.detections),
        "ped_ped_conflict_frames_flagged": len(flagged),
        "ped_ped_pairs_flagged": len(pairs),
        "flagged_ttc_s_percentiles": {str(q): _percentile(ttcs, q) for q in (5, 50, 95)},
        "pedestrian_speed_box_s_percentiles": {str(q): _percentile(speeds, q) for q in (5, 25, 50, 75, 95, 99)},
        "estimated_share": round(len(speeds) / max(1, sum(d.category == ped for e in seen for d in e.detections)), 3),
    }


async def _detect_video(
    config: DetectorConfig, backend: ScenarioBackend, raws: Sequence[RawDetections], width: int, height: int
) -> list[events_pb2.DetectionEvent]:
    bus = InMemoryBus(partitions=1)
    bus.create_topic("video-detections", 1)
    detector = Detector(config, backend, bus, "video-detections", group_id_prefix="g-")
    await detector.start()
    out = []
    try:
        for i, raw in enumerate(raws):
            frame = detector_pb2.Frame(
                camera_id="vtest",
                frame_id=i + 1,
                capture_time=events.timestamp(T0 + i / 5.0),
                image=frame_png(backend.register_raw(raw), width, height),
            )
            out.append(await detector.detect(frame))
    finally:
        await detector.stop()
    return out


def _save_raws(path: Path, raws: Sequence[RawDetections]) -> None:
    with path.open("wb") as file:
        for raw in raws:
            rows = np.column_stack([raw.boxes, raw.scores, raw.class_ids]).astype(np.float32)
            file.write(struct.pack(">I", len(rows)) + rows.tobytes())


def _load_raws(path: Path) -> list[RawDetections]:
    data, pos, out = path.read_bytes(), 0, []
    while pos < len(data):
        (count,) = struct.unpack_from(">I", data, pos)
        rows = np.frombuffer(data, np.float32, count * 6, pos + 4).reshape(count, 6)
        out.append(RawDetections(rows[:, :4].copy(), rows[:, 4].copy(), rows[:, 5].astype(np.int64)))
        pos += 4 + count * 24
    return out


# ---- report ---------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


ROWS = (
    ("episode_recall", "episode recall (≥ 0.99)"),
    ("episode_precision", "episode precision (≥ 0.95)"),
    ("false_alarms_per_cam_hour", "false alarms per camera-hour (safe scenarios)"),
    ("ttc_mae_s", "TTC median abs. error, true TTC < 3 s (s)"),
    ("ttc_coverage", "share of those frames with a TTC for the pair"),
    ("provisional_alert_p95_s", "provisional alert P95, capture → WebSocket (≤ 0.5 s)"),
    ("provisional_episode_recall", "episodes with a provisional alert at the client (live)"),
    ("naive_calls_per_cam_min", "naive LLM calls per camera-minute"),
    ("policy_calls_per_cam_min", "policy LLM calls per camera-minute"),
    ("reduction", "reduction (≥ 10)"),
    ("llm_episode_recall", "episodes with an LLM verdict within 1 s of onset (≥ 0.99)"),
    ("episodes", "TTC episodes scored"),
)


def markdown(report: dict[str, Any]) -> str:
    rates = report["fps"]
    lines = [
        "# bench-conflicts",
        "",
        f"`make bench-conflicts` on {report['machine']['cpu']} ({report['machine']['cores']} cores), "
        f"{report['setup']['seeds']} seeds × {report['setup']['scenarios_per_seed']} scenarios per frame rate.",
        "",
        "| measure | " + " | ".join(f"{fps} FPS" for fps in rates) + " |",
        "|---|" + "---|" * len(rates),
    ]
    for key, label in ROWS:
        cells = []
        for fps in rates:
            run = report["by_fps"][str(fps)]
            value = run.get(key, run.get("live", {}).get(key))
            cells.append("–" if value is None else str(value))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cpu = report["cpu_ms_per_frame"]
    lines += [
        "",
        f"Kinematics + conflicts for {cpu['tracks']} tracks: {cpu['ms']} ms per frame (≤ 1 ms; median of runs).",
    ]
    if report.get("video"):
        video = report["video"]
        lines += [
            "",
            f"Real video ({video['video']}, {video['frames']} frames at 5 FPS, uncalibrated): "
            f"{video['ped_ped_pairs_flagged']} pedestrian pairs flagged in {video['ped_ped_conflict_frames_flagged']} "
            f"frames; pedestrian speed (box sizes/s) percentiles {video['pedestrian_speed_box_s_percentiles']}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fps", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    parser.add_argument("--seeds", type=int, default=8, help="scenario instances per scenario and frame rate")
    parser.add_argument("--quick", action="store_true", help="CI: 2 seeds, a short live run, no video")
    parser.add_argument("--no-live", action="store_true", help="skip the live (embedded, real-time) runs")
    parser.add_argument("--no-video", action="store_true", help="skip the vtest.avi sanity check")
    parser.add_argument("--config-dir", type=Path, default=REPO / "config")
    parser.add_argument("--video", type=Path, default=REPO / "var" / "data" / "vtest.avi")
    parser.add_argument("--llm-latency", type=float, default=1.0, help="simulated seconds from task to verdict")
    parser.add_argument("--output", type=Path, default=REPO / "bench-results" / "conflicts.json")
    args = parser.parse_args()
    if args.quick:
        args.seeds = 2
    seeds = list(range(args.seeds))
    camera = Camera()
    state = tempfile.mkdtemp(prefix="bench-conflicts-")
    os.environ.update(
        {
            "ALGO_GATEWAY__GRPC_PORT": "0",
            "ALGO_GATEWAY__HTTP_PORT": "0",
            "ALGO_CAMERAS__CAMERAS": "[]",
            "ALGO_GATEWAY__STATE_DIR": state,
            "RW_LLM_BASE_URL": f"http://127.0.0.1:{_free_port()}/v1",
        }
    )
    started = time.perf_counter()
    by_fps: dict[str, Any] = {}
    for fps in args.fps:
        print(f"{fps} FPS: {len(seeds)} seeds offline")
        by_fps[str(fps)] = offline(fps, seeds, args, camera)
        if not args.no_live:
            print(f"{fps} FPS: live through embedded mode")
            by_fps[str(fps)]["live"] = online(fps, seeds[0], args, camera)
            by_fps[str(fps)]["provisional_alert_p95_s"] = by_fps[str(fps)]["live"]["provisional_alert_p95_s"]
    detector = load_settings(DetectorSettings, args.config_dir).detector
    report: dict[str, Any] = {
        "fps": args.fps,
        "by_fps": by_fps,
        "cpu_ms_per_frame": cpu_ms_per_frame(detector, camera),
        "targets_5_fps": TARGETS_5_FPS,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "setup": {
            "seeds": len(seeds),
            "scenarios_per_seed": len(replay.make_runs(5.0, [0], Noise(), camera)),
            "noise": Noise().__repr__(),
            "camera": camera.__repr__(),
            "llm_latency_s": args.llm_latency,
            "definitions": scoring.__doc__,
        },
    }
    if not (args.quick or args.no_video):
        print("vtest.avi: real detections, uncalibrated")
        report["video"] = video_check(args)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {args.output} and {args.output.with_suffix('.md')} in {report['wall_s']} s")


def _free_port() -> int:
    from tests.support.stack import free_port  # noqa: PLC0415 - only the bench's process needs it

    return free_port()


if __name__ == "__main__":
    main()
