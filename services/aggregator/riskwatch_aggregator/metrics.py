"""The aggregator's Prometheus metrics (labels stay bounded: camera ids, ignore reasons)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

STATE_CHANGES = Counter("riskwatch_risk_state_changes_total", "Camera risk state changes", ["camera_id"])
RESULTS_IGNORED = Counter("riskwatch_results_ignored_total", "Results that changed nothing", ["reason"])
CAMERA_RISK = Gauge("riskwatch_camera_risk_level", "Camera's maximum risk level (0 none .. 3 high)", ["camera_id"])
CACHE_BACKLOG = Gauge("riskwatch_cache_backlog", "Cameras whose state waits to be written to the cache")
CACHE_UP = Gauge("riskwatch_aggregator_cache_up", "1 when the last cache write succeeded, else 0")
