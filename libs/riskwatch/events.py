"""Helpers around the protobuf events: ids, timestamps and decoding with clear errors."""

from __future__ import annotations

import time
from typing import TypeVar

from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from riskwatch.errors import DecodeError

M = TypeVar("M", bound=Message)


def timestamp(seconds: float | None = None) -> Timestamp:
    """A protobuf Timestamp for wall-clock `seconds` (now when omitted)."""
    ts = Timestamp()
    ts.FromNanoseconds(int((time.time() if seconds is None else seconds) * 1e9))
    return ts


def seconds(ts: Timestamp) -> float:
    """Wall-clock seconds of a protobuf Timestamp."""
    return ts.seconds + ts.nanos / 1e9


def event_id(camera_id: str, frame_id: int) -> str:
    return f"{camera_id}:{frame_id}"


def task_id(event_id_: str, group_id: str) -> str:
    return f"{event_id_}/{group_id}"


def decode(message_type: type[M], data: bytes, *, what: str, required: tuple[str, ...] = ()) -> M:
    """Parse `data` as `message_type`, raising DecodeError that says what could not be decoded and why; each
    field named in `required` must be set (non-empty)."""
    message = message_type()
    try:
        message.ParseFromString(data)
    except (ProtobufDecodeError, ValueError, TypeError) as exc:
        raise DecodeError(f"{what}: not a valid {message_type.__name__} ({exc})") from exc
    missing = [name for name in required if not getattr(message, name)]
    if missing:
        raise DecodeError(f"{what}: {message_type.__name__} without {' or '.join(missing)}")
    return message
