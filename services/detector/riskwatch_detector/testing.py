"""A lightweight real Backend for tests of the detector and of the stages after it: scripted boxes, no model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from riskwatch.imaging import Image
from riskwatch_detector.backends import RawDetections

# (x1, y1, x2, y2, class id) in pixels of the frame.
ScriptedBox = tuple[float, float, float, float, int]


class ScriptedBackend:
    """Reads the scene number from the blue value of a frame's top-left pixel and returns that scene's boxes.

    Frames must be lossless (PNG, see `scene_png`). Class names are COCO-like: 0 person, 1 car, 2 kite.
    """

    def __init__(self, scenes: Mapping[int, Sequence[ScriptedBox]]) -> None:
        self.scenes = dict(scenes)
        self.batch_sizes: list[int] = []

    @property
    def class_names(self) -> Mapping[int, str]:
        return {0: "person", 1: "car", 2: "kite"}

    @property
    def max_batch_size(self) -> int | None:
        return None

    def infer(self, images: Sequence[Image]) -> list[RawDetections]:
        self.batch_sizes.append(len(images))
        out = []
        for image in images:
            rows = self.scenes.get(int(image[0, 0, 0]), [])
            boxes = np.array([r[:4] for r in rows], np.float32).reshape(-1, 4)
            scores = np.full(len(rows), 0.9, np.float32)
            out.append(RawDetections(boxes, scores, np.array([r[4] for r in rows], np.int64)))
        return out

    def close(self) -> None:
        return None


def scene_png(scene: int, width: int = 800, height: int = 600) -> bytes:
    """A lossless frame that ScriptedBackend reads as `scene` (0–255)."""
    image = np.full((height, width, 3), 90, np.uint8)
    cv2.rectangle(image, (100, 100), (300, 400), (30, 160, 200), -1)
    image[0, 0] = (scene, 0, 0)
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    return bytes(buffer.tobytes())
