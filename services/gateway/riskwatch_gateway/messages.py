"""JSON forms of the protobuf messages, as the WebSocket protocol and REST API send them (PROTOCOL.md)."""

from __future__ import annotations

import base64
import re
from typing import Any, Literal

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


def _vector(vector: events_pb2.Vector2, digits: int) -> list[float]:
    return [round(vector.x, digits), round(vector.y, digits)]


def kinematics_json(kinematics: events_pb2.Kinematics) -> dict[str, Any] | None:
    """A track's motion; None while it is not estimated (too little history). Pixels to 0.1 px, metres to 1 cm,
    speeds to 0.01, headings to 0.1°; the ground-plane (metre) fields only when the camera is calibrated."""
    if not kinematics.estimated:
        return None
    out: dict[str, Any] = {
        "samples": kinematics.samples,
        "history_s": round(kinematics.history_s, 2),
        "ground_point_px": _vector(kinematics.ground_point_px, 1),
        "velocity_px_s": _vector(kinematics.velocity_px_s, 1),
        "acceleration_px_s2": _vector(kinematics.acceleration_px_s2, 1),
        "speed_px_s": round(kinematics.speed_px_s, 1),
        "speed_box_s": round(kinematics.speed_box_s, 2),
        "heading_deg": round(kinematics.heading_deg, 1),
    }
    if kinematics.HasField("speed_m_s"):
        out.update(
            ground_point_m=_vector(kinematics.ground_point_m, 2),
            velocity_m_s=_vector(kinematics.velocity_m_s, 2),
            acceleration_m_s2=_vector(kinematics.acceleration_m_s2, 2),
            speed_m_s=round(kinematics.speed_m_s, 2),
        )
        if kinematics.HasField("ground_heading_deg"):
            out["ground_heading_deg"] = round(kinematics.ground_heading_deg, 1)
    return out


def conflict_kind_name(kind: int) -> str:
    return events_pb2.ConflictKind.Name(kind).removeprefix("CONFLICT_KIND_").lower()  # type: ignore[arg-type]


# The optional measures of a Conflict, with the digits each is rounded to.
_CONFLICT_MEASURES: tuple[tuple[Literal["ttc_s", "pet_s", "drac_m_s2"], int], ...] = (
    ("ttc_s", 3),
    ("pet_s", 3),
    ("drac_m_s2", 2),
)


def conflict_json(conflict: events_pb2.Conflict) -> dict[str, Any]:
    """A pair's surrogate safety measures: the seconds to 1 ms, gaps and speeds to 0.01 (m and m/s when
    `calibrated`, else box sizes); ttc_s, pet_s and drac_m_s2 only when set."""
    out: dict[str, Any] = {
        "track_a": conflict.track_a,
        "track_b": conflict.track_b,
        "category_a": category_name(conflict.category_a),
        "category_b": category_name(conflict.category_b),
        "kind": conflict_kind_name(conflict.kind),
        "calibrated": conflict.calibrated,
    }
    for name, digits in _CONFLICT_MEASURES:
        if conflict.HasField(name):
            out[name] = round(getattr(conflict, name), digits)
    out["distance"] = round(conflict.distance, 2)
    out["closing_speed"] = round(conflict.closing_speed, 2)
    return out


def _detection_json(detection: events_pb2.Detection) -> dict[str, Any]:
    out: dict[str, Any] = {
        "track_id": detection.track_id,
        "class_name": detection.class_name,
        "category": category_name(detection.category),
        "confidence": round(detection.confidence, 3),
        "box": _box(detection.box),
    }
    kinematics = kinematics_json(detection.kinematics)
    if kinematics is not None:
        out["kinematics"] = kinematics
    return out


def _detected_group_json(group: events_pb2.Group) -> dict[str, Any]:
    out: dict[str, Any] = {
        "group_id": group.group_id,
        "member_track_ids": list(group.member_track_ids),
        "box": _box(group.box),
        "features": GroupFeatures.from_proto(group.features).to_dict(digits=4, omit_unset=True),
    }
    if group.HasField("conflict"):
        out["conflict"] = conflict_json(group.conflict)
    return out


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
        "detections": [_detection_json(d) for d in event.detections],
        "groups": [_detected_group_json(g) for g in event.groups],
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


def measured_json(measured: events_pb2.MeasuredDanger) -> dict[str, Any]:
    """Danger the detector measured, before any LLM verdict: its level, risk types, description and conflict."""
    out: dict[str, Any] = {
        "risk_level": RiskLevel.from_proto(measured.risk_level).protocol_name,
        "risk_types": list(measured.risk_types),
        "description": measured.description,
    }
    if measured.HasField("conflict"):
        out["conflict"] = conflict_json(measured.conflict)
    return out


def resolution_name(resolution: int) -> str:
    name = events_pb2.ProvisionalResolution.Name(resolution)  # type: ignore[arg-type]
    return name.removeprefix("PROVISIONAL_RESOLUTION_").lower()


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
    if group.HasField("provisional"):
        out["provisional"] = measured_json(group.provisional)
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
        "provisional": result.HasField("measured"),
    }
    if result.HasField("verdict"):
        out.update(verdict_json(result.verdict))
    elif result.HasField("failure"):
        out["failure"] = failure_json(result.failure)
    elif result.HasField("measured"):
        out.update(measured_json(result.measured))
    if result.provisional_resolution != events_pb2.PROVISIONAL_RESOLUTION_UNSPECIFIED:
        out["provisional_resolution"] = resolution_name(result.provisional_resolution)
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
        "calibrated": info.calibrated,
    }
    if extra:
        out.update(extra)
    return out
