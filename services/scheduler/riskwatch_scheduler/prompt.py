"""The vision-LLM request (prompt, features, crop) and the strict JSON verdict it must answer with."""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

from openai.types.chat import ChatCompletionContentPartParam, ChatCompletionMessageParam
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from riskwatch.domain import RISK_TYPES, VERDICT_LEVELS, RiskLevel
from riskwatch.domain.features import FEATURES_MARKER
from riskwatch.errors import RiskwatchError

MAX_REPLY_CHARS = 64 * 1024

SYSTEM_PROMPT = (
    "You are a traffic-safety analyst reviewing frames from fixed road cameras. "
    "You answer with a single JSON object and nothing else."
)

_RISK_TYPE_LINES = "\n".join(f"- {name}: {meaning}" for name, meaning in RISK_TYPES.items())
DEFAULT_PROMPT = f"""\
Assess the traffic risk in this image crop of one group of road users seen by a fixed camera.
Look for these risks (use exactly these names in risk_types):
{_RISK_TYPE_LINES}

Reply with only this JSON object, no prose and no code fence:
{{"risk_level": "none" | "low" | "medium" | "high",
 "risk_types": [names from the list above],
 "description": "one or two sentences on what you see",
 "confidence": a number from 0 to 1,
 "involved_track_ids": [track ids from member_track_ids that take part in the risk]}}
Use risk_level "none" and empty lists when nothing is risky.

The group features JSON below describes the group. Distances (min_ped_vehicle_distance, min_spacing) are in box
sizes (the square root of a member's box area). Motion is measured from the tracks over the last second or so:
"members" lists each member with its track_id, category and whether its motion is "estimated" yet; speed_box_s is
its speed in box sizes per second and heading_deg its compass heading in the image (0 = up, 90 = right); speed_m_s
and ground_heading_deg are the same on the ground, when the camera is calibrated (else null). "conflict" is the
group's most dangerous pair (track_a, track_b, their categories; kind head_on, rear_end, crossing or stationary;
ttc_s: seconds until they collide if both keep their velocity; pet_s: seconds between the first and the second
passing the point where their paths cross; drac_m_s2: the deceleration needed to avoid the crash), or null. A
short TTC or PET means a near miss (risk type near_miss) even if the image looks calm. The crop may show each
member's recent path drawn as a line, ending where the member is now.\
"""

REPAIR_INSTRUCTION = (
    "Your previous reply could not be used ({reason}). It was:\n{reply}\n\n"
    "Reply again with only the JSON object described above: no prose, no code fence, "
    "all five fields, risk_level one of none/low/medium/high, confidence between 0 and 1."
)
_QUOTED_REPLY_CHARS = 2000

_VERDICT_LABELS = ", ".join(level.label for level in VERDICT_LEVELS)


@dataclass(frozen=True, slots=True)
class PromptBook:
    """The prompt to use for each camera (a global default, overridable per camera id) and the risk types they ask
    for: the domain's, plus any a custom prompt names."""

    default: str = DEFAULT_PROMPT
    per_camera: Mapping[str, str] = field(default_factory=dict)
    risk_types: frozenset[str] = frozenset(RISK_TYPES)

    def for_camera(self, camera_id: str) -> str:
        return self.per_camera.get(camera_id, self.default)


def build_messages(prompt: str, features: Mapping[str, object], crop_jpeg: bytes) -> list[ChatCompletionMessageParam]:
    """A system message and one user message: the prompt with the group's features, and the crop."""
    text = f"{prompt}\n\n{FEATURES_MARKER}\n{json.dumps(features, separators=(',', ':'))}"
    image_url = "data:image/jpeg;base64," + base64.b64encode(crop_jpeg).decode("ascii")
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": image_url}},
            ],
        },
    ]


