"""Metrics every stage shares, and the Prometheus endpoint. Labels stay bounded: never a frame, task or key."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

from riskwatch.errors import PortInUse

log = logging.getLogger(__name__)


def forget_camera(camera_id: str, *metrics: MetricWrapperBase, label: str = "camera_id") -> None:
    """Remove a camera's label children from `metrics` (it was removed or went idle): per-camera labels would
    otherwise grow with every camera id ever seen."""
    for metric in metrics:
        metric.remove_by_labels({label: camera_id})


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)

KAFKA_CONSUMER_LAG = Gauge(
    "kafka_consumer_lag",
    "Messages between a consumer group's position and the end of the partition",
    ["group", "topic", "partition"],
)
KAFKA_CONSUMER_LAG_SECONDS = Gauge(
    "kafka_consumer_lag_seconds",
    "Estimated age of the oldest record a consumer group has not processed yet",
    ["group", "topic", "partition"],
)
STAGE_RECORDS = Counter("riskwatch_stage_records_total", "Records handled by a stage", ["stage", "outcome"])
DEAD_LETTERS = Counter("riskwatch_dead_letter_total", "Records sent to a dead-letter topic", ["source_topic"])
END_TO_END_LATENCY = Histogram(
    "riskwatch_end_to_end_latency_seconds",
    "Frame capture to the point named by `stage`",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics on host:port (port 0 disables it); PortInUse when it cannot bind."""
    if not port:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        raise PortInUse("metrics", host, port, "set ALGO_METRICS_PORT (or metrics_port) to move it") from exc
    log.info("Prometheus metrics on %s:%d/metrics", host, port)
