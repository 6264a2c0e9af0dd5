"""Camera ids: the one pattern (and length) a camera id from outside must match, as a check and a pydantic type."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

from riskwatch.errors import InvalidRequest

MAX_CAMERA_ID_CHARS = 64
# Safe as a Kafka key, a Redis key part, a metric label and a URL path segment.
CAMERA_ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{MAX_CAMERA_ID_CHARS - 1}}}$"
CAMERA_ID_RULE = f"letters, digits, '_', '.', ':', '-', starting with a letter or digit; at most {MAX_CAMERA_ID_CHARS}"
_CAMERA_ID = re.compile(CAMERA_ID_PATTERN)

CameraId = Annotated[str, StringConstraints(pattern=CAMERA_ID_PATTERN)]
"""A camera id field of a pydantic model (configuration, client requests)."""


def is_valid_camera_id(camera_id: str) -> bool:
    # fullmatch: `$` alone would let one trailing newline through
    return _CAMERA_ID.fullmatch(camera_id) is not None


def loggable_camera_id(camera_id: str) -> str:
    """`camera_id` if it is a valid camera id, else "": a client's raw id goes into no log line or answer."""
    return camera_id if is_valid_camera_id(camera_id) else ""


def check_camera_id(camera_id: str) -> str:
    """`camera_id` if it is a valid camera id, else InvalidRequest saying what a camera id may hold."""
    if not is_valid_camera_id(camera_id):
        shown = camera_id if len(camera_id) <= MAX_CAMERA_ID_CHARS else camera_id[:MAX_CAMERA_ID_CHARS] + "…"
        raise InvalidRequest(f"invalid camera id {shown!r}: {CAMERA_ID_RULE}")
    return camera_id
