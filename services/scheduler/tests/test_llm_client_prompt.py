"""The request the LLM client sends (prompt, features, crop) and the parser of the verdict it gets back."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riskwatch.domain import PromptFeatures, RiskLevel
from riskwatch.domain.features import FEATURES_MARKER
from riskwatch.v1 import events_pb2
from riskwatch_llmsim.protocol import parse_completion_request
from riskwatch_scheduler.config import PromptsConfig
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
    "min_ttc_s": None,
    "min_pet_s": None,
    "max_drac_m_s2": None,
    "max_speed_box_s": None,
    "members": [],
    "conflict": None,
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


def test_the_request_gives_the_measured_motion_and_the_conflict_and_the_simulator_reads_them_back() -> None:
    def member(track: int, category: int, speed_m_s: float | None, **motion: Any) -> events_pb2.Detection:
        detection = events_pb2.Detection(track_id=track, category=category)  # type: ignore[arg-type]
        detection.kinematics.CopyFrom(events_pb2.Kinematics(**motion))
        if speed_m_s is not None:
            detection.kinematics.speed_m_s = speed_m_s
            detection.kinematics.ground_heading_deg = 270.0
        return detection

    task = events_pb2.AssessmentTask(
        camera_id="cam-7",
        group_id="g-3",
        member_track_ids=[3, 7, 9],
        features=events_pb2.GroupFeatures(pedestrians=2, vehicles=1, min_ttc_s=0.75, max_speed_box_s=2.5),
        members=[
            member(3, events_pb2.CATEGORY_PEDESTRIAN, 1.5, estimated=True, speed_box_s=1.25, heading_deg=90.0),
            member(7, events_pb2.CATEGORY_VEHICLE, 8.5, estimated=True, speed_box_s=2.5, heading_deg=270.0),
            member(9, events_pb2.CATEGORY_PEDESTRIAN, None, estimated=False, samples=2),
        ],
        conflict=events_pb2.Conflict(
            track_a=3,
            track_b=7,
            category_a=events_pb2.CATEGORY_PEDESTRIAN,
            category_b=events_pb2.CATEGORY_VEHICLE,
            kind=events_pb2.CONFLICT_KIND_HEAD_ON,
            calibrated=True,
            ttc_s=0.75,
            drac_m_s2=6.5,
            distance=7.5,
            closing_speed=10.0,
        ),
    )
    features = PromptFeatures.from_task(task).to_dict()
    messages = build_messages(DEFAULT_PROMPT, features, JPEG)
    text = messages[1]["content"][0]["text"]  # type: ignore[index]
    assert "recent path drawn as a line" in text and "ttc_s: seconds until they collide" in text
    motion = text.split(FEATURES_MARKER)[1]
    for fact in (
        '{"track_id":3,"category":"pedestrian","estimated":true,"speed_box_s":1.25,"heading_deg":90.0,'
        '"speed_m_s":1.5,"ground_heading_deg":270.0}',
        '{"track_id":9,"category":"pedestrian","estimated":false,"speed_box_s":null,"heading_deg":null,'
        '"speed_m_s":null,"ground_heading_deg":null}',  # too little history: said, not guessed
        '"conflict":{"track_a":3,"track_b":7,"category_a":"pedestrian","category_b":"vehicle","kind":"head_on",'
        '"calibrated":true,"ttc_s":0.75,"pet_s":null,"drac_m_s2":6.5,"distance":7.5,"closing_speed":10.0}',
    ):
        assert fact in motion
    parsed = parse_completion_request(json.dumps({"model": "m", "messages": messages}).encode()).features
    assert (
        parsed.conflict is not None
        and parsed.conflict.describe() == "pedestrian 3 and vehicle 7 head-on, TTC 0.8 s, DRAC 6.5 m/s²"
    )
    assert [(m.track_id, m.speed_m_s) for m in parsed.members] == [(3, 1.5), (7, 8.5), (9, None)]


def test_parse_reply_accepts_bare_json_and_a_json_fence() -> None:
    expected = LlmVerdict.model_validate(VALID)
    assert parse_reply(json.dumps(VALID)) == expected
    assert parse_reply(f"  \n{json.dumps(VALID)}\n") == expected
    assert parse_reply(f"```json\n{json.dumps(VALID, indent=2)}\n```") == expected
    assert parse_reply(f"Here you go:\n```\n{json.dumps(VALID)}\n```") == expected
    assert parse_reply(json.dumps(VALID) + " Hope this helps!") == expected
    assert parse_reply(json.dumps({**VALID, "risk_level": " High ", "extra": 1})).risk_level == RiskLevel.HIGH
    assert parse_reply(json.dumps({**VALID, "risk_level": "none", "risk_types": [], "involved_track_ids": []}))


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "empty"),
        ("The scene looks risky: a car is close to a pedestrian.", "not a JSON object"),
        (json.dumps(VALID)[:40], "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ("```json\n[1]\n```", "not a JSON object"),
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


# --- lenient about what surrounds the verdict, strict about the verdict ------------------------------------------

# Prose that holds no complete JSON object of its own (no `}`) and no think tags, but may hold stray `{`.
prose = st.text(st.characters(blacklist_characters="}<", blacklist_categories=("Cs",)), max_size=200)


@settings(max_examples=300, deadline=None)
@given(
    before=prose,
    after=st.text(max_size=200).filter(lambda t: "</think>" not in t.lower()),
    thought=st.text(max_size=200).filter(lambda t: "</think>" not in t.lower()),
    fence=st.sampled_from(["", "```json\n", "```\n", "```JSON "]),
    indent=st.sampled_from([None, 2]),
)
def test_the_verdict_is_found_whatever_prose_think_block_or_fence_surrounds_it(
    before: str, after: str, thought: str, fence: str, indent: int | None
) -> None:
    body = json.dumps(VALID, indent=indent)
    closing = "\n```" if fence else ""
    for reply in (f"{before}{fence}{body}{closing}{after}", f"<think>{thought}</think>{before}{fence}{body}{after}"):
        assert parse_reply(reply) == LlmVerdict.model_validate(VALID), reply


@pytest.mark.parametrize(
    "reply",
    [
        "Sure {see below}: " + json.dumps(VALID),
        'Options: {"a": 1} and then ' + json.dumps(VALID),
        "<think>maybe " + json.dumps({**VALID, "risk_level": "none"}) + " or not</think>\n" + json.dumps(VALID),
        "I reasoned {carefully}.</think>" + json.dumps(VALID),  # the template opened the think block
        '{"answer": ' + json.dumps(VALID) + "}",
        json.dumps(VALID) + "\n\nNote: {x} is uncertain.",
        "<THINK>İstanbul {traffic}</Think>" + json.dumps(VALID),  # found by atheris: lower() changes lengths
    ],
    ids=["brace-in-prose", "object-before", "think-block", "only-closing-tag", "wrapped", "prose-after", "case"],
)
def test_the_verdict_is_taken_past_braces_and_objects_before_it(reply: str) -> None:
    assert parse_reply(reply) == LlmVerdict.model_validate(VALID)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("<think>" + json.dumps(VALID), "only a <think> block"),  # cut off while thinking
        (json.dumps({**VALID, "involved_track_ids": [2**63]}), "involved_track_ids"),
        (json.dumps({**VALID, "involved_track_ids": [-1]}), "involved_track_ids"),
        (json.dumps({**VALID, "involved_track_ids": [True]}), "involved_track_ids"),
        (json.dumps({**VALID, "risk_types": ["crowding"] * 17}), "risk_types"),
        (json.dumps({**VALID, "risk_types": [7]}), "risk_types"),
        ("{" * 1000 + json.dumps(VALID), "not valid JSON"),  # the scan gives up: bounded work
    ],
)
def test_a_verdict_outside_the_schema_is_refused(reply: str, reason: str) -> None:
    with pytest.raises(InvalidReply, match=reason):
        parse_reply(reply)


def test_unknown_risk_types_are_dropped_and_counted_and_names_are_normalised() -> None:
    reply = json.dumps({**VALID, "risk_types": [" Crowding", "made_up", "tailgating", "crowding"]})
    verdict = parse_reply(reply)
    assert verdict.risk_types == ("crowding", "tailgating")
    assert verdict.unknown_risk_types == 1  # a duplicate is no unknown type
    assert parse_reply(reply, risk_types={"made_up"}).risk_types == ("made_up",)
    # the reply cannot claim a count of its own
    assert parse_reply(json.dumps({**VALID, "unknown_risk_types": 9})).unknown_risk_types == 0


def test_a_prompt_file_may_add_risk_types() -> None:
    book = PromptsConfig.model_validate({"risk_types": ["falling_load"]}).book()
    assert {"falling_load", "crowding"} <= book.risk_types
    with pytest.raises(ValueError, match="risk_types"):
        PromptsConfig.model_validate({"risk_types": ["Bad Name"]})
