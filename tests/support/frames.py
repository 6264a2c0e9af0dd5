"""Real frames from the sample video, JPEG-encoded as a camera would send them."""

from __future__ import annotations

from pathlib import Path

import cv2

from riskwatch import events
from riskwatch.v1 import detector_pb2


def video_frames(path: Path, count: int, camera_id: str, every: int = 5, start: int = 0) -> list[detector_pb2.Frame]:
    """`count` frames, one every `every` source frames (10 fps video, so every=5 is 2 FPS)."""
    capture = cv2.VideoCapture(str(path))
    frames: list[detector_pb2.Frame] = []
    index = 0
    try:
        while len(frames) < count:
            ok, image = capture.read()
            if not ok:
                raise RuntimeError(f"{path} ended after {index} frames")
            if index >= start and (index - start) % every == 0:
                ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
                assert ok
                frames.append(
                    detector_pb2.Frame(
                        camera_id=camera_id,
                        frame_id=len(frames) + 1,
                        capture_time=events.timestamp(),
                        image=jpeg.tobytes(),
                    )
                )
            index += 1
    finally:
        capture.release()
    return frames
