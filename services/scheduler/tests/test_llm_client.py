"""The LLM client against a scripted HTTP transport: outcome mapping, failover, repair, and no secret leaks."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any

import httpx2
import pytest
from openai import AsyncOpenAI
from prometheus_client import CollectorRegistry

from riskwatch.domain import RiskLevel
from riskwatch_llmsim.testing import sample_features
from riskwatch_scheduler.keypool import KeyPool, KeyState
from riskwatch_scheduler.keys_config import ApiKeysConfig
from riskwatch_scheduler.llm_client import Assessment, ClientFactory, LlmClient, retry_after_s
from riskwatch_scheduler.prompt import PromptBook, build_messages

SECRETS = {"a": "sk-proj-AAAA-secret-0001", "b": "sk-proj-BBBB-secret-0002", "c": "sk-proj-CCCC-secret-0003"}
KEY_OF_SECRET = {v: k for k, v in SECRETS.items()}
FEATURES = sample_features()  # the contract the simulator parses: a calm two-car scene
VERDICT = {
    "risk_level": "low",
    "risk_types": ["tailgating"],
    "description": "Close following.",
    "confidence": 0.7,
    "involved_track_ids": [1, 2],
}

Handler = Callable[[str, dict[str, Any]], Awaitable[httpx2.Response] | httpx2.Response]


def completion(content: str) -> httpx2.Response:
    return httpx2.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        },
    )


def error(status: int, message: str = "error", headers: dict[str, str] | None = None) -> httpx2.Response:
    body = {"error": {"message": message, "type": "error", "code": None, "param": None}}
    return httpx2.Response(status, json=body, headers=headers)


class Provider:
    """A scripted provider: `handler(key_id, body)` answers each request; records who was called."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.clients_built: list[str] = []

    def factory(self) -> ClientFactory:
        def build(base_url: str, api_key: str, timeout_s: float) -> AsyncOpenAI:
            self.clients_built.append(KEY_OF_SECRET[api_key])
            return AsyncOpenAI(
                api_key=api_key,
                base_url=base_url,
                max_retries=0,
                timeout=timeout_s,
                http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self._handle)),
            )

        return build

    async def _handle(self, request: httpx2.Request) -> httpx2.Response:
        key_id = KEY_OF_SECRET[request.headers["Authorization"].removeprefix("Bearer ")]
        body = json.loads(request.content)
        self.calls.append(key_id)
        self.bodies.append(body)
        response = self.handler(key_id, body)
        if not isinstance(response, httpx2.Response):
            response = await response
        return response


def make_client(
    provider: Provider,
    keys: str = "abc",
    *,
    strategy: str = "round_robin",
    min_cooldown: float = 5.0,
    request_timeout_s: float = 5.0,
    prompts: PromptBook | None = None,
    registry: CollectorRegistry | None = None,
) -> LlmClient:
    config = ApiKeysConfig.from_mapping(
        {
            "selection_strategy": strategy,
            "cooling": {"min_cooldown": min_cooldown, "max_cooldown": 60},
            "default_base_url": "http://llm.test/v1",
            "default_model": "vision-test",
            "request_timeout_s": request_timeout_s,
            "keys": [{"id": k, "api_key": SECRETS[k], "qps_limit": 1000, "rpm_limit": 60000} for k in keys],
        }
    )
    pool = KeyPool.from_config(config, registry=registry or CollectorRegistry())
    return LlmClient(config, pool, prompts=prompts, client_factory=provider.factory())


async def assess(client: LlmClient, deadline_s: float = 5.0) -> Assessment:
    messages = build_messages("Assess.", FEATURES, b"\xff\xd8\xff\xe0jpeg")
    return await client.assess_messages(messages, deadline=time.monotonic() + deadline_s)


def state(client: LlmClient, key_id: str) -> KeyState:
    return next(s.state for s in client.pool.snapshot() if s.key_id == key_id)


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        for secret in SECRETS.values():
            assert secret not in str(text)
            assert secret[:12] not in str(text)


