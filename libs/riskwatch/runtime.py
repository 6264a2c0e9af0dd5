"""Build the bus and cache a process uses: Kafka and Redis when streaming, in-memory when embedded."""

from __future__ import annotations

import asyncio
import logging

from riskwatch.bus import EventBus, InMemoryBus
from riskwatch.bus.kafka import KafkaBus, wait_for_broker
from riskwatch.bus.memory import EMBEDDED_RETENTION_RECORDS
from riskwatch.cache import Cache, InMemoryCache, RedisCache
from riskwatch.config import CommonSettings
from riskwatch.errors import ConfigError

log = logging.getLogger(__name__)


def memory_bus(settings: CommonSettings) -> InMemoryBus:
    """The in-memory bus of embedded mode, with Kafka's partition count and a bounded retention."""
    return InMemoryBus(
        partitions=settings.kafka.topics.detection_results.partitions,
        retention_records=EMBEDDED_RETENTION_RECORDS,
    )


async def connect_bus(settings: CommonSettings) -> EventBus:
    """The Kafka bus once the broker answers (waiting with backoff), or an in-memory bus when embedded."""
    if not settings.enable_kafka_streaming:
        return memory_bus(settings)
    kafka = settings.kafka
    existing = await asyncio.to_thread(wait_for_broker, settings.bootstrap_servers, kafka.client_properties)
    log.info("Connected to Kafka at %s", settings.bootstrap_servers)
    # A stage publishing to a missing topic would retry forever without acknowledging anything: refuse to start.
    missing = [topic.name for topic in kafka.topics.all() if topic.name not in existing]
    if missing:
        raise ConfigError(
            f"Kafka at {settings.bootstrap_servers} has no topic {', '.join(missing)} (config/kafka.yaml topics): "
            "create them with `make topics` (python scripts/init_kafka_topics.py)"
        )
    return KafkaBus(settings.bootstrap_servers, kafka.client_properties, kafka.consumer_properties, kafka.instance_id)


def make_cache(settings: CommonSettings) -> Cache:
    if not settings.enable_kafka_streaming:
        return InMemoryCache()
    log.info("Redis at %s (key prefix %s)", settings.redis.display_url, settings.redis.key_prefix)
    return RedisCache(settings.redis.url.get_secret_value(), settings.redis.key_prefix)
