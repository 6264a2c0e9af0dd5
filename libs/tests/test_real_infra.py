"""The Kafka bus and the Redis cache against the real broker and server (`make infra-up`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable

import pytest

from riskwatch.bus.kafka import KafkaBus, wait_for_broker
from riskwatch.cache import RedisCache
from riskwatch.errors import Unavailable
from tests.support.stack import BOOTSTRAP, REDIS_URL

pytestmark = pytest.mark.infra


async def _poll_until(consumer, count: int, timeout: float = 30.0) -> list:  # type: ignore[no-untyped-def]
    got: list = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got.extend(await consumer.poll(timeout_s=0.5))
    return got


async def test_kafka_publish_is_acknowledged_and_keys_keep_order(topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=3)
    bus = KafkaBus(BOOTSTRAP)
    try:
        for i in range(20):
            await bus.publish(topic, "cam-1", str(i).encode())
        consumer = bus.consumer(f"g-{uuid.uuid4().hex}", [topic])
        records = await _poll_until(consumer, 20)
        assert [int(r.value) for r in records] == list(range(20))
        assert len({r.partition for r in records}) == 1
        await consumer.close()
    finally:
        await bus.close()


async def test_kafka_uncommitted_records_are_redelivered(topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=1)
    group = f"g-{uuid.uuid4().hex}"
    bus = KafkaBus(BOOTSTRAP)
    try:
        for i in range(5):
            await bus.publish(topic, "cam", str(i).encode())
        first = bus.consumer(group, [topic])
        records = await _poll_until(first, 5)
        first.ack(records[0])
        first.ack(records[1])
        first.ack(records[3])  # 2 is still in flight: only 0 and 1 may be committed
        await first.close()
        second = bus.consumer(group, [topic])
        again = await _poll_until(second, 3)
        assert [int(r.value) for r in again] == [2, 3, 4]
        await second.close()
    finally:
        await bus.close()


async def test_redis_cache_values_streams_and_pubsub(redis_prefix: str) -> None:
    cache = RedisCache(REDIS_URL, prefix=redis_prefix)
    try:
        assert await cache.ping()
        await cache.set("state:cam", b"v1", ttl_s=60)
        assert await cache.get("state:cam") == b"v1"
        for i in range(15):
            await cache.stream_add("alerts:cam", str(i).encode(), maxlen=10)
        assert await cache.stream_tail("alerts:cam", 3) == [b"12", b"13", b"14"]
        assert len(await cache.stream_tail("alerts:cam", 100)) == 10
        async with cache.subscribe("risk-state") as messages:
            await cache.publish("risk-state", b"hello")
            async with asyncio.timeout(5):
                assert await anext(messages) == b"hello"
    finally:
        await cache.close()


def test_a_stage_refuses_to_start_without_its_topics(topic_factory: Callable[..., str]) -> None:
    """Publishing to a missing topic would be retried forever; the service says what to do and exits 2 instead."""
    present = topic_factory("present", partitions=1)
    missing = f"never-created-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "ALGO_ENABLE_KAFKA_STREAMING": "true",
        "ALGO_KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
        "ALGO_METRICS_PORT": "0",
        "ALGO_KAFKA__TOPICS__DETECTION_RESULTS__NAME": present,
        "ALGO_KAFKA__TOPICS__TASK_DECISIONS__NAME": missing,
    }
    done = subprocess.run(
        [sys.executable, "-m", "riskwatch_scheduler", "task-generator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert missing in done.stderr and "make topics" in done.stderr, done.stderr[-2000:]
    assert f"{present}," not in done.stderr  # only what is missing is named


def test_wait_for_broker_returns_the_topics(topic_factory: Callable[..., str]) -> None:
    topic = topic_factory("listed", partitions=2)
    topics = wait_for_broker(BOOTSTRAP, {})
    assert len(topics[topic].partitions) == 2


def test_wait_for_broker_logs_each_retry_and_gives_up_when_stopped(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens on port 1: each failed attempt is logged with the wait, and setting `stop` ends the wait."""
    stop = threading.Event()
    timer = threading.Timer(5.5, stop.set)  # after the first attempt (5 s) fails, during the 1 s wait
    timer.start()
    try:
        with pytest.raises(Unavailable, match=r"Kafka at 127\.0\.0\.1:1 is unreachable"):
            wait_for_broker("127.0.0.1:1", {}, stop=stop)
    finally:
        timer.cancel()
    assert "Failed to connect to Kafka at 127.0.0.1:1 (" in caplog.text
    assert "); retrying in 1 s" in caplog.text
