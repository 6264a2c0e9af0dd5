"""Contract-conforming requests for the simulator, for tests, benchmarks and the demo."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from riskwatch.domain.features import FEATURES_MARKER

# an 8x8 grey JPEG; the simulator only checks the data URI and the JPEG magic, never decodes
SAMPLE_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1R"
    "V19iZ2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2Nj"
    "Y2NjY2NjY2NjY2NjY2P/wAARCAAIAAgDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAA"
    "AgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6"
    "Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXG"
    "x8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREA"
    "AgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5"
    "OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPE"
    "xcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwAooooA/9k="
)

SYSTEM_PROMPT = "You are a traffic-safety analyst. Answer with one JSON object."


def sample_features(**overrides: object) -> dict[str, object]:
    """A calm two-car scene (verdict: none) with any field replaced."""
    features: dict[str, object] = {
        "camera_id": "cam-1",
        "group_id": "g-1",
        "member_track_ids": [1, 2],
        "vehicles": 2,
        "pedestrians": 0,
        "two_wheelers": 0,
        "others": 0,
        "min_ped_vehicle_distance": None,
        "density": 0.4,
        "min_spacing": 1.2,
        "min_ttc_s": None,
        "min_pet_s": None,
        "max_drac_m_s2": None,
        "max_speed_box_s": None,
        "members": [],
        "conflict": None,
    }
    features.update(overrides)
    return features


def jpeg_data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def user_text(features: Mapping[str, object]) -> str:
    return (
        f"Assess the risk in this group of road users.\n{FEATURES_MARKER}\n```json\n{json.dumps(dict(features))}\n```"
    )


def chat_messages(features: Mapping[str, object], jpeg: bytes = SAMPLE_JPEG) -> list[dict[str, Any]]:
    """The `messages` the scheduler is contracted to send for one group."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": user_text(features)},
                {"type": "image_url", "image_url": {"url": jpeg_data_uri(jpeg)}},
            ],
        },
    ]


def chat_request(
    features: Mapping[str, object], *, model: str = "llmsim-vision", jpeg: bytes = SAMPLE_JPEG
) -> dict[str, Any]:
    """A whole request body, as the scheduler sends it."""
    return {
        "model": model,
        "messages": chat_messages(features, jpeg),
        "response_format": {"type": "json_object"},
        "max_tokens": 300,
        "temperature": 0,
    }
