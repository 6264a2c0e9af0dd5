"""Per-camera multi-object tracking with ByteTrack (roboflow `trackers`), ids aligned with the detections."""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
import supervision as sv
from trackers import ByteTrackTracker

from riskwatch_detector.backends import RawDetections
from riskwatch_detector.config import TrackingConfig

TrackIds = npt.NDArray[np.int64]


class CameraTracker:
    """ByteTrack for one camera. Track ids start at 1; 0 means "not confirmed yet" (as in the proto)."""

    def __init__(self, config: TrackingConfig) -> None:
        self._tracker = ByteTrackTracker(
            # The library counts the buffer in 30 FPS frames.
            lost_track_buffer=max(1, round(config.lost_track_s * 30)),
            frame_rate=config.frame_rate,
            track_activation_threshold=config.track_activation_threshold,
            minimum_consecutive_frames=config.minimum_consecutive_frames,
            minimum_iou_threshold=config.minimum_iou,
            high_conf_det_threshold=config.high_conf_threshold,
        )

    def update(self, detections: RawDetections, capture_time_s: float | None) -> TrackIds:
        """Track ids for `detections`, in their order. `capture_time_s` drives the motion model when known."""
        ids = np.zeros(len(detections), np.int64)
        sv_detections = sv.Detections(
            xyxy=detections.boxes.astype(np.float32).reshape(-1, 4),
            confidence=detections.scores.astype(np.float32),
            class_id=detections.class_ids.astype(int),
            data={"index": np.arange(len(detections))},
        )
        with warnings.catch_warnings():
            # An out-of-order capture time makes the library skip the update with a warning; ids stay 0.
            warnings.simplefilter("ignore", UserWarning)
            tracked = self._tracker.update(sv_detections, timestamp=capture_time_s)
        if len(tracked) and tracked.tracker_id is not None:
            index = np.asarray(tracked.data["index"], np.int64)
            track_ids = np.asarray(tracked.tracker_id, np.int64)
            # The library numbers from 0 and uses -1 for "unconfirmed".
            ids[index] = np.where(track_ids >= 0, track_ids + 1, 0)
        return ids

    def live_ids(self) -> set[int]:
        """Ids (as `update` numbers them) of the confirmed tracks ByteTrack still holds, lost ones included."""
        return {t.tracker_id + 1 for t in self._tracker.tracks if t.tracker_id >= 0}
