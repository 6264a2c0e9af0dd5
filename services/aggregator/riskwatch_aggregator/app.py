"""The aggregator stage, owning its start and stop: consumer on risk-assessment-results, state into the cache."""

from __future__ import annotations

from riskwatch.bus import EventBus, Stage
from riskwatch.cache import Cache
from riskwatch.lifecycle import run_until_signalled
from riskwatch.runtime import connect_bus, make_cache
from riskwatch.telemetry.health import HealthPublisher
from riskwatch_aggregator.aggregator import Aggregator
from riskwatch_aggregator.config import AggregatorSettings


class AggregatorApp:
    """Start: the cache writer, then the consuming stage. Stop: the reverse, so every change is flushed.

    The stage runs up to `max_records_in_flight` handlers at once: each returns (and its record is acknowledged)
    only when its change is in the cache, so while Redis is down results keep being applied in memory and
    offsets are not committed past the first unwritten change.
    """

    def __init__(self, settings: AggregatorSettings, bus: EventBus, cache: Cache) -> None:
        topics = settings.kafka.topics
        group = settings.kafka.consumer_groups.aggregator
        self.aggregator = Aggregator(settings, cache)
        self.stage = Stage(
            "aggregator",
            bus,
            bus.consumer(group, [topics.risk_assessment_results.name]),
            self.aggregator.handle,
            dead_letter_topic=topics.dead_letter,
            group=group,
            concurrency=settings.aggregator.max_records_in_flight,
            drain_timeout_s=settings.shutdown_grace_s,
        )
        self.health = HealthPublisher(cache, "aggregator", self.stage.health)

    async def start(self) -> None:
        await self.aggregator.start()
        await self.stage.start()
        await self.health.start()

    async def stop(self) -> None:
        await self.health.stop()
        await self.stage.stop()
        await self.aggregator.stop()


async def run(settings: AggregatorSettings) -> None:
    bus = await connect_bus(settings)
    cache = make_cache(settings)
    try:
        await run_until_signalled(AggregatorApp(settings, bus, cache))
    finally:
        await bus.close()
        await cache.close()
