"""Fixtures for tests against the real Kafka and Redis that `make infra-up` starts."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP = os.environ.get("ALGO_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
REDIS_URL = os.environ.get("RW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def topic_factory() -> Callable[..., str]:
    """Fresh topics with a uuid in the name, so tests never share state."""
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})

    def make(prefix: str = "test", partitions: int = 3) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)
        return name

    return make


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    yield f"test-{uuid.uuid4().hex[:10]}:"
