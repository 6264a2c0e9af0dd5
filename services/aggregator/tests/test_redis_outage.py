"""The aggregator on real Kafka and Redis while Redis is stopped and started again (`make infra-up`)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from riskwatch import events
from riskwatch.bus.kafka import KafkaBus
from riskwatch.cache import RedisCache, keys
from riskwatch.errors import Unavailable
from riskwatch.v1 import events_pb2
from riskwatch_aggregator.app import AggregatorApp
from riskwatch_aggregator.config import AggregatorSettings
from tests.support.stack import BOOTSTRAP, REDIS_URL

pytestmark = pytest.mark.infra

INFRA = Path(__file__).resolve().parents[3] / "deploy" / "local" / "infra.sh"
T0 = 1_800_000_000.0


def infra(command: str) -> None:
    subprocess.run(["bash", str(INFRA), command], check=True, capture_output=True, timeout=60)


@pytest.fixture
def redis_restored() -> Iterator[None]:
    """Whatever happens in the test, Redis runs again afterwards."""
    try:
        yield
    finally:
        infra("redis-start")


def result(frame: int, level: int, group: str) -> bytes:
    event_id = events.event_id("cam-1", frame)
    msg = events_pb2.AssessmentResult(
        task_id=events.task_id(event_id, group),
        event_id=event_id,
        camera_id="cam-1",
        frame_id=frame,
        group_id=group,
        capture_time=events.timestamp(T0 + frame * 0.5),
        verdict=events_pb2.Verdict(risk_level=level),  # type: ignore[arg-type]
    )
    return msg.SerializeToString()


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


async def test_redis_stopped_mid_run_state_is_kept_written_back_and_survives_a_crash(
    topic_factory: Callable[..., str], redis_prefix: str, redis_restored: None
) -> None:
    topic = topic_factory("agg-results", partitions=1)
    conf = AggregatorSettings.model_validate(
        {
            "enable_kafka_streaming": True,
            "kafka": {
                "bootstrap_servers": [BOOTSTRAP],
                "topics": {"risk_assessment_results": {"name": topic}},
                "consumer_groups": {"aggregator": f"agg-{uuid.uuid4().hex[:10]}"},
            },
            "redis": {"url": REDIS_URL, "key_prefix": redis_prefix},
            "aggregator": {"cache_retry_s": 0.2, "cache_retry_max_s": 0.5},
            "shutdown_grace_s": 1,
        }
    )
    bus = KafkaBus(BOOTSTRAP)
    cache = RedisCache(REDIS_URL, prefix=redis_prefix)

    async def groups_in_redis() -> set[str]:
        try:
            data = await cache.get(keys.camera_state("cam-1"))
        except Unavailable:
            return set()
        return {g.group_id for g in events_pb2.CameraRiskState.FromString(data).groups} if data else set()

    try:
        app = AggregatorApp(conf, bus, cache)
        await app.start()
        await bus.publish(topic, "cam-1", result(1, events_pb2.RISK_LEVEL_LOW, "g1"))
        await until(lambda: _has(groups_in_redis, {"g1"}))

        # 1. Redis stops mid-run: results keep being applied in memory, nothing crashes
        infra("redis-stop")
        await bus.publish(topic, "cam-1", result(2, events_pb2.RISK_LEVEL_HIGH, "g2"))
        await until(lambda: _in_memory(app, {"g1", "g2"}))
        assert app.stage._runner is not None and not app.stage._runner.done()

        # 2. Redis returns: the state is written back
        infra("redis-start")
        await until(lambda: _has(groups_in_redis, {"g1", "g2"}))
        data = await cache.get(keys.camera_state("cam-1"))
        assert data is not None and events_pb2.CameraRiskState.FromString(data).max_level == events_pb2.RISK_LEVEL_HIGH
        assert len(await cache.stream_tail(keys.camera_alerts("cam-1"), 10)) == 2

        # 3. Redis stops again and the aggregator dies before it returns: the result was not
        #    acknowledged, so a restarted aggregator gets it again and writes it
        infra("redis-stop")
        await bus.publish(topic, "cam-1", result(3, events_pb2.RISK_LEVEL_MEDIUM, "g3"))
        await until(lambda: _in_memory(app, {"g1", "g2", "g3"}))
        await app.stop()
        infra("redis-start")
        assert await groups_in_redis() == {"g1", "g2"}
        restarted = AggregatorApp(conf, bus, cache)
        await restarted.start()
        try:
            await until(lambda: _has(groups_in_redis, {"g1", "g2", "g3"}), timeout=30)
        finally:
            await restarted.stop()
    finally:
        await bus.close()
        await cache.close()


async def _has(read: Callable[[], Awaitable[set[str]]], want: set[str]) -> bool:
    return await read() == want


async def _in_memory(app: AggregatorApp, want: set[str]) -> bool:
    state = app.aggregator.state("cam-1")
    return state is not None and {g.group_id for g in state.groups} == want
