"""Kinematics + conflicts micro-benchmark: CPU time per frame of the detector's motion step for N tracks.

    uv run python services/detector/bench/bench_motion.py [--tracks 50] [--frames 300] [--runs 5] [--image-only]

Thread CPU time (so other processes on a busy machine count less) of what `Detector._analyse` times as
`detector_motion_seconds`: `CameraMotion.update` (fit every track), `keep` (forget dropped tracks) and
`PairMeasurer.measure` (every configured pair), on a calibrated camera unless --image-only, default settings.
Road users: half pedestrians, the rest vehicles and two-wheelers, at constant speeds (bouncing off the street's
edges), 2 % box jitter, 10 FPS. Prints JSON: the median over runs of each run's median ms per frame, and
separately the ms to write the tracks' Kinematics messages (not part of the step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from riskwatch.domain import Calibration
from riskwatch_detector.config import CategoryName, DetectorConfig
from riskwatch_detector.kinematics import CameraMotion, PairMeasurer

# A camera 8 m up looking down a street (the homography of a pinhole camera tilted 30° below the horizon).
_IMAGE = [(0.0, 720.0), (1280.0, 720.0), (1000.0, 300.0), (280.0, 300.0)]
_GROUND = [(-6.0, 5.0), (6.0, 5.0), (6.0, 40.0), (-6.0, 40.0)]


def run_once(tracks: int, frames: int, *, calibrated: bool, seed: int) -> tuple[float, float]:
    """(median ms per frame of the motion step, median ms to build the tracks' Kinematics messages)."""
    config = DetectorConfig()
    rng = np.random.default_rng(seed)
    calibration = Calibration.fit(_IMAGE, _GROUND, version=1) if calibrated else None
    categories = [
        CategoryName.PEDESTRIAN if i % 2 else (CategoryName.VEHICLE if i % 10 else CategoryName.TWO_WHEELER)
        for i in range(tracks)
    ]
    sizes = np.array([(40.0, 90.0) if c is CategoryName.PEDESTRIAN else (160.0, 110.0) for c in categories])
    low, high = np.array([100.0, 400.0]), np.array([1180.0, 700.0])
    start = rng.uniform(low, high, (tracks, 2))
    velocity = rng.uniform(-60, 60, (tracks, 2))
    ids = np.arange(1, tracks + 1)
    motion = CameraMotion(config.kinematics)
    pairs = PairMeasurer(config.conflicts)
    alive = set(ids.tolist())
    step: list[float] = []
    messages: list[float] = []
    for frame in range(frames):
        t = frame / 10
        # Bouncing between the edges of the street (a triangle wave), so every track stays in view.
        span = high - low
        travelled = np.mod(start - low + velocity * t, 2 * span)
        points = low + np.where(travelled > span, 2 * span - travelled, travelled)
        jitter = rng.normal(0, 0.02, (tracks, 4)) * np.repeat(sizes, 2, axis=1)
        boxes = np.column_stack(
            [points[:, 0] - sizes[:, 0] / 2, points[:, 1] - sizes[:, 1], points[:, 0] + sizes[:, 0] / 2, points[:, 1]]
        )
        boxes = boxes + jitter
        began = time.thread_time()
        result = motion.update(ids, boxes, t, calibration)
        motion.keep(alive)
        pairs.measure(result, categories, boxes)
        middle = time.thread_time()
        for i in range(tracks):
            result.to_proto(i)
        ended = time.thread_time()
        if frame >= 20:  # past the first window: every track estimated
            step.append(middle - began)
            messages.append(ended - middle)
    return statistics.median(step) * 1000, statistics.median(messages) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tracks", type=int, default=50)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--image-only", action="store_true", help="no calibration: measure in the image plane")
    args = parser.parse_args(argv)
    if not (2 <= args.tracks <= 1000 and 30 <= args.frames <= 100_000 and 1 <= args.runs <= 100):
        parser.error("--tracks 2..1000, --frames 30..100000, --runs 1..100")
    runs = [run_once(args.tracks, args.frames, calibrated=not args.image_only, seed=r) for r in range(args.runs)]
    result = {
        "tracks": args.tracks,
        "calibrated": not args.image_only,
        "cpu_ms_per_frame": round(statistics.median(r[0] for r in runs), 4),
        "cpu_ms_per_frame_runs": [round(r[0], 4) for r in runs],
        "kinematics_messages_ms_per_frame": round(statistics.median(r[1] for r in runs), 4),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
