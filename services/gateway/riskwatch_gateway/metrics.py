"""Prometheus metrics of the gateway; labels stay bounded (camera ids, reasons, outcomes)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from riskwatch.telemetry.metrics import LATENCY_BUCKETS

WS_DROPPED = Counter(
    "riskwatch_ws_dropped_total",
    "Messages a WebSocket client did not get: queue_full (oldest detections dropped), superseded (an older "
    "status replaced by a newer one), client_too_slow (backlog of risk changes/alerts too long: disconnected)",
    ["reason"],
)
GRPC_WATCH_DROPPED = Counter(
    "riskwatch_grpc_watch_dropped_total",
    "Messages a WatchCamera stream did not get (reasons as for WebSocket)",
    ["reason"],
)
WS_CLIENTS = Gauge("riskwatch_ws_clients", "Connected WebSocket clients")
GRPC_WATCHERS = Gauge("riskwatch_grpc_watchers", "Open WatchCamera streams")
FRAMES = Counter(
    "riskwatch_gateway_frames_total",
    "Frames per camera by outcome: captured, detected, dropped_busy (a newer frame replaced it while the "
    "detector was busy), invalid, detector_error",
    ["camera", "outcome"],
)
DETECT_LATENCY = Histogram(
    "riskwatch_gateway_detect_seconds",
    "Time to get a frame's detections from the detector",
    buckets=LATENCY_BUCKETS,
)
CAMERA_FPS = Gauge("riskwatch_camera_fps", "Measured frames per second sent to the detector", ["camera"])
CAMERA_ONLINE = Gauge("riskwatch_camera_online", "1 when the camera delivers frames", ["camera"])
SOURCE_RECONNECTS = Counter("riskwatch_camera_reconnects_total", "Source reconnect attempts", ["camera"])
# What a removed camera's labels are removed from.
PER_CAMERA = (FRAMES, CAMERA_FPS, CAMERA_ONLINE, SOURCE_RECONNECTS)
