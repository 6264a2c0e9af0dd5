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
