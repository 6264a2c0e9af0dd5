"""The detector's Prometheus metrics (labels stay bounded: camera ids, outcomes)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from riskwatch.telemetry.metrics import LATENCY_BUCKETS

DETECTIONS = Counter("detection", "Objects detected, per camera", ["camera_id"])
FRAMES = Counter(
    "detector_frames", "Frames received, by outcome (processed, invalid, dropped, failed)", ["camera_id", "outcome"]
)
FRAMES_DROPPED = Counter(
    "detector_frames_dropped", "Frames dropped because a newer frame of the same camera arrived first", ["camera_id"]
)
LATENCY = Histogram(
    "detector_latency_seconds",
    "Frame received to event built (decode, queue, inference, tracking, grouping)",
    buckets=LATENCY_BUCKETS,
)
INFERENCE = Histogram("detector_inference_seconds", "One batch through the model", buckets=LATENCY_BUCKETS)
BATCH_SIZE = Histogram(
    "detector_batch_size", "Frames per inference batch", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
)
GROUPS = Counter("detector_groups", "Groups emitted, per camera", ["camera_id"])
CONFLICTS = Counter(
    "detector_conflicts",
    "Groups emitted with a conflict (their worst pair), per camera and kind",
    ["camera_id", "kind"],
)
GROUP_MIN_TTC = Histogram(
    "detector_group_min_ttc_seconds",
    "Smallest time to collision of each group that has one",
    buckets=(0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5),
)
MOTION = Histogram(
    "detector_motion_seconds",
    "Kinematics and conflicts of one frame (fit every track, measure the pairs)",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025),
)
CALIBRATION_INVALID = Counter(
    "detector_calibration_invalid",
    "Frames whose camera calibration could not be fitted (measured in the image only)",
    ["camera_id"],
)
