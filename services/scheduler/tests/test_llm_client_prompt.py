"""The request the LLM client sends (prompt, features, crop) and the parser of the verdict it gets back."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riskwatch.domain import RiskLevel
from riskwatch.domain.features import FEATURES_MARKER
from riskwatch_llmsim.protocol import parse_completion_request
from riskwatch_scheduler.prompt import (
    DEFAULT_PROMPT,
    InvalidReply,
    LlmVerdict,
    PromptBook,
    build_messages,
    build_repair_messages,
    parse_reply,
)

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4
FEATURES: dict[str, object] = {
    "camera_id": "cam-7",
    "group_id": "g-3",
    "member_track_ids": [4, 9],
    "vehicles": 1,
    "pedestrians": 1,
    "two_wheelers": 0,
    "others": 0,
    "min_ped_vehicle_distance": 1.25,
    "density": 0.8,
    "min_spacing": None,
}
VALID = {
    "risk_level": "high",
    "risk_types": ["vehicle_pedestrian_conflict"],
    "description": "A car is about to hit a pedestrian.",
    "confidence": 0.9,
    "involved_track_ids": [4, 9],
}


def test_default_prompt_covers_every_risk_and_the_reply_schema() -> None:
    for phrase in (
        "vehicle_pedestrian_conflict",
        "tailgating",
        "sudden_lane_change",
        "wrong_way_driving",
        "red_light_running",
        "emergency_lane_use",
        "crowding",
        "risk_level",
        "confidence",
        "involved_track_ids",
        '"none" | "low" | "medium" | "high"',
    ):
        assert phrase in DEFAULT_PROMPT


def test_a_camera_can_override_the_prompt() -> None:
    book = PromptBook(per_camera={"cam-tunnel": "Tunnel prompt"})
    assert book.for_camera("cam-tunnel") == "Tunnel prompt"
    assert book.for_camera("cam-7") == DEFAULT_PROMPT


def test_messages_are_a_system_message_and_one_user_message_with_text_and_image() -> None:
    messages: list[Any] = list(build_messages("Assess.", FEATURES, JPEG))
    assert [m["role"] for m in messages] == ["system", "user"]
    text_part, image_part = messages[1]["content"]
    assert text_part["type"] == "text"
    prompt, features_json = text_part["text"].split(f"\n\n{FEATURES_MARKER}\n")
    assert prompt == "Assess."
    assert json.loads(features_json) == FEATURES
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.removeprefix("data:image/jpeg;base64,")) == JPEG


def test_the_simulator_accepts_the_request_and_the_repaired_request() -> None:
    messages = build_messages(DEFAULT_PROMPT, FEATURES, JPEG)
    body = json.dumps({"model": "m", "messages": messages}).encode()
    assert parse_completion_request(body).features.camera_id == "cam-7"
    repaired = build_repair_messages(messages, "Sure! The risk is high.", "the reply is not a JSON object")
    assert len(repaired) == 2  # still one user message, carrying the image once
    user: Any = repaired[1]
    assert [part["type"] for part in user["content"]] == ["text", "image_url", "text"]
    assert "Reply again with only the JSON object" in user["content"][2]["text"]
    assert "Sure! The risk is high." in user["content"][2]["text"]
    assert user["content"][1] is messages[1]["content"][1]  # type: ignore[index]  # the image is reused
    body = json.dumps({"model": "m", "messages": repaired}).encode()
    assert parse_completion_request(body).features.group_id == "g-3"


def test_parse_reply_accepts_bare_json_and_a_json_fence() -> None:
    expected = LlmVerdict.model_validate(VALID)
    assert parse_reply(json.dumps(VALID)) == expected
    assert parse_reply(f"  \n{json.dumps(VALID)}\n") == expected
    assert parse_reply(f"```json\n{json.dumps(VALID, indent=2)}\n```") == expected
    assert parse_reply(f"Here you go:\n```\n{json.dumps(VALID)}\n```") == expected
    assert parse_reply(json.dumps({**VALID, "risk_level": " High ", "extra": 1})).risk_level == RiskLevel.HIGH
    assert parse_reply(json.dumps({**VALID, "risk_level": "none", "risk_types": [], "involved_track_ids": []}))


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "empty"),
        ("The scene looks risky: a car is close to a pedestrian.", "not a JSON object"),
        (json.dumps(VALID) + " Hope this helps!", "not valid JSON"),
        (json.dumps(VALID)[:40], "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ("```json\n[1]\n```", "JSON list, not an object"),
        (json.dumps({k: v for k, v in VALID.items() if k != "confidence"}), "confidence: Field required"),
        (json.dumps({**VALID, "risk_level": "extreme"}), "risk_level"),
        (json.dumps({**VALID, "confidence": 1.5}), "confidence"),
        (
            '{"risk_level": "low", "risk_types": [], "description": "", "confidence": NaN, "involved_track_ids": []}',
            "confidence",
        ),
        (json.dumps({**VALID, "involved_track_ids": ["a"]}), "involved_track_ids"),
        ("{" * 20_000, "not valid JSON"),
        ("[" * 20_000, "not a JSON object"),
        ('{"a": ' * 5_000 + "1" + "}" * 5_000, "nested too deeply"),
        ('{"confidence": ' + "9" * 5000 + "}", "not valid JSON"),
        ("x" * 70_000, "too long"),
    ],
)
def test_parse_reply_rejects_anything_else_with_a_clear_reason(reply: str, reason: str) -> None:
    with pytest.raises(InvalidReply, match=reason):
        parse_reply(reply)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_reply_raises_nothing_but_invalid_reply_on_any_text(text: str) -> None:
    with contextlib.suppress(InvalidReply):
        parse_reply(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*VALID, "x"]), json_values, max_size=6), st.booleans())
def test_parse_reply_raises_nothing_but_invalid_reply_on_any_json_object(data: dict[str, Any], fenced: bool) -> None:
    text = json.dumps({**VALID, **data})
    with contextlib.suppress(InvalidReply):
        parse_reply(f"```json\n{text}\n```" if fenced else text)