def build_repair_messages(
    messages: Sequence[ChatCompletionMessageParam], reply: str, reason: str
) -> list[ChatCompletionMessageParam]:
    """The same request with a repair instruction (quoting the bad reply) added to its user message.

    Appended as a further text part of the one user message rather than as a new turn, so the request
    still carries its features and image in its last user message (the image is reused, not re-encoded).
    """
    quoted = reply if len(reply) <= _QUOTED_REPLY_CHARS else reply[:_QUOTED_REPLY_CHARS] + " …"
    repair: ChatCompletionContentPartParam = {
        "type": "text",
        "text": REPAIR_INSTRUCTION.format(reason=reason, reply=quoted),
    }
    repaired: list[ChatCompletionMessageParam] = []
    done = False
    for message in reversed(messages):
        if not done and message["role"] == "user":
            content = message["content"]
            parts: list[ChatCompletionContentPartParam] = (
                [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
            )
            repaired.append({"role": "user", "content": [*parts, repair]})
            done = True
        else:
            repaired.append(message)
    if not done:
        raise ValueError("the request has no user message to repair")
    repaired.reverse()
    return repaired


# A track id is an int64 on the wire (proto); a larger or negative one is no track of ours.
TrackId = Annotated[int, Field(strict=True, ge=0, lt=2**63)]
MAX_RISK_TYPES = 16
_RISK_TYPE_CHARS = 64


class LlmVerdict(BaseModel):
    """The risk verdict the model must reply with.

    Validated with the known risk types as context (`parse_reply`): a name outside them is dropped and counted in
    `unknown_risk_types` rather than refused, since the level and description are still worth having and a repair
    call for a misspelt type costs more than it gives.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    risk_level: RiskLevel
    risk_types: tuple[Annotated[str, Field(max_length=_RISK_TYPE_CHARS)], ...] = Field(max_length=MAX_RISK_TYPES)
    description: Annotated[str, Field(max_length=2000)]
    confidence: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    involved_track_ids: tuple[TrackId, ...] = Field(max_length=256)
    # Set by validation, never read from the reply: how many of its risk types were not known ones.
    unknown_risk_types: int = 0

    @model_validator(mode="before")
    @classmethod
    def _known_risk_types(cls, data: object, info: ValidationInfo) -> object:
        if not isinstance(data, dict):
            return data
        data = {**data, "unknown_risk_types": 0}
        known = info.context.get("risk_types") if isinstance(info.context, dict) else None
        names = data.get("risk_types")
        # Only a well-formed list is filtered; anything else is left for the schema to refuse.
        if known is None or not isinstance(names, list) or len(names) > MAX_RISK_TYPES:
            return data
        if not all(isinstance(name, str) and len(name) <= _RISK_TYPE_CHARS for name in names):
            return data
        kept = list(dict.fromkeys(n.strip().lower() for n in names if n.strip().lower() in known))
        data["risk_types"] = kept
        data["unknown_risk_types"] = sum(1 for n in names if n.strip().lower() not in known)
        return data

    @field_validator("risk_level", mode="before")
    @classmethod
    def _level_by_label(cls, value: object) -> RiskLevel:
        # "High" or " high " mean the same thing; a number is no label, and "unassessed" is no verdict.
        label = value.strip().lower() if isinstance(value, str) else None
        if label is not None:
            with contextlib.suppress(ValueError):
                level = RiskLevel.from_label(label)
                if level in VERDICT_LEVELS:
                    return level
        raise ValueError(f"Input should be one of {_VERDICT_LABELS}")


class InvalidReply(RiskwatchError):
    """The model's reply is not the JSON verdict asked for; the message says why."""


# Reasoning models (Qwen3-VL, DeepSeek-R1, …) think aloud in <think>…</think> before answering; some chat templates
# put the opening tag in the prompt, so the reply holds only the closing one.
_THINK_OPEN, _THINK_CLOSE = re.compile("<think>", re.IGNORECASE), re.compile("</think>", re.IGNORECASE)
# How many `{` are tried as the start of the verdict: each try is linear, so the scan stays bounded.
MAX_OBJECT_CANDIDATES = 64
_DECODER = json.JSONDecoder()


def parse_reply(text: str, *, risk_types: Collection[str] = RISK_TYPES) -> LlmVerdict:
    """The verdict in `text`, whatever surrounds it; raises InvalidReply and nothing else.

    The verdict is the first JSON object with a `risk_level` key (else the first JSON object, so the error says what
    is wrong with it) after any <think> block, found by decoding from each `{` in turn (prose, fences and stray
    braces around it do not matter); then validated strictly, with `risk_types` the names a verdict may use.
    """
    if not isinstance(text, str):
        raise InvalidReply(f"the reply is {type(text).__name__}, not text")
    if len(text) > MAX_REPLY_CHARS:
        raise InvalidReply(f"the reply is too long ({len(text)} characters)")
    body = _answer(text)
    if not body.strip():
        raise InvalidReply("the reply is empty" if not text.strip() else "the reply has only a <think> block")
    data = _first_object(body)
    try:
        return LlmVerdict.model_validate(data, context={"risk_types": frozenset(risk_types)})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)[:5]
        )
        raise InvalidReply(f"the reply does not match the verdict schema: {_short(problems)}") from None
    except RecursionError:
        raise InvalidReply("the reply's JSON is nested too deeply") from None


def _answer(text: str) -> str:
    """The text after the model's thinking: after the last </think>, or before an unclosed <think>."""
    # Matched case-insensitively in `text` itself: str.lower() may change lengths ("İ"), so its indexes would not fit.
    close = None
    for match in _THINK_CLOSE.finditer(text):
        close = match
    if close is not None:
        return text[close.end() :]
    opened = _THINK_OPEN.search(text)
    return text[: opened.start()] if opened is not None else text


def _first_object(body: str) -> dict[str, object]:
    first: dict[str, object] | None = None
    problem: str | None = None
    start = body.find("{")
    for _ in range(MAX_OBJECT_CANDIDATES):
        if start < 0:
            break
        try:
            value, _end = _DECODER.raw_decode(body, start)
        except RecursionError:
            problem = problem or "the reply's JSON is nested too deeply"
        except ValueError as error:  # JSONDecodeError, and integers too long to convert
            problem = problem or f"the reply is not valid JSON: {_short(str(error))}"
        else:
            if isinstance(value, dict):
                if "risk_level" in value:
                    return value
                first = first if first is not None else value
        # The next candidate may be inside this one: `{"answer": {"risk_level": …}}` holds the verdict.
        start = body.find("{", start + 1)
    if first is not None:
        return first
    raise InvalidReply(problem or "the reply is not a JSON object")


def _short(message: str) -> str:
    return message if len(message) <= 200 else message[:200] + " …"
