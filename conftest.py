"""Fixtures every test suite shares: fresh Kafka topics and Redis key prefixes on the infra `make infra-up` starts."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.support.stack import BOOTSTRAP


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
def redis_prefix() -> str:
    """A fresh key prefix, so tests never share Redis state."""
    return f"test-{uuid.uuid4().hex[:10]}:"
