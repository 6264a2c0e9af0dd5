"""The LLM client and key pool against the real simulator over HTTP: pacing, revoked keys, injected faults."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from riskwatch.domain import RiskLevel
from riskwatch_llmsim import KeyPolicy, RunningSimulator, SimulatorConfig, start_simulator
from riskwatch_llmsim.testing import sample_features
from riskwatch_scheduler.keypool import KeyPool, KeyState
from riskwatch_scheduler.keys_config import ApiKeysConfig
from riskwatch_scheduler.llm_client import Assessment, LlmClient

KEY_IDS = [f"key-{i:03d}" for i in range(1, 4)]
TOKENS = {key_id: f"sk-sim-{key_id}-7d1e0c" for key_id in KEY_IDS}
FEATURES = sample_features(vehicles=1, pedestrians=1, min_ped_vehicle_distance=0.8)
# the simulator checks the JPEG magic only
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 2000

SimFactory = Callable[..., Any]


@pytest.fixture
async def simulator() -> AsyncIterator[Callable[..., Any]]:
    running: list[RunningSimulator] = []

    async def start(**overrides: Any) -> RunningSimulator:
        settings: dict[str, Any] = {
            "keys": {k: SecretStr(v) for k, v in TOKENS.items()},
            "strict_keys": True,
            "qps": 10,
            "rpm": 600,
            "rate_limit_grace_s": 0.0,  # no slack: our pacing alone must keep us out of 429s
            "latency_median_s": 0.05,
            "latency_sigma": 0.2,
            "seed": 7,
        }
        config = SimulatorConfig(**(settings | overrides))
        sim = await start_simulator(config, port=0)
        running.append(sim)
        return sim

    yield start
    for sim in running:
        await sim.stop()


def make_client(
    sim: RunningSimulator, *, qps: float = 10, rpm: int = 600, min_cooldown: float = 0.2, timeout_s: float = 2.0
) -> LlmClient:
    config = ApiKeysConfig.from_mapping(
        {
            "default_base_url": sim.base_url,
            "default_model": "riskwatch-sim-vl",
            "request_timeout_s": timeout_s,
            "cooling": {"min_cooldown": min_cooldown, "max_cooldown": 2.0},
            "keys": [{"id": k, "api_key": TOKENS[k], "qps_limit": qps, "rpm_limit": rpm} for k in KEY_IDS],
        }
    )
    return LlmClient(config, KeyPool.from_config(config, registry=CollectorRegistry()))


async def run_load(client: LlmClient, tasks: int, concurrency: int, deadline_s: float = 10.0) -> list[Assessment]:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> Assessment:
        async with gate:
            return await client.assess(
                camera_id="cam-1", features=FEATURES, crop_jpeg=JPEG, deadline=time.monotonic() + deadline_s
            )

    return await asyncio.gather(*(one() for _ in range(tasks)))


async def test_pacing_at_the_exact_limits_draws_no_429_and_uses_the_quota(simulator: SimFactory) -> None:
    sim = await simulator()
    client = make_client(sim)
    started = time.monotonic()
    results = await run_load(client, tasks=90, concurrency=60)
    elapsed = time.monotonic() - started
    stats = sim.stats()["totals"]
    assert stats["http_429"] == 0
    assert all(r.ok for r in results), [r.failure for r in results if not r.ok][:3]
    assert Counter(r.key_id for r in results) == {k: 30 for k in KEY_IDS}
    # 90 calls at 3 keys x 10/s: 3 s of quota, less the first burst of 5 per key
    assert 2.3 < elapsed < 4.5
    assert results[0].verdict is not None and results[0].verdict.risk_level in (RiskLevel.MEDIUM, RiskLevel.HIGH)
    await client.close()


async def test_a_revoked_key_is_disabled_and_traffic_moves_to_the_others(
    simulator: SimFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await simulator(per_key={"key-002": KeyPolicy(revoked=True)})
    client = make_client(sim)
    with caplog.at_level(logging.DEBUG):
        results = await run_load(client, tasks=30, concurrency=10)
    assert all(r.ok for r in results)
    assert "key-002" not in {r.key_id for r in results}
    # only calls sent before the first 401 came back reach it: at most its burst (5) and a refill or two
    assert 1 <= sim.stats()["keys"]["key-002"]["http_401"] <= 7
    assert next(s for s in client.pool.snapshot() if s.key_id == "key-002").state is KeyState.DISABLED
    for token in TOKENS.values():
        assert token not in caplog.text
        assert all(token not in repr(r) for r in results)
    await client.close()


async def test_injected_faults_are_survived_by_failover_and_repair(simulator: SimFactory) -> None:
    sim = await simulator(
        per_key={"key-001": KeyPolicy(fault_5xx=0.5), "key-003": KeyPolicy(fault_invalid_json=0.5)},
    )
    client = make_client(sim, min_cooldown=0.05)
    results = await run_load(client, tasks=40, concurrency=10)
    stats = sim.stats()["keys"]
    assert stats["key-001"]["http_5xx"] > 0 and stats["key-003"]["invalid_json"] > 0
    assert sum(r.ok for r in results) >= 38
    assert sim.stats()["totals"]["http_429"] == 0
    await client.close()


async def test_a_hanging_key_times_out_cools_and_the_call_moves_on(simulator: SimFactory) -> None:
    sim = await simulator(per_key={"key-001": KeyPolicy(fault_timeout=1.0)}, timeout_hang_s=30)
    client = make_client(sim, timeout_s=0.5)
    result = await client.assess(camera_id="cam-1", features=FEATURES, crop_jpeg=JPEG, deadline=time.monotonic() + 5)
    assert result.ok and result.key_id != "key-001" and result.attempts == 2
    assert next(s for s in client.pool.snapshot() if s.key_id == "key-001").failures == 1
    await client.close()


async def test_a_deadline_shorter_than_the_reply_fails_typed_and_blames_no_key(simulator: SimFactory) -> None:
    sim = await simulator(latency_median_s=1.0, latency_sigma=0.0)
    client = make_client(sim)
    started = time.monotonic()
    result = await client.assess(camera_id="cam-1", features=FEATURES, crop_jpeg=JPEG, deadline=time.monotonic() + 0.3)
    assert time.monotonic() - started < 0.6
    assert result.failure is not None and result.failure.kind == "deadline_exceeded"
    assert {s.state for s in client.pool.snapshot()} == {KeyState.ENABLED}
    await client.close()
