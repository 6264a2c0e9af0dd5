"""Cache key and channel names shared by the aggregator (writer) and the gateway (reader)."""

# Pub/sub channel carrying every CameraRiskState change (protobuf bytes).
RISK_STATE_CHANNEL = "risk-state"
# Pub/sub channel carrying each alert once it is appended to its camera's alert stream (AssessmentResult bytes).
ALERTS_CHANNEL = "alerts"
# Pub/sub channel carrying the key pool and consumer health snapshots (JSON) for the dashboard.
HEALTH_CHANNEL = "health"


def camera_state(camera_id: str) -> str:
    """Latest CameraRiskState of a camera (protobuf bytes, with a TTL)."""
    return f"state:{camera_id}"


def camera_alerts(camera_id: str) -> str:
    """Capped stream of AssessmentResults that raised or changed a camera's risk (protobuf bytes, with a TTL
    refreshed on each append)."""
    return f"alerts:{camera_id}"


def cameras_index() -> str:
    """Sorted set of the camera ids the aggregator has state for, scored by when their state was last written
    (epoch seconds); cameras idle longer than the state TTL are pruned. (Until issue 13 this was a JSON list
    under the key "cameras", which grew forever; that key is no longer read.)"""
    return "cameras-by-last-write"
