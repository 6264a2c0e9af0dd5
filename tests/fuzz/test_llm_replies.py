"""The LLM reply parser (only InvalidReply) and the simulator's request parser (only RequestError, HTTP 400)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from riskwatch.domain import VERDICT_LEVELS
from riskwatch.domain.features import FEATURES_MARKER
from riskwatch_llmsim import verdict_for
from riskwatch_llmsim.config import SimulatorConfig
from riskwatch_llmsim.protocol import RequestError, parse_completion_request
from riskwatch_llmsim.server import start_simulator
from riskwatch_llmsim.testing import chat_request, sample_features
from riskwatch_scheduler.prompt import InvalidReply, LlmVerdict, parse_reply
from tests.fuzz.support import fuzz_settings, json_values, tricky_text

VERDICT = {
    "risk_level": "high",
    "risk_types": ["vehicle_pedestrian_conflict"],
    "description": "a pedestrian steps in front of a car",
    "confidence": 0.8,
    "involved_track_ids": [1, 2],
}


def parse(text: Any) -> LlmVerdict | None:
    try:
        return parse_reply(text)
    except InvalidReply as exc:
        assert str(exc).startswith("the reply"), f"unclear message: {exc}"
        assert len(str(exc)) < 2000, "the message should not echo a huge reply"
        return None


@st.composite
def verdict_like(draw: st.DrawFn) -> dict[str, Any]:
    """The verdict with some fields dropped or replaced by any JSON value, plus extra fields."""
    out: dict[str, Any] = {}
    for name, value in VERDICT.items():
        choice = draw(st.sampled_from(["keep", "drop", "replace"]))
        if choice == "keep":
            out[name] = value
        elif choice == "replace":
            out[name] = draw(json_values())
    out.update(draw(st.dictionaries(st.text(max_size=10), json_values(), max_size=3)))
    return out


def _wrap(body: str, how: str) -> str:
    return {
        "bare": body,
        "fence": f"Here it is:\n```json\n{body}\n```\nthanks",
        "fence-no-lang": f"```\n{body}```",
        "prose": f"I think {body} is right",
        "two-fences": f"```json\n{body}\n```\n```json\n{{}}\n```",
        "truncated": body[: len(body) // 2],
        "think": f'<think>The {{car}} is close; {{"risk_level": "none"}}? No.</think>\n{body}',
        "brace-before": f"Answer {{as asked}}: {body}",
    }[how]


LENIENT_WRAPS = ["bare", "fence", "fence-no-lang", "prose", "two-fences", "think", "brace-before"]
wraps = st.sampled_from([*LENIENT_WRAPS, "truncated"])


@fuzz_settings(examples=300)
@given(text=tricky_text | st.text())
@example(text="")
@example(text="```json\n```")
@example(text="{" * 30_000)
@example(text='{"a": ' + "[" * 30_000 + "]" * 30_000 + "}")
@example(text='{"risk_level": ' + "9" * 5000 + "}")
@example(text="x" * 70_000)
@example(text='{"risk_level": NaN}')
def test_reply_parser_raises_only_invalid_reply_on_any_text(text: str) -> None:
    parse(text)


@fuzz_settings(examples=150, long=1000)
@given(fields=verdict_like(), how=wraps)
def test_reply_parser_raises_only_invalid_reply_on_verdict_like_json(fields: dict[str, Any], how: str) -> None:
    verdict = parse(_wrap(json.dumps(fields), how))
    if verdict is not None:
        assert verdict.risk_level in VERDICT_LEVELS
        assert 0.0 <= verdict.confidence <= 1.0


@pytest.mark.parametrize("value", [None, b"{}", 42, ["{}"], {"risk_level": "high"}])
def test_reply_parser_raises_invalid_reply_on_non_text(value: Any) -> None:
    assert parse(value) is None


def test_the_reply_parser_accepts_the_verdict_whatever_surrounds_it() -> None:
    for how in LENIENT_WRAPS:
        verdict = parse(_wrap(json.dumps(VERDICT), how))
        assert verdict is not None and verdict.risk_level.label == "high", how


@fuzz_settings(examples=300)
@given(before=tricky_text.map(lambda t: t.replace("}", "")), after=tricky_text, how=st.sampled_from(LENIENT_WRAPS))
@example(before="{" * 40, after="}", how="think")
@example(before='{"a": ', after="}", how="bare")
def test_a_verdict_in_any_prose_is_found(before: str, after: str, how: str) -> None:
    # prose before it holds no object of its own (no `}`); anything may follow
    verdict = parse(before + _wrap(json.dumps(VERDICT), how) + after)
    assert verdict is not None and verdict.involved_track_ids == (1, 2)


@pytest.mark.parametrize("track_id", [2**63, 2**64, -1, 10**400])
def test_a_track_id_outside_int64_is_an_invalid_reply(track_id: int) -> None:
    # 2**63 used to pass the parser and crash building the AssessmentResult: 3 LLM calls, then the dead letter
    assert parse(json.dumps({**VERDICT, "involved_track_ids": [track_id]})) is None


@pytest.mark.parametrize("mode", ["fenced", "think", "prose_around"])
async def test_the_simulators_wrapped_replies_parse_to_its_verdict(mode: str) -> None:
    config = SimulatorConfig(
        latency_median_s=0, latency_sigma=0, qps=None, rpm=None, fault_invalid_json=1.0, invalid_json_modes=[mode]
    )
    simulator = await start_simulator(config)
    try:
        url = f"{simulator.base_url}/chat/completions"
        async with (
            aiohttp.ClientSession(headers={"Authorization": "Bearer fuzz"}) as http,
            http.post(url, json=chat_request(sample_features())) as reply,
        ):
            content = (await reply.json())["choices"][0]["message"]["content"]
        verdict = parse(content)
        assert verdict is not None and verdict.risk_level.label == verdict_for(sample_features())["risk_level"]
    finally:
        await simulator.stop()


# --- the simulator's request parser ----------------------------------------------------------------


def sim_parse(body: bytes) -> bool:
    """Whether the request is accepted; RequestError must be a 400 with a code, anything else fails."""
    try:
        parse_completion_request(body)
    except RequestError as exc:
        assert exc.status == 400 and exc.code and exc.message
        return False
    return True


@st.composite
def request_like(draw: st.DrawFn) -> dict[str, Any]:
    """A contract-conforming request with features and top-level fields dropped or replaced by any JSON value."""
    features: dict[str, Any] = sample_features()
    for name in list(features):
        choice = draw(st.sampled_from(["keep", "keep", "drop", "replace"]))
        if choice == "drop":
            del features[name]
        elif choice == "replace":
            features[name] = draw(json_values())
    body = chat_request(features)
    for name in list(body):
        choice = draw(st.sampled_from(["keep", "keep", "keep", "drop", "replace"]))
        if choice == "drop":
            del body[name]
        elif choice == "replace":
            body[name] = draw(json_values())
    return body


@fuzz_settings(examples=150, long=1000)
@given(body=request_like())
def test_simulator_request_parser_raises_only_request_error_on_request_like_json(body: dict[str, Any]) -> None:
    sim_parse(json.dumps(body).encode())


@fuzz_settings(examples=200)
@given(
    body=st.binary(max_size=512)
    | json_values().map(lambda v: json.dumps(v).encode())
    | tricky_text.map(lambda t: json.dumps(chat_request(sample_features())).replace("{", t, 1).encode())
)
@example(body=b"")
@example(body=b"\xff\xfe\x00")
def test_simulator_request_parser_raises_only_request_error_on_any_body(body: bytes) -> None:
    sim_parse(body)


@fuzz_settings(examples=200)
@given(text=tricky_text, after=tricky_text)
def test_simulator_features_section_raises_only_request_error(text: str, after: str) -> None:
    request = chat_request(sample_features())
    request["messages"][1]["content"][0]["text"] = f"{text}{FEATURES_MARKER}{after}"
    sim_parse(json.dumps(request).encode())


def _with_features_text(features_json: str) -> bytes:
    request = chat_request(sample_features())
    request["messages"][1]["content"][0]["text"] = f"{FEATURES_MARKER}\n```json\n{features_json}\n```"
    return json.dumps(request).encode()


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "m", "n": ' + b"1" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        _with_features_text('{"vehicles": ' + "1" * 5000 + "}"),
        _with_features_text('{"vehicles": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    ],
    ids=["huge-int", "deep-nesting", "features-huge-int", "features-deep-nesting"],
)
def test_simulator_request_parser_known_bug(body: bytes) -> None:
    sim_parse(body)


async def test_the_simulator_answers_fuzzed_requests_with_400_and_keeps_serving() -> None:
    bodies = [b"", b"not json", b"[]", json.dumps({"model": "m"}).encode()]
    bodies.append(json.dumps(chat_request(sample_features(vehicles="two"))).encode())
    simulator = await start_simulator(SimulatorConfig(latency_median_s=0, latency_sigma=0, qps=None, rpm=None))
    try:
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer fuzz"}) as http:
            url = f"{simulator.base_url}/chat/completions"
            for body in bodies:
                async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as reply:
                    assert reply.status == 400, (body[:80], reply.status, await reply.text())
                    error = (await reply.json())["error"]
                    assert error["type"] == "invalid_request_error" and error["message"]
            async with http.post(url, json=chat_request(sample_features())) as reply:
                assert reply.status == 200
                content = (await reply.json())["choices"][0]["message"]["content"]
                assert parse(content) is not None
    finally:
        await simulator.stop()
