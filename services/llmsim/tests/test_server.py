"""The simulator behaves like a rate-limited, occasionally failing provider to the real openai client."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import openai
import pytest

from riskwatch.domain import VERDICT_LEVELS
from riskwatch_llmsim import RunningSimulator, verdict_for
from riskwatch_llmsim.testing import chat_messages, chat_request, jpeg_data_uri, sample_features
from riskwatch_llmsim.verdicts import VERDICT_KEYS

StartSimulator = Callable[..., Awaitable[RunningSimulator]]
MakeClient = Callable[..., openai.AsyncOpenAI]
# the same keys as the conftest fixtures (conftest itself is not importable under importlib mode)
KEYS = {"key-001": "sim-key-001-SECRET", "key-002": "sim-key-002-SECRET", "key-003": "sim-key-003-SECRET"}

CONFLICT = sample_features(pedestrians=2, vehicles=1, min_ped_vehicle_distance=0.3, member_track_ids=[4, 9])


async def ask(client: openai.AsyncOpenAI, features: dict[str, object] = CONFLICT, **extra: Any) -> Any:
    return await client.chat.completions.create(  # type: ignore[call-overload]
        model="llmsim-vision",
        messages=chat_messages(features),  # type: ignore[arg-type]  # plain dicts, as the wire sees them
        response_format={"type": "json_object"},
        max_tokens=extra.pop("max_tokens", 300),
        temperature=0,
        **extra,
    )


async def post(
    simulator: RunningSimulator,
    path: str,
    body: Any = None,
    *,
    token: str | None = KEYS["key-001"],
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as session:
        data = raw if raw is not None else json.dumps(body).encode()
        async with session.post(simulator.url + path, data=data, headers=headers) as response:
            return response.status, await response.json()


async def get(simulator: RunningSimulator, path: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(simulator.url + path) as response:
        assert response.status == 200
        result: dict[str, Any] = await response.json()
        return result


async def test_verdict_round_trip_matches_the_oracle(start_sim: StartSimulator, make_client: MakeClient) -> None:
    simulator = await start_sim()
    client = make_client(simulator)
    completion = await ask(client)
    assert completion.object == "chat.completion"
    assert completion.model == "llmsim-vision"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    verdict = json.loads(completion.choices[0].message.content or "")
    assert verdict == verdict_for(CONFLICT)
    assert verdict["risk_level"] == "high"
    assert verdict["involved_track_ids"] == [4, 9]


async def test_same_features_same_reply(start_sim: StartSimulator, make_client: MakeClient) -> None:
    simulator = await start_sim(latency_median_s=0.01, seed=3)
    client = make_client(simulator)
    crowd = sample_features(pedestrians=7, density=2.5)
    replies = [(await ask(client, crowd)).choices[0].message.content for _ in range(3)]
    assert len(set(replies)) == 1
    assert json.loads(replies[0] or "")["risk_level"] == "medium"


async def test_features_without_a_fence_are_understood(start_sim: StartSimulator) -> None:
    simulator = await start_sim()
    body = chat_request(CONFLICT)
    body["messages"][1]["content"][0]["text"] = "Judge this.\nGroup features (JSON): " + json.dumps(CONFLICT)
    status, reply = await post(simulator, "/v1/chat/completions", body)
    assert status == 200
    assert json.loads(reply["choices"][0]["message"]["content"]) == verdict_for(CONFLICT)


async def test_qps_overrun_gets_429_with_retry_after(start_sim: StartSimulator, make_client: MakeClient) -> None:
    simulator = await start_sim(qps=2, rate_limit_grace_s=0)
    client = make_client(simulator)
    results = await asyncio.gather(*(ask(client) for _ in range(3)), return_exceptions=True)
    refused = [result for result in results if isinstance(result, openai.RateLimitError)]
    assert len(refused) == 1 and sum(not isinstance(result, Exception) for result in results) == 2
    headers = refused[0].response.headers
    assert headers["retry-after"] == "1"  # whole seconds, rounded up, per the HTTP spec
    assert 0 < int(headers["retry-after-ms"]) <= 500  # one token at 2 qps frees within 500 ms
    assert refused[0].code == "rate_limit_exceeded"
    stats = simulator.stats()["keys"]["key-001"]
    assert (stats["calls"], stats["ok"], stats["http_429"]) == (3, 2, 1)


async def test_rpm_overrun_retry_after_counts_to_the_freed_slot(
    start_sim: StartSimulator, make_client: MakeClient
) -> None:
    simulator = await start_sim(rpm=3, rate_limit_grace_s=0)
    client = make_client(simulator)
    for _ in range(3):
        await ask(client)
    with pytest.raises(openai.RateLimitError) as refused:
        await ask(client)
    assert 19 <= int(refused.value.response.headers["retry-after"]) <= 20


async def test_pacing_exactly_at_the_limit_gets_no_429(start_sim: StartSimulator, make_client: MakeClient) -> None:
    qps = 10
    simulator = await start_sim(qps=qps, rpm=qps * 60)
    client = make_client(simulator)
    # warm the client's connection pool: otherwise TCP handshakes delay the burst by tens of ms
    # and the paced requests after it look early, which a provider would rightly refuse
    await asyncio.gather(*(ask(client) for _ in range(qps)))
    simulator.reset(limits=True)
    # a full burst, then one request per 1/qps seconds on an absolute schedule, as a token-bucket
    # client would send them
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def at(offset_s: float) -> Any:
        await asyncio.sleep(max(0.0, start + offset_s - loop.time()))
        return await ask(client)

    offsets = [0.0] * qps + [(n + 1) / qps for n in range(15)]
    results = await asyncio.gather(*(at(offset) for offset in offsets), return_exceptions=True)
    assert [result for result in results if isinstance(result, Exception)] == []
    assert simulator.stats()["totals"]["http_429"] == 0

    # and one request beyond the burst is refused
    simulator.reset(limits=True)
    results = await asyncio.gather(*(ask(client) for _ in range(qps + 1)), return_exceptions=True)
    assert sum(isinstance(result, openai.RateLimitError) for result in results) == 1


async def test_revoked_key_gets_401(start_sim: StartSimulator, make_client: MakeClient) -> None:
    simulator = await start_sim(per_key={"key-002": {"revoked": True}})
    with pytest.raises(openai.AuthenticationError) as refused:
        await ask(make_client(simulator, "key-002"))
    assert KEYS["key-002"] not in str(refused.value)
    await ask(make_client(simulator, "key-001"))
    assert simulator.stats()["keys"]["key-002"]["http_401"] == 1


async def test_unknown_tokens_accepted_unless_strict(start_sim: StartSimulator, make_client: MakeClient) -> None:
    lenient = await start_sim()
    await ask(make_client(lenient, token="someone-elses-token"))
    (label,) = [label for label in lenient.stats()["keys"] if label.startswith("unknown-")]
    assert lenient.stats()["keys"][label]["ok"] == 1

    strict = await start_sim(strict_keys=True)
    with pytest.raises(openai.AuthenticationError):
        await ask(make_client(strict, token="someone-elses-token"))

    status, body = await post(strict, "/v1/chat/completions", chat_request(CONFLICT), token=None)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert strict.stats()["keys"]["anonymous"]["http_401"] == 1


async def run_faulty_batch(simulator: RunningSimulator, client: openai.AsyncOpenAI, n: int) -> Counter[str]:
    gate = asyncio.Semaphore(50)

    async def one() -> str:
        async with gate:
            try:
                completion = await ask(client)
            except openai.InternalServerError as error:
                assert error.status_code in (500, 503)
                return "5xx"
            try:
                verdict = json.loads(completion.choices[0].message.content or "")
            except json.JSONDecodeError:
                return "invalid_json"
            return "ok" if verdict == verdict_for(CONFLICT) else "invalid_json"

    return Counter(await asyncio.gather(*(one() for _ in range(n))))


async def test_fault_rates_are_honoured_and_reproducible(start_sim: StartSimulator, make_client: MakeClient) -> None:
    settings = {"seed": 11, "fault_5xx": 0.2, "fault_invalid_json": 0.1}
    first = await start_sim(**settings)
    outcomes = await run_faulty_batch(first, make_client(first), 400)
    # 4 sigma bands around 80 and 40
    assert 50 <= outcomes["5xx"] <= 110
    assert 20 <= outcomes["invalid_json"] <= 60
    stats = first.stats()["keys"]["key-001"]
    assert (stats["http_5xx"], stats["invalid_json"], stats["ok"]) == (
        outcomes["5xx"],
        outcomes["invalid_json"],
        outcomes["ok"],
    )
    # the same seed gives the same counts, whatever order concurrent requests arrived in
    second = await start_sim(**settings)
    assert await run_faulty_batch(second, make_client(second), 400) == outcomes


async def test_timeout_fault_outlasts_the_client(start_sim: StartSimulator, make_client: MakeClient) -> None:
    simulator = await start_sim(per_key={"key-003": {"fault_timeout": 1.0}})
    with pytest.raises(openai.APITimeoutError):
        await ask(make_client(simulator, "key-003", timeout=0.3))
    await ask(make_client(simulator, "key-001"))  # other keys are unaffected
    # the client hung up, so the hanging request stops counting as in flight
    for _ in range(50):
        if simulator.stats()["totals"]["in_flight"] == 0:
            break
        await asyncio.sleep(0.02)
    stats = simulator.stats()["keys"]["key-003"]
    assert (stats["timeouts"], stats["in_flight"]) == (1, 0)


async def test_timeout_fault_ends_in_504_for_a_patient_client(
    start_sim: StartSimulator, make_client: MakeClient
) -> None:
    simulator = await start_sim(fault_timeout=1.0, timeout_hang_s=0.2)
    with pytest.raises(openai.InternalServerError) as failed:
        await ask(make_client(simulator, timeout=3.0))
    assert failed.value.status_code == 504


@pytest.mark.parametrize(
    "mode", ["prose", "truncated", "missing_fields", "bad_values", "fenced", "think", "prose_around"]
)
async def test_invalid_json_modes(start_sim: StartSimulator, make_client: MakeClient, mode: str) -> None:
    simulator = await start_sim(fault_invalid_json=1.0, invalid_json_modes=[mode], seed=1)
    content = (await ask(make_client(simulator))).choices[0].message.content or ""
    if mode in ("prose", "truncated"):
        with pytest.raises(json.JSONDecodeError):
            json.loads(content)
    elif mode == "missing_fields":
        assert len(set(VERDICT_KEYS) - set(json.loads(content))) == 1
    elif mode == "bad_values":
        assert json.loads(content)["risk_level"] not in [level.label for level in VERDICT_LEVELS]
    elif mode == "fenced":
        assert content.startswith("```json")
        assert json.loads(content.removeprefix("```json").removesuffix("```")) == verdict_for(CONFLICT)
    else:
        with pytest.raises(json.JSONDecodeError):
            json.loads(content)
        if mode == "think":  # a draft verdict inside the block, the real one after it
            thought, answer = content.split("</think>")
            assert thought.startswith("<think>") and '"risk_level": "none"' in thought
        else:
            answer = content.split("\n")[1]
        assert json.loads(answer) == verdict_for(CONFLICT)
    assert simulator.stats()["keys"]["key-001"]["invalid_json"] == 1


async def test_stats_config_errors_and_logs_never_show_tokens(
    start_sim: StartSimulator, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    simulator = await start_sim(qps=1, rate_limit_grace_s=0, per_key={"key-002": {"revoked": True}})
    stray = "stray-token-SECRET"
    errors: list[str] = []
    for client in (
        make_client(simulator, "key-001"),
        make_client(simulator, "key-002"),
        make_client(simulator, token=stray),
    ):
        for _ in range(2):
            try:
                await ask(client)
            except openai.APIStatusError as error:
                errors.append(error.response.text)
    simulator.reconfigure({"fault_5xx": 0.5, "per_key": {"key-003": {"revoked": True}}})
    assert len(errors) == 4  # two 429s and two 401s
    exposed = [
        json.dumps(await get(simulator, "/_stats")),
        json.dumps(await get(simulator, "/_config")),
        *errors,
        caplog.text,
    ]
    for secret in [*KEYS.values(), stray]:
        assert not any(secret in text for text in exposed)
    assert set((await get(simulator, "/_stats"))["keys"]) >= {"key-001", "key-002"}


async def test_control_changes_behaviour_at_runtime(start_sim: StartSimulator, make_client: MakeClient) -> None:
    simulator = await start_sim()
    client = make_client(simulator, "key-003")
    await ask(client)

    status, view = await post(simulator, "/_control", {"per_key": {"key-003": {"revoked": True}}})
    assert status == 200 and view["per_key"]["key-003"]["revoked"] is True
    with pytest.raises(openai.AuthenticationError):
        await ask(client)
    await ask(make_client(simulator, "key-001"))

    await post(simulator, "/_control", {"per_key": {"key-003": None}, "fault_5xx": 1.0})
    with pytest.raises(openai.InternalServerError):
        await ask(client)

    await post(simulator, "/_control", {"fault_5xx": 0.0, "latency_median_s": 0.3, "latency_sigma": 0.0})
    began = time.perf_counter()
    await ask(client)
    assert time.perf_counter() - began >= 0.29

    status, error = await post(simulator, "/_control", {"fault_5xx": 0.7, "fault_timeout": 0.7})
    assert status == 400 and "fault probabilities" in error["error"]["message"]
    assert simulator.config.fault_5xx == 0.0
    status, error = await post(simulator, "/_control", {"qps_limit": 3})
    assert status == 400 and "qps_limit" in error["error"]["message"]

    status, stats = await post(simulator, "/_reset", {})
    assert status == 200 and stats["totals"]["calls"] == 0
    assert (await get(simulator, "/healthz")) == {"status": "ok"}


async def test_rate_limits_change_at_runtime(start_sim: StartSimulator, make_client: MakeClient) -> None:
    simulator = await start_sim()
    client = make_client(simulator)
    await asyncio.gather(*(ask(client) for _ in range(5)))
    simulator.reconfigure({"per_key": {"key-001": {"qps": 1}}, "rate_limit_grace_s": 0})
    await ask(client)
    with pytest.raises(openai.RateLimitError):
        await ask(client)


def with_text(text: str) -> dict[str, Any]:
    body = chat_request(CONFLICT)
    body["messages"][1]["content"][0]["text"] = text
    return body


def with_image_url(url: str) -> dict[str, Any]:
    body = chat_request(CONFLICT)
    body["messages"][1]["content"][1]["image_url"]["url"] = url
    return body


def without_feature(key: str) -> dict[str, Any]:
    features = dict(CONFLICT)
    del features[key]
    return chat_request(features)


def user_as_string() -> dict[str, Any]:
    body = chat_request(CONFLICT)
    body["messages"][1]["content"] = "Group features (JSON): " + json.dumps(CONFLICT)
    return body


@pytest.mark.parametrize(
    ("body", "code", "mentions"),
    [
        (b"{not json", "invalid_json", "JSON"),
        (b"[1, 2]", "invalid_json", "object"),
        ({"messages": chat_request(CONFLICT)["messages"]}, "missing_required_parameter", "model"),
        (with_text("Is this dangerous?"), "invalid_features", "Group features"),
        (with_text('Group features (JSON):\n```json\n{"camera_id": \n```'), "invalid_features", "JSON"),
        (without_feature("density"), "invalid_features", "density"),
        (chat_request({**CONFLICT, "pedestrians": "two"}), "invalid_features", "pedestrians"),
        (with_image_url("data:image/png;base64,iVBORw0KGgo="), "invalid_image_url", "jpeg"),
        (with_image_url("https://example.com/frame.jpg"), "invalid_image_url", "jpeg"),
        (with_image_url("data:image/jpeg;base64,iVBORw0KGgo="), "invalid_image_format", "JPEG"),
        (user_as_string(), "invalid_value", "image_url"),
        ({**chat_request(CONFLICT), "temperature": 3}, "invalid_value", "temperature"),
    ],
)
async def test_bad_body_gets_400(
    start_sim: StartSimulator, body: dict[str, Any] | bytes, code: str, mentions: str
) -> None:
    simulator = await start_sim()
    if isinstance(body, bytes):
        status, error = await post(simulator, "/v1/chat/completions", raw=body)
    else:
        status, error = await post(simulator, "/v1/chat/completions", body)
    assert status == 400
    assert set(error["error"]) >= {"message", "type", "code"}
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["code"] == code
    assert mentions.lower() in error["error"]["message"].lower()
    assert simulator.stats()["keys"]["key-001"]["http_400"] == 1


async def test_bad_request_is_a_bad_request_error_to_the_client(
    start_sim: StartSimulator, make_client: MakeClient
) -> None:
    simulator = await start_sim()
    features = dict(CONFLICT)
    del features["member_track_ids"]
    with pytest.raises(openai.BadRequestError, match="member_track_ids"):
        await ask(make_client(simulator), features)


async def test_short_max_tokens_cuts_the_reply(start_sim: StartSimulator, make_client: MakeClient) -> None:
    simulator = await start_sim()
    completion = await ask(make_client(simulator), max_tokens=5)
    assert completion.choices[0].finish_reason == "length"
    assert len(completion.choices[0].message.content or "") == 20


async def test_unknown_model_is_404_when_models_are_listed(start_sim: StartSimulator, make_client: MakeClient) -> None:
    simulator = await start_sim(models=["gpt-4o-mini"])
    with pytest.raises(openai.NotFoundError):
        await ask(make_client(simulator))


async def test_stats_track_concurrency(start_sim: StartSimulator, make_client: MakeClient) -> None:
    simulator = await start_sim(latency_median_s=0.3, latency_sigma=0.0)
    clients = [make_client(simulator, label) for label in ("key-001", "key-002")]
    await asyncio.gather(*(ask(clients[n % 2]) for n in range(40)))
    stats = simulator.stats()
    assert stats["peak_concurrent"] == stats["totals"]["peak_concurrent"] == 40
    assert stats["keys"]["key-001"]["peak_concurrent"] == 20
    assert stats["totals"]["in_flight"] == 0
    assert stats["totals"]["ok"] == stats["totals"]["calls"] == 40


async def test_large_frames_are_accepted(start_sim: StartSimulator) -> None:
    simulator = await start_sim()
    big = chat_request(CONFLICT)
    # a 1080p-sized JPEG payload; only the magic bytes are checked
    big["messages"][1]["content"][1]["image_url"]["url"] = jpeg_data_uri(b"\xff\xd8\xff\xe0" + b"\0" * 2_000_000)
    status, _ = await post(simulator, "/v1/chat/completions", big)
    assert status == 200


async def test_stop_releases_hanging_requests(start_sim: StartSimulator, make_client: MakeClient) -> None:
    simulator = await start_sim(fault_timeout=1.0)
    pending = asyncio.create_task(ask(make_client(simulator, timeout=30.0)))
    while simulator.stats()["totals"]["timeouts"] == 0:
        await asyncio.sleep(0.01)
    began = time.perf_counter()
    await simulator.stop()
    assert time.perf_counter() - began < 1.0
    with pytest.raises(openai.APIError):
        await pending


async def test_reset_refills_limits_on_request(start_sim: StartSimulator, make_client: MakeClient) -> None:
    simulator = await start_sim(qps=1, rate_limit_grace_s=0)
    client = make_client(simulator)
    await ask(client)
    status, _ = await post(simulator, "/_reset", {})
    assert status == 200
    with pytest.raises(openai.RateLimitError):
        await ask(client)
    status, stats = await post(simulator, "/_reset", {"limits": True})
    assert status == 200 and stats["totals"]["calls"] == 0
    await ask(client)
    status, _ = await post(simulator, "/_reset", raw=b"{oops")
    assert status == 400
