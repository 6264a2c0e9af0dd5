"""The aggregator's Prometheus metrics (labels stay bounded: camera ids, ignore reasons, provisional resolutions)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from riskwatch.telemetry.metrics import LATENCY_BUCKETS

STATE_CHANGES = Counter("riskwatch_risk_state_changes_total", "Camera risk state changes", ["camera_id"])
RESULTS_IGNORED = Counter("riskwatch_results_ignored_total", "Results that changed nothing", ["reason"])
CAMERA_RISK = Gauge("riskwatch_camera_risk_level", "Camera's maximum risk level (0 none .. 3 high)", ["camera_id"])
CACHE_BACKLOG = Gauge("riskwatch_cache_backlog", "Cameras whose state waits to be written to the cache")
CACHE_UP = Gauge("riskwatch_aggregator_cache_up", "1 when the last cache write succeeded, else 0")
PROVISIONAL_RESOLUTIONS = Counter(
    "riskwatch_provisional_resolutions_total",
    "Provisional (measured) alerts closed: confirmed, upgraded or dismissed by an LLM verdict, or expired",
    ["camera_id", "resolution"],
)
PROVISIONAL_RESOLUTION_SECONDS = Histogram(
    "riskwatch_provisional_resolution_seconds",
    "Capture of the frame a provisional alert was measured on to its resolution",
    ["resolution"],
    buckets=LATENCY_BUCKETS,
)
