"""Wire the aggregator stage from settings: consumer on risk-assessment-results, state into the cache."""

from __future__ import annotations

from riskwatch.bus import EventBus, Stage
from riskwatch.cache import Cache

from riskwatch_aggregator.aggregator import Aggregator
from riskwatch_aggregator.config import AggregatorSettings


class AggregatorApp:
    """Start: write-back loop, then the consuming stage. Stop: the reverse, so every change is flushed."""

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
        )

    async def start(self) -> None:
        await self.aggregator.start()
        await self.stage.start()

    async def stop(self) -> None:
        await self.stage.stop()
        await self.aggregator.stop()
