"""Under steady load, kill -9 / SIGTERM each streaming service, restart the broker, stop Redis: nothing is lost.

Each case publishes DetectionEvents for its own cameras straight to detection-results for ~16 s while the fault
happens, then accounts for every event, task and result (tests/faults/ledger.py), checks that a WebSocket client
saw no duplicate, and that each camera's state in Redis is the latest verdict of each of its groups.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from tests.faults.case import after, assert_case, kill_and_restart, run_case
from tests.faults.stack import FaultStack

pytestmark = [pytest.mark.infra, pytest.mark.faults]

STAGES = ("task-generator", "llm-scheduler", "aggregator")


@pytest.mark.parametrize("service", [*STAGES, "gateway"])
async def test_kill_9_and_restart(stack: FaultStack, service: str) -> None:
    outcome: dict[str, Any] = {}

    async def fault() -> None:
        outcome.update(await kill_and_restart(stack, service, signal.SIGKILL))

    report = await run_case(stack, f"kill9-{service}", fault)
    assert outcome["exit_code"] == -signal.SIGKILL
    if service == "gateway":
        assert report.notes["ws_connections"] >= 2, "the WebSocket client never reconnected"
    assert_case(report)


@pytest.mark.parametrize("service", [*STAGES, "gateway"])
async def test_sigterm_drains(stack: FaultStack, service: str) -> None:
    outcome: dict[str, Any] = {}

    async def fault() -> None:
        outcome.update(await kill_and_restart(stack, service, signal.SIGTERM))

    report = await run_case(stack, f"sigterm-{service}", fault)
    assert outcome["exit_code"] == 0, outcome["log"][-3000:]
    said = "stopped, offsets committed" if service in STAGES else "gateway stopped"
    assert said in outcome["log"], outcome["log"][-3000:]
    assert_case(report)


async def test_kafka_broker_restart(stack: FaultStack) -> None:
    assert stack.infra is not None
    infra = stack.infra

    async def fault() -> None:
        await after(4)
        try:
            await asyncio.to_thread(infra.kafka_stop)
            await after(2)
        finally:
            await asyncio.to_thread(infra.kafka_start)

    report = await run_case(stack, "kafka-restart", fault, duration=16)
    assert_case(report)


async def test_redis_down_30s(stack: FaultStack) -> None:
    assert stack.infra is not None
    infra = stack.infra
    mark = stack.log_size("aggregator")

    async def fault() -> None:
        await after(3)
        try:
            await asyncio.to_thread(infra.redis_stop)
            await after(30)
        finally:
            await asyncio.to_thread(infra.redis_start)

    report = await run_case(stack, "redis-down-30s", fault, duration=36)
    log = stack.log_since("aggregator", mark)
    assert "cache unavailable" in log and "cache is back" in log, log[-3000:]
    assert_case(report)


async def test_aggregator_killed_while_redis_is_down(stack: FaultStack) -> None:
    """README: with Redis down the aggregator holds results unacknowledged; a crash meanwhile loses nothing."""
    assert stack.infra is not None
    infra = stack.infra
    outcome: dict[str, Any] = {}

    async def fault() -> None:
        await after(3)
        try:
            await asyncio.to_thread(infra.redis_stop)
            # Results keep arriving and are applied in memory only; then the aggregator dies and restarts blind.
            outcome.update(await kill_and_restart(stack, "aggregator", signal.SIGKILL, at=6.0))
            await after(10)  # the new instance rejoins after the 6 s session timeout, then waits for Redis too
        finally:
            await asyncio.to_thread(infra.redis_start)

    report = await run_case(stack, "redis-down-aggregator-kill9", fault, duration=24)
    assert outcome["exit_code"] == -signal.SIGKILL
    assert_case(report)
