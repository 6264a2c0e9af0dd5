"""A camera's recent risk history for the dashboard's timeline, rebuilt from its alert stream and current state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from riskwatch.domain import RiskLevel
from riskwatch.v1 import events_pb2
from riskwatch_gateway import messages

# The most alerts one history request reads (the aggregator keeps up to redis.alert_history_len per camera).
MAX_HISTORY = 500


def risk_history(
    alerts: Sequence[events_pb2.AssessmentResult], state: events_pb2.CameraRiskState
) -> list[dict[str, Any]]:
    """The camera's level after each alert, oldest first, ending with its current state.

    Every alert raised or changed one group's level, so the camera's level (the highest of its groups) is replayed
    from them; failed assessments change no level. Levels that decayed without an alert show up at the next one, or
    at the current state (the last point).
    """
    groups: dict[str, RiskLevel] = {}
    points: list[dict[str, Any]] = []
    # The stream is in the order the aggregator appended (completion order).
    for alert in alerts:
        if not alert.HasField("verdict"):
            continue
        groups[alert.group_id] = RiskLevel.from_proto(alert.verdict.risk_level)
        shown = messages.alert_json(alert)
        time = shown["completed_time"] or shown["capture_time"]
        if time is not None:
            points.append({"time": time, "level": max(groups.values()).protocol_name})
    if state.version:
        current = messages.risk_state_json(state)
        points.append({"time": current["updated_time"], "level": current["max_level"]})
    return points