async def test_a_good_reply_gives_a_verdict() -> None:
    provider = Provider(lambda key, body: completion(json.dumps(VERDICT)))
    client = make_client(provider)
    result = await assess(client)
    assert result.ok and result.failure is None
    assert result.verdict is not None and result.verdict.risk_level == RiskLevel.LOW
    assert (result.key_id, result.model, result.attempts) == ("a", "vision-test", 1)
    assert 0 <= result.latency_s <= result.elapsed_s
    body = provider.bodies[0]
    assert body["model"] == "vision-test" and body["temperature"] == 0
    await client.close()


async def test_one_client_per_key_is_built_once_and_reused() -> None:
    provider = Provider(lambda key, body: completion(json.dumps(VERDICT)))
    client = make_client(provider)
    await asyncio.gather(*(assess(client) for _ in range(30)))
    assert sorted(provider.clients_built) == ["a", "b", "c"]
    await client.close()


async def test_the_camera_prompt_is_used() -> None:
    provider = Provider(lambda key, body: completion(json.dumps(VERDICT)))
    client = make_client(provider, prompts=PromptBook(default="Default.", per_camera={"cam-9": "Tunnel."}))
    await client.assess(camera_id="cam-9", features=FEATURES, crop_jpeg=b"\xff\xd8\xff", deadline=time.monotonic() + 5)
    await client.assess(camera_id="cam-1", features=FEATURES, crop_jpeg=b"\xff\xd8\xff", deadline=time.monotonic() + 5)
    texts = [b["messages"][1]["content"][0]["text"] for b in provider.bodies]
    assert texts[0].startswith("Tunnel.") and texts[1].startswith("Default.")
    await client.close()


async def test_a_429_cools_the_key_for_retry_after_and_fails_over() -> None:
    def handler(key: str, body: dict[str, Any]) -> httpx2.Response:
        if key == "a":
            return error(429, "Rate limit reached", {"retry-after-ms": "12500", "retry-after": "13"})
        return completion(json.dumps(VERDICT))

    provider = Provider(handler)
    client = make_client(provider, min_cooldown=1)
    result = await assess(client)
    assert result.ok and result.key_id == "b" and result.attempts == 2
    assert provider.calls == ["a", "b"]
    cooldown = next(s.cooldown_remaining for s in client.pool.snapshot() if s.key_id == "a")
    assert 12.0 < cooldown <= 12.5  # retry-after-ms, not the 1 s backoff
    await client.close()


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_a_server_error_cools_the_key_and_fails_over(status: int) -> None:
    provider = Provider(lambda key, body: error(status) if key == "a" else completion(json.dumps(VERDICT)))
    client = make_client(provider)
    result = await assess(client)
    assert result.ok and result.key_id == "b"
    assert state(client, "a") is KeyState.COOLING
    await client.close()


async def test_a_timeout_cools_the_key_and_fails_over() -> None:
    def handler(key: str, body: dict[str, Any]) -> httpx2.Response:
        if key == "a":
            raise httpx2.ReadTimeout("timed out")
        return completion(json.dumps(VERDICT))

    provider = Provider(handler)
    client = make_client(provider)
    result = await assess(client)
    assert result.ok and result.key_id == "b"
    assert state(client, "a") is KeyState.COOLING
    await client.close()


async def test_a_connection_error_fails_over() -> None:
    def handler(key: str, body: dict[str, Any]) -> httpx2.Response:
        if key == "a":
            raise httpx2.ConnectError("refused")
        return completion(json.dumps(VERDICT))

    client = make_client(Provider(handler))
    result = await assess(client)
    assert result.ok and result.key_id == "b"
    await client.close()


