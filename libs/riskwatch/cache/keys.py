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
    """Capped stream of AssessmentResults that raised or changed a camera's risk (protobuf bytes)."""
    return f"alerts:{camera_id}"


def cameras_index() -> str:
    """JSON list of camera ids the aggregator has state for."""
    return "cameras"
