"""Synthetic DetectionEvents, to exercise a pipeline without cameras or a detector.

Used by `scripts/test_streaming_pipeline.py` and the fault suite. Each group is a vehicle and a pedestrian side by
side, with the features the task generator and the LLM read.
"""

from __future__ import annotations

from riskwatch import events
from riskwatch.domain import GroupFeatures
from riskwatch.v1 import events_pb2

IMAGE_WIDTH, IMAGE_HEIGHT = 1280, 720


def detection_event(camera_id: str, frame_id: int, *, model: str) -> events_pb2.DetectionEvent:
    """A frame's event captured and detected now, without detections yet."""
    now = events.timestamp()
    return events_pb2.DetectionEvent(
        event_id=events.event_id(camera_id, frame_id),
        camera_id=camera_id,
        frame_id=frame_id,
        capture_time=now,
        detected_time=now,
        image_width=IMAGE_WIDTH,
        image_height=IMAGE_HEIGHT,
        detector_latency_ms=10.0,
        model=model,
    )


def add_pair(
    event: events_pb2.DetectionEvent,
    group_id: str,
    tracks: tuple[int, int],
    *,
    slot: int,
    distance: float,
    density: float,
    crop: bytes,
) -> events_pb2.Group:
    """Add a group of a car and a person (track ids `tracks`) in horizontal `slot` of the image, `distance` apart."""
    vehicle_id, person_id = tracks
    x = 100.0 + 300.0 * slot
    vehicle = event.detections.add(track_id=vehicle_id, class_name="car", confidence=0.9)
    vehicle.category = events_pb2.CATEGORY_VEHICLE
    vehicle.box.CopyFrom(events_pb2.BoundingBox(x1=x, y1=300, x2=x + 160, y2=420))
    person = event.detections.add(track_id=person_id, class_name="person", confidence=0.85)
    person.category = events_pb2.CATEGORY_PEDESTRIAN
    person.box.CopyFrom(events_pb2.BoundingBox(x1=x + 170, y1=280, x2=x + 200, y2=400))
    group = event.groups.add(group_id=group_id, member_track_ids=[vehicle_id, person_id], crop_jpeg=crop)
    group.box.CopyFrom(events_pb2.BoundingBox(x1=x, y1=280, x2=x + 200, y2=420))
    group.features.CopyFrom(
        GroupFeatures(vehicles=1, pedestrians=1, min_ped_vehicle_distance=distance, density=density).to_proto()
    )
    return group
