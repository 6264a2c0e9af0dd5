"""Stopping the LLM scheduler while the LLM endpoint is gone: prompt, and the task handed back uncommitted."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from prometheus_client import CollectorRegistry

from riskwatch import events
from riskwatch.bus import InMemoryBus
from riskwatch.cache import InMemoryCache
from riskwatch.v1 import events_pb2
from riskwatch_scheduler.app import LlmSchedulerApp
from riskwatch_scheduler.config import LlmSchedulerConfig, LlmSchedulerSettings
from riskwatch_scheduler.keypool import KeyPool
from riskwatch_scheduler.keys_config import ApiKeysConfig
from riskwatch_scheduler.llm_client import LlmClient


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("concurrency", [200, 1])  # with 1 the stage runs the handler in its own loop
async def test_stop_hands_back_a_task_waiting_for_a_gone_endpoint_within_a_second(concurrency: int) -> None:
    # shutdown_grace_s 30: before, stopping waited for the task to fail at its deadline (15-30 s), then committed it
    settings = LlmSchedulerSettings(scheduler=LlmSchedulerConfig(max_records_in_flight=concurrency))
    config = ApiKeysConfig.from_mapping(
        {
            "default_base_url": f"http://127.0.0.1:{closed_port()}/v1",
            "default_model": "vision-test",
            "cooling": {"min_cooldown": 5.0, "max_cooldown": 60},
            "keys": [{"id": "k1", "api_key": "sk-test-k1", "qps_limit": 10, "rpm_limit": 600}],
        }
    )
    llm = LlmClient(config, KeyPool.from_config(config, registry=CollectorRegistry()))
    bus = InMemoryBus(partitions=1)
    topics = settings.kafka.topics
    app = LlmSchedulerApp(settings, bus, llm, InMemoryCache())
    task = events_pb2.AssessmentTask(
        task_id="cam-1:1/g-1",
        camera_id="cam-1",
        group_id="g-1",
        crop_jpeg=b"\xff\xd8\xff\xe0",
        capture_time=events.timestamp(),
        deadline=events.timestamp(time.time() + 30),
    )
    await app.start()
    await bus.publish(topics.assessment_tasks.name, "cam-1", task.SerializeToString())
    for _ in range(100):  # the connection is refused, the key cools: the task waits for it
        await asyncio.sleep(0.05)
        if llm.pool.snapshot()[0].failures:
            break
    await asyncio.sleep(0.05)
    assert llm.pool.snapshot()[0].failures == 1
    started = time.monotonic()
    await app.stop()
    assert time.monotonic() - started < 1.0
    assert bus.records(topics.risk_assessment_results.name) == []  # no failure was made up for it
    # handed back: the group's next consumer gets the task again
    again = bus.consumer(settings.kafka.consumer_groups.scheduler, [topics.assessment_tasks.name])
    records = await again.poll(timeout_s=0.5)
    assert [events_pb2.AssessmentTask.FromString(r.value).task_id for r in records] == [task.task_id]
    await again.close()
