"""Cameras' ground-plane calibrations as the gateway hands them to the detector: the one set through the API (kept
in `<state_dir>/calibrations.json`, so a restart keeps it) beats config/cameras.yaml's until it is deleted.

Each camera's calibration has a version that increases with every change (a PUT, a DELETE that drops an API
calibration, or a configured calibration whose points differ from the last one handed out), across restarts:
the detector refits only when the version it is sent changes. Changes are rare (an operator's), so the file is
rewritten whole, synchronously, on each.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from riskwatch.domain import Calibration, CalibrationError
from riskwatch.errors import ConfigError
from riskwatch.v1 import gateway_pb2

log = logging.getLogger(__name__)

STATE_FILE = "calibrations.json"
_FORMAT = 1
Points = tuple[tuple[float, float], ...]
# A calibration's image points and ground points: what tells two calibrations apart.
PointSets = tuple[Points, Points]


class CalibrationOrigin(StrEnum):
    """Where a camera's calibration comes from (gateway.proto CalibrationOrigin)."""

    NONE = "none"
    CONFIG = "config"
    API = "api"

    def to_proto(self) -> gateway_pb2.CalibrationOrigin.ValueType:
        return gateway_pb2.CalibrationOrigin.Value(f"CALIBRATION_ORIGIN_{self.name}")


@dataclass(frozen=True, slots=True)
class CameraCalibration:
    """What a camera has now: its calibration (None = not calibrated) and where that comes from."""

    camera_id: str
    calibration: Calibration | None
    origin: CalibrationOrigin

    def to_proto(self) -> gateway_pb2.CameraCalibration:
        message = gateway_pb2.CameraCalibration(camera_id=self.camera_id, origin=self.origin.to_proto())
        if self.calibration is not None:
            message.calibration.CopyFrom(self.calibration.to_proto())
        return message

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (REST): `calibrated`, `origin` and the calibration's own fields (null when none)."""
        return {
            "camera_id": self.camera_id,
            "calibrated": self.calibration is not None,
            "origin": self.origin.value,
            "calibration": self.calibration.to_dict() if self.calibration is not None else None,
        }


@dataclass(frozen=True, slots=True)
class _Entry:
    """One camera's persisted record: the last version handed out, the points it had, and the API calibration."""

    version: int = 0
    issued: PointSets | None = None
    api: Calibration | None = None


def _points(calibration: Calibration | None) -> PointSets | None:
    return None if calibration is None else (calibration.image_points, calibration.ground_points)


class CalibrationStore:
    """Per-camera calibrations, persisted (atomically) on every change under `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / STATE_FILE
        self._entries: dict[str, _Entry] = _load(self._path)

    def resolve(self, camera_id: str, configured: Calibration | None) -> CameraCalibration:
        """The camera's calibration given its configured one: the API's if set, else the configured one, at a
        version bumped (and persisted) when its points differ from those last handed out for the camera."""
        entry = self._entries.get(camera_id, _Entry())
        chosen, origin = (
            (entry.api, CalibrationOrigin.API)
            if entry.api is not None
            else (configured, CalibrationOrigin.CONFIG if configured is not None else CalibrationOrigin.NONE)
        )
        if _points(chosen) != entry.issued:
            entry = replace(entry, version=entry.version + 1, issued=_points(chosen))
            self._save(camera_id, entry)
        if chosen is not None:
            chosen = replace(chosen, version=entry.version)
        return CameraCalibration(camera_id, chosen, origin)

    def put(self, camera_id: str, calibration: Calibration, configured: Calibration | None) -> CameraCalibration:
        """Store an API calibration (a new version even when the points are the same: every PUT is a change)."""
        version = self._entries.get(camera_id, _Entry()).version + 1
        self._save(camera_id, _Entry(version, _points(calibration), calibration))
        return self.resolve(camera_id, configured)

    def delete(self, camera_id: str, configured: Calibration | None) -> CameraCalibration:
        """Drop the API calibration (if any): the camera falls back to its configured one, at a new version.
        Without an API calibration nothing changes."""
        entry = self._entries.get(camera_id)
        if entry is not None and entry.api is not None:
            self._save(camera_id, _Entry(entry.version + 1, _points(configured), None))
        return self.resolve(camera_id, configured)

    def _save(self, camera_id: str, entry: _Entry) -> None:
        entries = {**self._entries, camera_id: entry}
        _write_atomically(self._path, _dump(entries))
        self._entries = entries


def _dump(entries: dict[str, _Entry]) -> str:
    cameras: dict[str, Any] = {}
    for camera_id, entry in sorted(entries.items()):
        record: dict[str, Any] = {"version": entry.version}
        if entry.issued is not None:
            record["issued"] = {"image_points": entry.issued[0], "ground_points": entry.issued[1]}
        if entry.api is not None:
            record["api"] = {"image_points": entry.api.image_points, "ground_points": entry.api.ground_points}
        cameras[camera_id] = record
    return json.dumps({"format": _FORMAT, "cameras": cameras}, indent=1)


def _load(path: Path) -> dict[str, _Entry]:
    """The persisted entries; none when the file does not exist yet. A file that cannot be read back stops the
    gateway (ConfigError naming it): silently starting without an operator's calibrations would hide the loss."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the gateway's calibrations: {exc}") from None
    entries: dict[str, _Entry] = {}
    try:
        if raw.get("format") != _FORMAT:
            raise ValueError(f"unknown format {raw.get('format')!r}")
        for camera_id, record in raw["cameras"].items():
            issued = record.get("issued")
            api = record.get("api")
            entries[camera_id] = _Entry(
                version=int(record["version"]),
                issued=(_pairs(issued["image_points"]), _pairs(issued["ground_points"])) if issued else None,
                api=Calibration.fit(api["image_points"], api["ground_points"]) if api else None,
            )
    except (AttributeError, KeyError, TypeError, ValueError, CalibrationError) as exc:
        raise ConfigError(f"{path}: not a calibrations file the gateway wrote: {exc}") from None
    log.info("calibrations of %d camera(s) loaded from %s", len(entries), path)
    return entries


def _pairs(raw: list[list[float]]) -> tuple[tuple[float, float], ...]:
    return tuple((float(x), float(y)) for x, y in raw)


def _write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file in the same directory, flush it to disk, then rename it over the old one: a
    crash leaves either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
