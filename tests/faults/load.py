"""The fault suite's steady load: synthetic DetectionEvents published straight to detection-results."""

from __future__ import annotations

import asyncio
import time

import cv2
import numpy as np
from confluent_kafka import KafkaError, Message, Producer

from riskwatch import events, synthetic
from riskwatch.v1 import events_pb2
from tests.faults.infra import CLIENT_LOG

GROUPS = ("g1", "g2")
# Distances cycling per scene: the simulator judges < 0.5 high, < 1.5 medium, else none (verdicts.py).
DISTANCES = (0.3, 1.0, 3.0, 0.4, 2.5)


def crop_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = np.full((96, 128, 3), 90, dtype=np.uint8) + rng.integers(0, 12, size=(96, 128, 3), dtype=np.uint8)
    cv2.rectangle(image, (10, 40), (60, 80), (40, 40, 200), thickness=-1)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 75])
    assert ok
    return bytes(encoded.tobytes())


def scene_of(frame_id: int) -> int:
    """The load's scene (members and distances) at a frame: in each 6 frames (3 s at 2 FPS) two quick changes, 0.5 s
    apart — under the shipped 1 s minimum interval, so one waits and is superseded — then three repeats (no_change)."""
    return frame_id // 6 * 3 + min(frame_id % 6, 2)


def detection_event(
    camera_id: str, camera_index: int, frame_id: int, crop: bytes, *, scene: int | None = None
) -> events_pb2.DetectionEvent:
    """A frame with two stable groups (g1, g2) whose member tracks and features change with `scene` (default: the
    frame), cycling through the risk levels."""
    scene = frame_id if scene is None else scene
    event = synthetic.detection_event(camera_id, frame_id, model="faults-synthetic")
    for g, group_id in enumerate(GROUPS):
        tracks = (100 * scene + 2 * g + 1, 100 * scene + 2 * g + 2)
        distance = DISTANCES[(scene + camera_index + g) % len(DISTANCES)]
        synthetic.add_pair(event, group_id, tracks, slot=g, distance=distance, density=0.5, crop=crop)
    return event


class Load:
    """Publishes DetectionEvents straight to detection-results: `cameras` cameras at `fps` each, idempotently."""

    def __init__(self, bootstrap: str, topic: str, cameras: list[str], fps: float) -> None:
        self.topic = topic
        self.cameras = cameras
        self.fps = fps
        self.event_ids: list[str] = []
        self.task_ids: list[str] = []
        self.delivered = 0
        self.errors: list[str] = []
        self._crop = crop_jpeg(len(cameras))
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 300000,
                "logger": CLIENT_LOG,
            }
        )

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.errors.append(str(err))
        else:
            self.delivered += 1

    async def run(self, duration: float) -> None:
        started = time.monotonic()
        frame = 0
        while time.monotonic() - started < duration:
            frame += 1
            for index, camera in enumerate(self.cameras):
                event = detection_event(camera, index, frame, self._crop, scene=scene_of(frame))
                self.event_ids.append(event.event_id)
                self.task_ids.extend(events.task_id(event.event_id, g.group_id) for g in event.groups)
                while True:
                    try:
                        self._producer.produce(
                            self.topic, key=camera, value=event.SerializeToString(), on_delivery=self._on_delivery
                        )
                        break
                    except BufferError:
                        self._producer.poll(0.05)
            self._producer.poll(0)
            await asyncio.sleep(max(0.0, started + frame / self.fps - time.monotonic()))

    def flush(self, timeout: float = 120.0) -> int:
        """Wait for every delivery; the number still undelivered."""
        return int(self._producer.flush(timeout))
