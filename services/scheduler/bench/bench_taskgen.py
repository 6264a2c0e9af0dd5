"""`make bench-taskgen`: what the task-generator policy saves against one LLM call per group per frame.

vtest.avi is replayed at 2 FPS as 8 cameras (each starting at a different offset; the clip is played
forwards then backwards so tracks stay continuous) through the real detector (YOLO ONNX → tracker → groups).
The detections are computed once and cached under var/bench/. They are then replayed in capture-time
order through the real TaskGenerator on a simulated clock; every task is answered with the simulator's
deterministic verdict (riskwatch_llmsim.verdicts) after a simulated LLM latency, and the result is fed back
to the generator as the results topic would.

- naive: one call per group per frame; it observes every verdict change of every group.
- policy: the TaskGenerator with config/taskgen.yaml.
- change_recall: of the naive policy's verdict changes (a group's level differs from its previous frame's),
  the share for which the policy obtained a verdict of the new level for a frame captured within
  `--window` seconds after the change (changes in the last window of the replay are not counted).

Writes bench-results/taskgen.json (naive_calls_per_cam_min, policy_calls_per_cam_min, reduction, change_recall,
and the provisional results the conflicts raised).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import heapq
import itertools
import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from riskwatch import events
from riskwatch.bus import InMemoryBus
from riskwatch.config.loader import load_settings
from riskwatch.domain import PromptFeatures
from riskwatch.v1 import detector_pb2, events_pb2
from riskwatch_aggregator.config import AggregatorSettings
from riskwatch_aggregator.state import RiskStateBook
from riskwatch_detector.backends import create_backend
from riskwatch_detector.config import DetectorSettings
from riskwatch_detector.service import Detector
from riskwatch_llmsim import verdicts
from riskwatch_scheduler.config import SchedulerSettings
from riskwatch_scheduler.taskgen import TaskGenerator

REPO = Path(__file__).resolve().parents[3]

T0 = 1_800_000_000.0


# ---- detections (computed once, cached) ---------------------------------------------------------


def video_frames(path: Path, fps: float) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    native = capture.get(cv2.CAP_PROP_FPS) or 10.0
    step = max(1, round(native / fps))
    frames, index = [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % step == 0:
            frames.append(np.ascontiguousarray(frame))
        index += 1
    capture.release()
    if not frames:
        raise SystemExit(f"cannot read {path}: run `make assets`")
    return frames


def ping_pong(n: int) -> list[int]:
    """0, 1, …, n-1, n-2, …, 1: a loop without a cut, so tracks (and group ids) continue."""
    return list(range(n)) + list(range(n - 2, 0, -1))


async def detect_all(args: argparse.Namespace, cache: Path) -> list[events_pb2.DetectionEvent]:
    frames = video_frames(args.video, args.fps)
    jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in frames]
    order = ping_pong(len(frames))
    settings = load_settings(DetectorSettings, args.config_dir)
    config = settings.detector.model_copy(update={"crop": settings.detector.crop.model_copy(update={"enabled": False})})
    bus = InMemoryBus(partitions=1)
    bus.create_topic("bench-detections", 1)
    detector = Detector(config, create_backend(config), bus, "bench-detections", group_id_prefix="g-")
    await detector.start()
    count = int(args.duration * args.fps)
    out: list[events_pb2.DetectionEvent] = []
    started = time.perf_counter()
    try:
        for i in range(count):
            jobs = []
            for cam in range(args.cameras):
                position = order[(cam * len(order) // args.cameras + i) % len(order)]
                frame = detector_pb2.Frame(
                    camera_id=f"cam-{cam + 1}",
                    frame_id=i,
                    capture_time=events.timestamp(capture_time(i, cam, args)),
                    image=jpegs[position],
                )
                jobs.append(detector.detect(frame))
            out.extend(await asyncio.gather(*jobs))
            if i % 20 == 0:
                print(
                    f"  detected {i + 1}/{count} ticks × {args.cameras} cameras ({time.perf_counter() - started:.0f} s)"
                )
    finally:
        await detector.stop()
    with cache.open("wb") as file:
        for event in out:
            data = event.SerializeToString()
            file.write(struct.pack(">I", len(data)) + data)
    return out


def capture_time(i: int, cam: int, args: argparse.Namespace) -> float:
    return float(T0 + i / args.fps + cam / (args.fps * args.cameras))  # cameras out of phase, as real ones are


def load_cache(cache: Path) -> Iterator[events_pb2.DetectionEvent]:
    data = cache.read_bytes()
    pos = 0
    while pos < len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        yield events_pb2.DetectionEvent.FromString(data[pos + 4 : pos + 4 + size])
        pos += 4 + size


def cache_path(args: argparse.Namespace) -> Path:
    detector_yaml = (
        (args.config_dir / "detector.yaml").read_bytes() if (args.config_dir / "detector.yaml").exists() else b""
    )
    key = hashlib.sha256(
        detector_yaml + f"{args.video.stat().st_size}:{args.cameras}:{args.fps}:{args.duration}".encode()
    ).hexdigest()[:12]
    return REPO / "var" / "bench" / f"taskgen-detections-{key}.bin"


# ---- replay --------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass(order=True)
class Due:
    at: float
    seq: int
    result: events_pb2.AssessmentResult


def level_of(features: dict[str, Any]) -> int:
    return int(verdicts.assess(verdicts.parse_features(features)).risk_level.proto)


def group_features(event: events_pb2.DetectionEvent, group: events_pb2.Group) -> dict[str, Any]:
    task = events_pb2.AssessmentTask(
        camera_id=event.camera_id,
        group_id=group.group_id,
        member_track_ids=group.member_track_ids,
        features=group.features,
    )
    return PromptFeatures.from_task(task).to_dict()


def replay(event_list: list[events_pb2.DetectionEvent], args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(SchedulerSettings, args.config_dir)
    clock = Clock()
    gen = TaskGenerator(settings, clock=clock)
    event_list.sort(key=lambda e: events.seconds(e.capture_time))
    start = events.seconds(event_list[0].capture_time)
    end = events.seconds(event_list[-1].capture_time)

    naive: dict[tuple[str, str], list[tuple[float, int]]] = collections.defaultdict(list)
    seen: dict[tuple[str, str], list[tuple[float, int]]] = collections.defaultdict(list)
    due: list[Due] = []
    naive_calls = policy_calls = 0
    seq = 0
    for event in event_list:
        capture = events.seconds(event.capture_time)
        clock.now = capture + args.detect_latency
        while due and due[0].at <= clock.now:
            gen.observe_result(heapq.heappop(due).result)
        for group in event.groups:
            naive_calls += 1
            naive[event.camera_id, group.group_id].append((capture, level_of(group_features(event, group))))
        gen.observe_danger(event)
        gen.observe_event(event)
        for out in gen.release():
            task = events_pb2.AssessmentTask.FromString(out.value)
            policy_calls += 1
            lvl = level_of(PromptFeatures.from_task(task).to_dict())
            seen[task.camera_id, task.group_id].append((events.seconds(task.capture_time), lvl))
            result = events_pb2.AssessmentResult(
                task_id=task.task_id,
                camera_id=task.camera_id,
                group_id=task.group_id,
                capture_time=task.capture_time,
                verdict=events_pb2.Verdict(risk_level=lvl),  # type: ignore[arg-type]
            )
            seq += 1
            heapq.heappush(due, Due(clock.now + args.llm_latency, seq, result))

    changes = observed = 0
    missed: list[dict[str, Any]] = []
    by_kind: collections.Counter[str] = collections.Counter()
    by_kind_seen: collections.Counter[str] = collections.Counter()
    for key, timeline in naive.items():
        for (_, before), (t, after) in itertools.pairwise(timeline):
            if after == before or t > end - args.window:
                continue
            kind = "up" if after > before else "down"
            changes += 1
            by_kind[kind] += 1
            if any(t <= ts <= t + args.window and lvl == after for ts, lvl in seen.get(key, ())):
                observed += 1
                by_kind_seen[kind] += 1
            elif len(missed) < 20:
                missed.append({"camera": key[0], "group": key[1], "at_s": round(t - start, 2), "to_level": after})

    oracle_calls = sum(oracle(timeline, end, args.window) for timeline in naive.values())
    state_changes, state_observed = state_recall(naive, seen, end, args)
    minutes = (end - start + 1 / args.fps) / 60
    naive_rate = naive_calls / args.cameras / minutes
    policy_rate = policy_calls / args.cameras / minutes
    sent_reasons: collections.Counter[str] = collections.Counter()
    for (_, reason), n in gen.generated.items():
        sent_reasons[reason] += n
    skipped_reasons: collections.Counter[str] = collections.Counter()
    for (_, reason), n in gen.skipped.items():
        skipped_reasons[reason] += n
    return {
        "naive_calls_per_cam_min": round(naive_rate, 2),
        "policy_calls_per_cam_min": round(policy_rate, 2),
        "reduction": round(naive_rate / policy_rate, 2) if policy_rate else None,
        "change_recall": round(observed / changes, 4) if changes else None,
        "targets": {"reduction": 10, "change_recall": 0.99},
        # The fewest calls with which a policy that knew the future would observe every change in time:
        # naive / this is the best reduction any policy can reach at change_recall 1.0 on these detections.
        "oracle_calls_per_cam_min": round(oracle_calls / args.cameras / minutes, 2),
        "oracle_max_reduction": round(naive_calls / oracle_calls, 2) if oracle_calls else None,
        "limits": {
            "why": "the simulator's verdict of a group flips whenever a feature crosses one of its bounds; on "
            "these detections that is every few frames, and each flip must be seen within the window",
            "verdict_changes_per_cam_min": round(changes / args.cameras / minutes, 2),
            "group_frames_per_verdict_change": round(naive_calls / changes, 2) if changes else None,
            "new_groups_per_cam_min": round(sent_reasons["new"] / args.cameras / minutes, 2),
        },
        # The same recall measured on what operators see: each stream's verdicts through the aggregator's
        # hysteresis (config/aggregator.yaml); a change counts as observed if the policy's displayed level
        # equals the new level at some capture time within the window.
        "state_change_recall": round(state_observed / state_changes, 4) if state_changes else None,
        "state_changes": state_changes,
        "verdict_changes": changes,
        "verdict_changes_observed": observed,
        "changes_by_direction": {k: {"total": by_kind[k], "observed": by_kind_seen[k]} for k in ("up", "down")},
        "missed_examples": missed,
        "naive_calls": naive_calls,
        "policy_calls": policy_calls,
        "tasks_by_reason": dict(sent_reasons.most_common()),
        # Provisional results (measured danger published at once, taskgen.yaml `provisional`), by level.
        "provisional_per_cam_min": round(sum(gen.provisional.values()) / args.cameras / minutes, 2),
        "provisional_by_level": {
            level: sum(n for (_, lvl), n in gen.provisional.items() if lvl == level) for level in ("medium", "high")
        },
        "groups_skipped_by_reason": dict(skipped_reasons.most_common()),
        "setup": {
            "video": str(args.video.relative_to(REPO)) if args.video.is_relative_to(REPO) else str(args.video),
            "cameras": args.cameras,
            "fps": args.fps,
            "duration_s": round(end - start + 1 / args.fps, 2),
            "detections": len(event_list),
            "groups_per_frame": round(naive_calls / len(event_list), 2),
            "llm_latency_s": args.llm_latency,
            "window_s": args.window,
            "taskgen": settings.taskgen.model_dump(mode="json", exclude={"cameras", "priority"}),
        },
    }


def displayed(timeline: list[tuple[float, int]], book: RiskStateBook, key: str) -> list[tuple[float, int]]:
    """The level the aggregator shows for a group after each of its verdicts, by capture time."""
    out: list[tuple[float, int]] = []
    for i, (t, lvl) in enumerate(timeline):
        result = events_pb2.AssessmentResult(
            task_id=f"{key}/{i}",
            camera_id=key,
            group_id="g",
            capture_time=events.timestamp(t),
            verdict=events_pb2.Verdict(risk_level=lvl),  # type: ignore[arg-type]
        )
        book.apply(result, t)
        state = book.get(key)
        assert state is not None
        out.append((t, state.groups[0].verdict.risk_level))
    return out


def state_recall(
    naive: dict[tuple[str, str], list[tuple[float, int]]],
    seen: dict[tuple[str, str], list[tuple[float, int]]],
    end: float,
    args: argparse.Namespace,
) -> tuple[int, int]:
    config = load_settings(AggregatorSettings, args.config_dir).aggregator
    total = observed = 0
    for key, timeline in naive.items():
        name = "/".join(key)
        shown = displayed(timeline, RiskStateBook(config), name)
        policy = displayed(sorted(seen.get(key, [])), RiskStateBook(config), name)
        for (_, before), (t, after) in itertools.pairwise(shown):
            if after == before or t > end - args.window:
                continue
            total += 1
            levels = {lvl for ts, lvl in policy if t < ts <= t + args.window}
            earlier = [lvl for ts, lvl in policy if ts <= t]
            if earlier:
                levels.add(earlier[-1])
            observed += after in levels
    return total, observed


def oracle(timeline: list[tuple[float, int]], end: float, window: float) -> int:
    """Fewest observations of one group covering each change (t, level) by a frame in [t, t + window] at `level`.

    Greedy interval stabbing: take the uncovered change with the earliest deadline and observe the latest frame
    before that deadline showing its level, which covers every other change it can.
    """
    changes = [
        (t, after) for (_, before), (t, after) in itertools.pairwise(timeline) if after != before and t <= end - window
    ]
    covered = [False] * len(changes)
    calls = 0
    for i, (t, lvl) in enumerate(changes):
        if covered[i]:
            continue
        at = max(ts for ts, level in timeline if t <= ts <= t + window and level == lvl)
        calls += 1
        for j in range(i, len(changes)):
            tj, lj = changes[j]
            if not covered[j] and lj == lvl and tj <= at <= tj + window:
                covered[j] = True
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=REPO / "var" / "data" / "vtest.avi")
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of video per camera")
    parser.add_argument("--config-dir", type=Path, default=REPO / "config")
    parser.add_argument("--llm-latency", type=float, default=1.0, help="simulated seconds from task to result")
    parser.add_argument("--detect-latency", type=float, default=0.05, help="simulated capture → task generator delay")
    parser.add_argument("--window", type=float, default=3.0, help="a change counts as observed within this many s")
    parser.add_argument("--output", type=Path, default=REPO / "bench-results" / "taskgen.json")
    parser.add_argument("--redetect", action="store_true", help="ignore cached detections")
    args = parser.parse_args()

    cache = cache_path(args)
    if cache.exists() and not args.redetect:
        print(f"replaying cached detections {cache.relative_to(REPO)}")
        event_list = list(load_cache(cache))
    else:
        cache.parent.mkdir(parents=True, exist_ok=True)
        print(
            f"running the detector on {args.video.name}: "
            f"{args.cameras} cameras × {args.duration:.0f} s at {args.fps} FPS"
        )
        event_list = asyncio.run(detect_all(args, cache))
    report = replay(event_list, args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: report[k]
                for k in (
                    "naive_calls_per_cam_min",
                    "policy_calls_per_cam_min",
                    "reduction",
                    "change_recall",
                    "verdict_changes",
                )
            },
            indent=2,
        )
    )
    print(f"wrote {args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output}")


if __name__ == "__main__":
    main()
