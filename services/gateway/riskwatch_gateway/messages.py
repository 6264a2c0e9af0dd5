"""JSON forms of the protobuf messages, as the WebSocket protocol and REST API send them (PROTOCOL.md)."""

from __future__ import annotations

import base64
import re
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from riskwatch.domain import FailureKind, GroupFeatures, RiskLevel
from riskwatch.events import seconds
from riskwatch.v1 import events_pb2, gateway_pb2

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# Query parameters whose values are secrets: any name with one of these in it (password, api_key, X-Auth-Token...).
_SECRET_PARAM = re.compile(r"([?&;][^=&;#]*(?:pass|pwd|token|key|secret|auth|sig|cred)[^=&;#]*=)[^&;#]*", re.I)


def redact_source(source: str) -> str:
    """A source URL without its userinfo (up to the last "@": a password may hold "@" itself) and with the values of
    secret-like query parameters replaced, so credentials never reach clients or logs."""
    scheme = _SCHEME.match(source)
    if scheme is None:
        return source
    rest = source[scheme.end() :]
    at = rest.rfind("@")
    if at >= 0:
        rest = "***" + rest[at:]
    return scheme.group(0) + _SECRET_PARAM.sub(r"\1***", rest)


def _time(ts: Timestamp) -> float | None:
    """Epoch seconds, or None for an unset timestamp."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return round(seconds(ts), 6)


def _box(box: events_pb2.BoundingBox) -> list[float]:
    return [round(box.x1, 1), round(box.y1, 1), round(box.x2, 1), round(box.y2, 1)]


def category_name(category: int) -> str:
    return events_pb2.Category.Name(category).removeprefix("CATEGORY_").lower()  # type: ignore[arg-type]


def detections_json(event: events_pb2.DetectionEvent, frame_jpeg: bytes | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "detections",
        "camera_id": event.camera_id,
        "frame_id": event.frame_id,
        "event_id": event.event_id,
        "capture_time": _time(event.capture_time),
        "image_width": event.image_width,
        "image_height": event.image_height,
        "detector_latency_ms": round(event.detector_latency_ms, 2),
        "model": event.model,
        "detections": [
            {
                "track_id": d.track_id,
                "class_name": d.class_name,
                "category": category_name(d.category),
                "confidence": round(d.confidence, 3),
                "box": _box(d.box),
            }
            for d in event.detections
        ],
        "groups": [
            {
                "group_id": g.group_id,
                "member_track_ids": list(g.member_track_ids),
                "box": _box(g.box),
                "features": GroupFeatures.from_proto(g.features).to_dict(digits=4, omit_unset=True),
            }
            for g in event.groups
        ],
    }
    if frame_jpeg is not None:
        out["frame_jpeg_b64"] = base64.b64encode(frame_jpeg).decode("ascii")
    return out


def verdict_json(verdict: events_pb2.Verdict) -> dict[str, Any]:
    return {
        "risk_level": RiskLevel.from_proto(verdict.risk_level).protocol_name,
        "risk_types": list(verdict.risk_types),
        "description": verdict.description,
        "confidence": round(verdict.confidence, 3),
        "involved_track_ids": list(verdict.involved_track_ids),
    }


def failure_json(failure: events_pb2.Failure) -> dict[str, Any]:
    return {"kind": FailureKind.from_proto(failure.kind).value, "message": failure.message}


def _group_json(group: events_pb2.GroupRisk) -> dict[str, Any]:
    out: dict[str, Any] = {
        "group_id": group.group_id,
        **verdict_json(group.verdict),
        "member_track_ids": list(group.member_track_ids),
        "since": _time(group.since),
        "capture_time": _time(group.capture_time),
        "task_id": group.task_id,
    }
    if group.HasField("failure"):
        out["failure"] = failure_json(group.failure)
    return out


def risk_state_json(state: events_pb2.CameraRiskState) -> dict[str, Any]:
    return {
        "type": "risk_state",
        "camera_id": state.camera_id,
        "version": state.version,
        "max_level": RiskLevel.from_proto(state.max_level).protocol_name,
        "updated_time": _time(state.updated_time),
        "last_task_id": state.last_task_id,
        "groups": [_group_json(g) for g in state.groups],
    }


def alert_json(result: events_pb2.AssessmentResult, replay: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "alert",
        "camera_id": result.camera_id,
        "task_id": result.task_id,
        "event_id": result.event_id,
        "frame_id": result.frame_id,
        "group_id": result.group_id,
        "member_track_ids": list(result.member_track_ids),
        "capture_time": _time(result.capture_time),
        "completed_time": _time(result.completed_time),
        "model": result.model,
        "key_id": result.key_id,
        "llm_latency_ms": round(result.llm_latency_ms, 1),
        "attempts": result.attempts,
        "replay": replay,
    }
    if result.HasField("verdict"):
        out.update(verdict_json(result.verdict))
    elif result.HasField("failure"):
        out["failure"] = failure_json(result.failure)
    return out


def status_name(status: int) -> str:
    return gateway_pb2.CameraStatus.Name(status).removeprefix("CAMERA_STATUS_").lower()  # type: ignore[arg-type]


def camera_json(info: gateway_pb2.CameraInfo, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "camera_id": info.camera.camera_id,
        "source": redact_source(info.camera.source),
        "fps": info.camera.fps,
        "loop": info.camera.loop,
        "status": status_name(info.status),
        "measured_fps": round(info.measured_fps, 2),
    }
    if extra:
        out.update(extra)
    return out
