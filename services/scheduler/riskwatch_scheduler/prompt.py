"""The vision-LLM request (prompt, features, crop) and the strict JSON verdict it must answer with."""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

from openai.types.chat import ChatCompletionContentPartParam, ChatCompletionMessageParam
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from riskwatch.domain import VERDICT_LEVELS, RiskLevel
from riskwatch.domain.features import FEATURES_MARKER
from riskwatch.errors import RiskwatchError

MAX_REPLY_CHARS = 64 * 1024

SYSTEM_PROMPT = (
    "You are a traffic-safety analyst reviewing frames from fixed road cameras. "
    "You answer with a single JSON object and nothing else."
)

DEFAULT_PROMPT = """\
Assess the traffic risk in this image crop of one group of road users seen by a fixed camera.
Look for these risks (use exactly these names in risk_types):
- vehicle_pedestrian_conflict: a vehicle and a pedestrian on converging paths or too close
- tailgating: a vehicle following another too closely
- sudden_lane_change: a vehicle cutting across lanes abruptly
- wrong_way_driving: a vehicle moving against the direction of traffic
- red_light_running: a vehicle entering a junction against a red signal
- emergency_lane_use: a vehicle driving or stopping in the emergency lane or hard shoulder
- crowding: people or vehicles packed densely enough to be dangerous

Reply with only this JSON object, no prose and no code fence:
{"risk_level": "none" | "low" | "medium" | "high",
 "risk_types": [names from the list above],
 "description": "one or two sentences on what you see",
 "confidence": a number from 0 to 1,
 "involved_track_ids": [track ids from member_track_ids that take part in the risk]}
Use risk_level "none" and empty lists when nothing is risky. Distances are in metres.\
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
    """The prompt to use for each camera: a global default, overridable per camera id."""

    default: str = DEFAULT_PROMPT
    per_camera: Mapping[str, str] = field(default_factory=dict)

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


class LlmVerdict(BaseModel):
    """The risk verdict the model must reply with."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    risk_level: RiskLevel
    risk_types: tuple[Annotated[str, Field(max_length=64)], ...] = Field(max_length=16)
    description: Annotated[str, Field(max_length=2000)]
    confidence: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    involved_track_ids: tuple[int, ...] = Field(max_length=256)

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


_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n?(.*?)```", re.DOTALL)


def parse_reply(text: str) -> LlmVerdict:
    """The verdict in `text` (bare JSON or one ```json fence); raises InvalidReply and nothing else."""
    if not isinstance(text, str):
        raise InvalidReply(f"the reply is {type(text).__name__}, not text")
    if len(text) > MAX_REPLY_CHARS:
        raise InvalidReply(f"the reply is too long ({len(text)} characters)")
    body = text.strip()
    if not body:
        raise InvalidReply("the reply is empty")
    if not body.startswith("{"):
        fence = _FENCE.search(body)
        if fence is None:
            raise InvalidReply("the reply is not a JSON object")
        body = fence.group(1).strip()
    try:
        data = json.loads(body)
    except RecursionError:
        raise InvalidReply("the reply's JSON is nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, and integers too long to convert
        raise InvalidReply(f"the reply is not valid JSON: {_short(error)}") from None
    if not isinstance(data, dict):
        raise InvalidReply(f"the reply is a JSON {type(data).__name__}, not an object")
    try:
        return LlmVerdict.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)[:5]
        )
        raise InvalidReply(f"the reply does not match the verdict schema: {problems}") from None
    except RecursionError:
        raise InvalidReply("the reply's JSON is nested too deeply") from None


def _short(error: Exception) -> str:
    message = str(error)
    return message if len(message) <= 200 else message[:200] + " …"