async def test_a_rejected_key_is_disabled_and_traffic_moves_without_leaking_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(key: str, body: dict[str, Any]) -> httpx2.Response:
        if key == "b":
            # some providers quote (part of) the key in the error text
            return error(401, f"Incorrect API key provided: {SECRETS['b']}")
        return completion(json.dumps(VERDICT))

    provider = Provider(handler)
    client = make_client(provider)
    with caplog.at_level(logging.DEBUG):
        results = [await assess(client) for _ in range(12)]
    assert all(r.ok for r in results)
    assert state(client, "b") is KeyState.DISABLED
    assert provider.calls.count("b") == 1
    assert Counter(r.key_id for r in results) == {"a": 6, "c": 6}
    assert any("API key b disabled" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert_no_secret(caplog.text, *(repr(r) for r in results))
    await client.close()


async def test_when_every_key_is_rejected_the_assessment_says_so() -> None:
    client = make_client(Provider(lambda key, body: error(403, "forbidden")))
    result = await assess(client)
    assert result.failure is not None and result.failure.kind == "no_usable_keys"
    assert result.failure.message.startswith("All API keys are cooling down or disabled")
    assert result.attempts == 3
    await client.close()


async def test_an_invalid_reply_is_repaired_once() -> None:
    replies = iter(["I think the risk is low.", json.dumps(VERDICT)])
    provider = Provider(lambda key, body: completion(next(replies)))
    client = make_client(provider)
    result = await assess(client)
    assert result.ok and result.attempts == 2
    repair = provider.bodies[1]["messages"][1]["content"][-1]["text"]
    assert "I think the risk is low." in repair and "Reply again with only the JSON object" in repair
    assert len(provider.bodies[1]["messages"]) == 2
    await client.close()


async def test_a_reply_invalid_twice_is_a_typed_failure() -> None:
    provider = Provider(lambda key, body: completion('{"risk_level": "severe"}'))
    client = make_client(provider)
    result = await assess(client)
    assert result.verdict is None and result.failure is not None
    assert result.failure.kind == "invalid_reply" and result.failure_kind == "invalid_reply"
    assert "risk_level" in result.failure.message
    assert result.attempts == 2
    await client.close()


async def test_a_bad_request_is_not_retried_and_its_text_is_scrubbed() -> None:
    provider = Provider(lambda key, body: error(400, f"Image too large (key {SECRETS[key]})"))
    client = make_client(provider)
    result = await assess(client)
    assert result.failure is not None and result.failure.kind == "llm_error"
    assert "HTTP 400" in result.failure.message and "Image too large" in result.failure.message
    assert result.attempts == 1
    assert_no_secret(result.failure.message, repr(result))
    await client.close()


async def test_a_slow_provider_runs_into_the_deadline_without_blaming_the_key() -> None:
    async def handler(key: str, body: dict[str, Any]) -> httpx2.Response:
        await asyncio.sleep(0.3)
        return completion(json.dumps(VERDICT))

    # the mock transport does not enforce timeouts, so the deadline must cut the wait itself
    client = make_client(Provider(handler))
    started = time.monotonic()
    result = await assess(client, deadline_s=0.1)
    elapsed = time.monotonic() - started
    assert result.failure is not None
    assert result.failure.kind == "deadline_exceeded"
    assert elapsed < 0.25
    assert {s.state for s in client.pool.snapshot()} == {KeyState.ENABLED}
    assert all(s.in_flight == 0 for s in client.pool.snapshot())
    await client.close()


async def test_failing_keys_are_retried_until_the_deadline() -> None:
    # every key 503s: each is tried, cools down (0.05 s), and is tried again until the deadline
    client = make_client(Provider(lambda key, body: error(503)), min_cooldown=0.05)
    result = await assess(client, deadline_s=0.5)
    assert result.failure is not None and result.failure.kind in ("deadline_exceeded", "no_usable_keys")
    assert "HTTP 503" in result.failure.message
    assert result.attempts >= 6
    await client.close()


async def test_cancelling_an_assessment_returns_its_lease() -> None:
    async def handler(key: str, body: dict[str, Any]) -> httpx2.Response:
        await asyncio.sleep(10)
        return completion(json.dumps(VERDICT))

    client = make_client(Provider(handler))
    task = asyncio.create_task(assess(client))
    await asyncio.sleep(0.05)
    assert sum(s.in_flight for s in client.pool.snapshot()) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    snapshot = client.pool.snapshot()
    assert sum(s.in_flight for s in snapshot) == 0
    assert {s.state for s in snapshot} == {KeyState.ENABLED}
    await client.close()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "2"}, 2.0),
        ({"retry-after": "junk"}, None),
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after": "99999999"}, 3600.0),
        ({}, None),
    ],
)
def test_retry_after_parsing(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_s(headers) == expected


def test_retry_after_as_an_http_date() -> None:
    value = retry_after_s({"retry-after": formatdate(time.time() + 30, usegmt=True)})
    assert value is not None and 28 <= value <= 31


@pytest.mark.parametrize(
    "response",
    [
        httpx2.Response(200, text="<html>proxy error</html>", headers={"content-type": "text/html"}),
        httpx2.Response(200, text="{truncated", headers={"content-type": "application/json"}),
        httpx2.Response(200, json={"unexpected": True}),
    ],
)
async def test_a_garbled_200_counts_as_a_server_error_and_fails_over(response: httpx2.Response) -> None:
    provider = Provider(lambda key, body: response if key == "a" else completion(json.dumps(VERDICT)))
    client = make_client(provider)
    result = await assess(client)
    assert result.ok and result.key_id == "b" and result.attempts == 2
    assert state(client, "a") is KeyState.COOLING
    await client.close()


async def test_an_invalid_reply_counts_as_a_failed_call_without_cooling_the_key() -> None:
    registry = CollectorRegistry()
    client = make_client(Provider(lambda key, body: completion("No JSON from me.")), keys="a", registry=registry)
    result = await assess(client)
    assert result.failure_kind == "invalid_reply" and result.attempts == 2
    calls = registry.get_sample_value("llm_calls_total", {"key_id": "a", "outcome": "invalid_reply"})
    assert calls == 2
    assert registry.get_sample_value("llm_calls_total", {"key_id": "a", "outcome": "success"}) is None
    assert registry.get_sample_value("api_key_success_rate", {"key_id": "a"}) == 0.0
    snapshot = client.pool.snapshot()[0]
    assert snapshot.state is KeyState.ENABLED and snapshot.failures == 2 and snapshot.successes == 0
    await client.close()


async def test_a_repaired_reply_counts_one_failure_and_one_success() -> None:
    registry = CollectorRegistry()
    replies = iter(["<think>the car {is close}</think> risk: low", "Sure! " + json.dumps(VERDICT) + " Done."])
    client = make_client(Provider(lambda key, body: completion(next(replies))), keys="a", registry=registry)
    result = await assess(client)
    assert result.ok and result.attempts == 1 + 1
    assert registry.get_sample_value("api_key_success_rate", {"key_id": "a"}) == 0.5
    await client.close()


@pytest.mark.parametrize(
    "response",
    [
        httpx2.Response(
            200, content=b'{"choices": "\xff\xfe"}' + b"\xff\xfe\xfd", headers={"content-type": "application/json"}
        ),
        httpx2.Response(200, content=b"[" * 100_000 + b"]" * 100_000, headers={"content-type": "application/json"}),
        httpx2.Response(
            200, content=b'{"choices": [' + b"9" * 5000 + b"]}", headers={"content-type": "application/json"}
        ),
    ],
    ids=["not-utf8", "deep", "huge-int"],
)
async def test_an_undecodable_200_is_caught_and_fails_over(response: httpx2.Response) -> None:
    provider = Provider(lambda key, body: response if key == "a" else completion(json.dumps(VERDICT)))
    client = make_client(provider)
    result = await assess(client)
    assert result.ok and result.key_id == "b" and result.attempts == 2
    assert state(client, "a") is KeyState.COOLING
    await client.close()


async def test_stopping_hands_back_an_assessment_waiting_out_a_cooldown_at_once() -> None:
    # the endpoint is gone: every key 503s and cools for 5 s, so the task would wait until its deadline
    client = make_client(Provider(lambda key, body: error(503)), min_cooldown=5.0)
    waiting = asyncio.create_task(assess(client, deadline_s=30.0))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    assert client.stop_assessing() == 1
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert time.monotonic() - started < 0.05
    with pytest.raises(asyncio.CancelledError):
        await assess(client)  # nothing new starts
    assert sum(s.in_flight for s in client.pool.snapshot()) == 0
    await client.close()


async def test_stopping_lets_a_call_in_flight_end_with_its_verdict() -> None:
    async def slow(key: str, body: dict[str, Any]) -> httpx2.Response:
        await asyncio.sleep(0.2)
        return completion(json.dumps(VERDICT))

    client = make_client(Provider(slow))
    in_call = asyncio.create_task(assess(client))
    await asyncio.sleep(0.05)
    assert client.stop_assessing() == 0
    assert (await in_call).ok
    await client.close()
