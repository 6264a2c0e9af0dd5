"""A scripted detector backend for scenarios: it returns the rendered boxes of whichever frame it is shown.

Each frame the bench sends is a lossless PNG of the camera's size whose first pixels carry a key (a magic word and
a 32-bit number); `ScenarioBackend.infer` reads the key back and returns the boxes registered under it. Everything
after the backend (ByteTrack, kinematics, conflicts, groups, and the stages after the detector) is the real system.
An image without a key (the detector's warm-up frame) has no detections.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from riskwatch.imaging import Image
from riskwatch_detector.backends import RawDetections
from tests.scenarios.world import CLASS_IDS, RenderedFrame

_MAGIC = (0x52, 0x57, 0x53)  # "RWS" in the first pixel
SCORE = 0.9  # above ByteTrack's high-confidence threshold: every scripted box is a sure detection


def frame_png(key: int, width: int, height: int) -> bytes:
    """A grey frame whose first three pixels carry `key` (0 ≤ key < 2**32) behind a magic word."""
    if not 0 <= key < 2**32:
        raise ValueError(f"frame key out of range: {key}")
    image = np.full((height, width, 3), 90, np.uint8)
    image[0, 0] = _MAGIC
    image[0, 1] = ((key >> 24) & 0xFF, (key >> 16) & 0xFF, (key >> 8) & 0xFF)
    image[0, 2] = (key & 0xFF, 0, 0)
    ok, buffer = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("PNG encoding failed")
    return bytes(buffer.tobytes())


def frame_key(image: Image) -> int | None:
    if image.shape[0] < 1 or image.shape[1] < 3 or tuple(int(v) for v in image[0, 0]) != _MAGIC:
        return None
    a, b, c = (int(v) for v in image[0, 1])
    return (a << 24) | (b << 16) | (c << 8) | int(image[0, 2, 0])


class ScenarioBackend:
    """Implements riskwatch_detector.backends.Backend over registered frames (thread-safe registration)."""

    def __init__(self, class_names: Mapping[int, str] | None = None) -> None:
        """`class_names`: the model's, when replaying a real model's cached output (default: the scenarios')."""
        self._class_names = dict(class_names or {class_id: name for name, class_id in CLASS_IDS.items()})
        self._frames: dict[int, RawDetections] = {}
        self._lock = threading.Lock()
        self.unknown = 0  # keyed images with no registered frame (a bench bug if ever non-zero)

    @property
    def class_names(self) -> Mapping[int, str]:
        return self._class_names

    @property
    def max_batch_size(self) -> int | None:
        return None

    def register(self, frame: RenderedFrame) -> int:
        """Remember `frame`'s boxes; the key to write into its image (`frame_png`)."""
        return self.register_raw(
            RawDetections(
                frame.boxes.astype(np.float32).reshape(-1, 4),
                np.full(len(frame.users), SCORE, np.float32),
                frame.class_ids.astype(np.int64),
            )
        )

    def register_raw(self, raw: RawDetections) -> int:
        """Remember a model's output for one frame (the bench replays cached real detections this way)."""
        with self._lock:
            key = len(self._frames)
            self._frames[key] = raw
        return key

    def infer(self, images: Sequence[Image]) -> list[RawDetections]:
        out = []
        for image in images:
            key = frame_key(image)
            with self._lock:
                raw = self._frames.get(key) if key is not None else None
            if raw is None:
                self.unknown += key is not None
                raw = RawDetections.empty()
            out.append(raw)
        return out

    def close(self) -> None:
        return None
