"""The OpenAI chat-completions wire format: parsing the scheduler's request, building replies and errors."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from riskwatch.domain import FeatureError, PromptFeatures
from riskwatch.domain.features import FEATURES_MARKER

from .verdicts import parse_features

JPEG_DATA_URI_PREFIXES = ("data:image/jpeg;base64,", "data:image/jpg;base64,")
# every JPEG starts FF D8 FF, which base64 always renders as "/9j/"; checking it spares a decode
JPEG_BASE64_MAGIC = "/9j/"
# what a vision model bills for one image tile; the real figure depends on the decoded size,
# which the simulator deliberately does not compute
IMAGE_PROMPT_TOKENS = 255
CHARS_PER_TOKEN = 4


class RequestError(Exception):
    """A request the API would refuse with 400, carrying OpenAI's error fields."""

    def __init__(self, message: str, *, code: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.status = status


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """What the simulator needs from a valid chat-completions request."""

    model: str
    features: PromptFeatures
    max_tokens: int | None
    prompt_tokens: int


def parse_completion_request(body: bytes) -> CompletionRequest:
    """Validate a request body as the scheduler is contracted to send it; raises RequestError."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, bad UTF-8, 5000-digit integers, deep nesting
        raise RequestError(f"We could not parse the JSON body of your request: {error}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise RequestError("The request body must be a JSON object.", code="invalid_json")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("you must provide a model parameter", code="missing_required_parameter", param="model")
    if payload.get("stream"):
        raise RequestError("The simulator does not support stream=true.", code="unsupported_value", param="stream")
    if payload.get("n", 1) != 1:
        raise RequestError("The simulator only supports n=1.", code="unsupported_value", param="n")
    temperature = payload.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise RequestError("temperature must be a number between 0 and 2.", code="invalid_value", param="temperature")
    max_tokens = _max_tokens(payload)
    response_format = payload.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, dict) or response_format.get("type") not in ("json_object", "text")
    ):
        raise RequestError(
            "response_format.type must be 'json_object' or 'text'.",
            code="invalid_value",
            param="response_format",
        )
    text, prompt_chars = _user_text_and_image(payload.get("messages"))
    features = extract_features(text)
    return CompletionRequest(
        model=model,
        features=features,
        max_tokens=max_tokens,
        prompt_tokens=math.ceil(prompt_chars / CHARS_PER_TOKEN) + IMAGE_PROMPT_TOKENS,
    )


def extract_features(text: str) -> PromptFeatures:
    """Find the JSON object after the features marker (optionally in a ```json fence) and validate it."""
    start = text.find(FEATURES_MARKER)
    if start < 0:
        raise RequestError(
            f"The user message has no '{FEATURES_MARKER}' section.", code="invalid_features", param="messages"
        )
    rest = text[start + len(FEATURES_MARKER) :]
    brace = rest.find("{")
    if brace < 0 or rest[:brace].strip() not in ("", "```", "```json"):
        raise RequestError(
            f"'{FEATURES_MARKER}' must be followed by a JSON object.",
            code="invalid_features",
            param="messages",
        )
    try:
        raw, _ = json.JSONDecoder().raw_decode(rest, brace)
        return parse_features(raw)
    except json.JSONDecodeError as error:
        raise RequestError(
            f"The group features are not valid JSON: {error.msg}.", code="invalid_features", param="messages"
        ) from None
    except FeatureError as error:  # a ValueError too, so it must come first
        raise RequestError(str(error), code="invalid_features", param="messages") from None
    except (ValueError, RecursionError) as error:
        raise RequestError(
            f"The group features are not valid JSON: {type(error).__name__}.", code="invalid_features", param="messages"
        ) from None


def _max_tokens(payload: Mapping[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(f"{name} must be a positive integer.", code="invalid_value", param=name)
        return value
    return None


def _user_text_and_image(messages: Any) -> tuple[str, int]:
    """The last user message's text, after checking it carries a JPEG data URI; plus prompt size."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty array.", code="invalid_value", param="messages")
    prompt_chars = 0
    user_content: Any = None
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(
                f"messages[{index}] must be an object with a role.", code="invalid_value", param="messages"
            )
        content = message.get("content")
        if isinstance(content, str):
            prompt_chars += len(content)
        if message["role"] == "user":
            user_content = content
    if not isinstance(user_content, list):
        raise RequestError(
            "The user message must be a list of content parts with a text part and an image_url part.",
            code="invalid_value",
            param="messages",
        )
    texts: list[str] = []
    images = 0
    for part in user_content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            _check_jpeg_data_uri(part.get("image_url"))
            images += 1
        else:
            raise RequestError(
                "Each user content part must be a text part or an image_url part.",
                code="invalid_value",
                param="messages",
            )
    if images == 0:
        raise RequestError("The user message carries no image_url part.", code="invalid_image", param="messages")
    text = "\n".join(texts)
    return text, prompt_chars + len(text)


def _check_jpeg_data_uri(image_url: Any) -> None:
    url = image_url.get("url") if isinstance(image_url, dict) else None
    if not isinstance(url, str):
        raise RequestError("image_url.url must be a string.", code="invalid_image_url", param="messages")
    for prefix in JPEG_DATA_URI_PREFIXES:
        if url.startswith(prefix):
            if not url.startswith(JPEG_BASE64_MAGIC, len(prefix)):
                raise RequestError(
                    "The image data is not a base64-encoded JPEG.",
                    code="invalid_image_format",
                    param="messages",
                )
            return
    raise RequestError(
        "image_url.url must be a data URI of the form data:image/jpeg;base64,...",
        code="invalid_image_url",
        param="messages",
    )


def completion_body(request: CompletionRequest, content: str) -> dict[str, Any]:
    """A chat.completion object; a reply longer than max_tokens is cut off with finish_reason 'length'."""
    finish_reason = "stop"
    completion_tokens = math.ceil(len(content) / CHARS_PER_TOKEN)
    if request.max_tokens is not None and completion_tokens > request.max_tokens:
        content = content[: request.max_tokens * CHARS_PER_TOKEN]
        completion_tokens = request.max_tokens
        finish_reason = "length"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "system_fingerprint": "fp_llmsim",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": request.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": request.prompt_tokens + completion_tokens,
        },
    }


def error_body(message: str, *, error_type: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope, which the openai client turns into a typed APIStatusError."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
