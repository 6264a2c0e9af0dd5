"""HealthPublisher: each snapshot goes out on the health channel with its source and reporting interval."""

from __future__ import annotations

import asyncio
import json

from riskwatch.cache import InMemoryCache, keys
from riskwatch.telemetry.health import HealthPublisher


async def test_snapshots_carry_their_source_and_interval() -> None:
    cache = InMemoryCache()
    calls = 0

    def snapshot() -> dict[str, object]:
        nonlocal calls
        calls += 1
        return {"in flight": calls}

    publisher = HealthPublisher(cache, "task-generator", snapshot, interval_s=0.05)
    async with cache.subscribe(keys.HEALTH_CHANNEL) as messages:
        await publisher.start()
        try:
            async with asyncio.timeout(5):
                received = [json.loads(await anext(messages)) for _ in range(2)]
        finally:
            await publisher.stop()
    assert received == [
        {"source": "task-generator", "interval_s": 0.05, "in flight": 1},
        {"source": "task-generator", "interval_s": 0.05, "in flight": 2},
    ]
