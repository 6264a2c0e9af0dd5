"""The model of config/kafka.yaml: broker addresses, topics, consumer groups and client properties."""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from pydantic import Field, field_validator

from riskwatch.config.base import FrozenModel

# The delivery guarantees riskwatch's stages rely on (no lost or duplicated write, offsets committed only after a
# record is handled, no read of an aborted write). riskwatch.bus.kafka applies them after kafka.yaml's properties,
# and kafka.yaml may not name them: a file that tries is refused at load time.
PRODUCER_GUARANTEES: Final = MappingProxyType({"enable.idempotence": True, "acks": "all"})
CONSUMER_GUARANTEES: Final = MappingProxyType(
    {"enable.auto.commit": False, "enable.auto.offset.store": False, "isolation.level": "read_committed"}
)
# Set from kafka.yaml's own fields (bootstrap_servers, consumer_groups, instance_id), never through properties.
OWNED_PROPERTIES: Final = frozenset({"bootstrap.servers", "group.id", "group.instance.id"})


class TopicConfig(FrozenModel):
    name: str = Field(min_length=1)
    partitions: int = Field(default=16, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=60_000)


class Topics(FrozenModel):
    detection_results: TopicConfig = TopicConfig(name="detection-results")
    assessment_tasks: TopicConfig = TopicConfig(name="assessment-tasks")
    risk_assessment_results: TopicConfig = TopicConfig(name="risk-assessment-results")
    # The task generator's decision for every group of every detection event (audit trail; nothing consumes it).
    task_decisions: TopicConfig = TopicConfig(name="task-decisions")
    dead_letter_suffix: str = ".dlq"

    def all(self) -> list[TopicConfig]:
        """Every topic including the dead-letter ones (same partitions as their source)."""
        consumed = [self.detection_results, self.assessment_tasks, self.risk_assessment_results]
        dead = [t.model_copy(update={"name": self.dead_letter(t.name)}) for t in consumed]
        return [*consumed, self.task_decisions, *dead]

    def dead_letter(self, topic: str) -> str:
        return topic + self.dead_letter_suffix


class ConsumerGroups(FrozenModel):
    task_generator: str = "riskwatch-task-generator"
    scheduler: str = "riskwatch-llm-scheduler"
    aggregator: str = "riskwatch-aggregator"


class KafkaConfig(FrozenModel):
    bootstrap_servers: list[str] = Field(default_factory=lambda: ["127.0.0.1:9092"])
    topics: Topics = Topics()
    consumer_groups: ConsumerGroups = ConsumerGroups()
    # librdkafka properties passed through to every client (e.g. security.protocol, sasl.*).
    client_properties: dict[str, str] = Field(default_factory=dict)
    # ... and to consumers only. A member that died (kill -9) is noticed after session.timeout.ms; librdkafka's
    # 45 s default would leave its partitions idle that long after a restart.
    consumer_properties: dict[str, str] = Field(
        default_factory=lambda: {"session.timeout.ms": "10000", "heartbeat.interval.ms": "2000"}
    )
    # Static group membership (KIP-345): this replica's stable name, unique among the replicas of each stage (e.g.
    # the host name). A replica restarted under the same name gets its partitions back at once, instead of after
    # session.timeout.ms. None: dynamic membership.
    instance_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")

    @field_validator("client_properties", "consumer_properties")
    @classmethod
    def _guarantees_stay(cls, properties: dict[str, str]) -> dict[str, str]:
        for key in properties:
            name = key.strip().lower()
            guarantee = PRODUCER_GUARANTEES.get(name, CONSUMER_GUARANTEES.get(name))
            if guarantee is not None:
                raise ValueError(
                    f"{key!r} is a delivery guarantee riskwatch sets itself ({name}={str(guarantee).lower()}); "
                    "remove it"
                )
            if name in OWNED_PROPERTIES:
                raise ValueError(
                    f"{key!r} is set from kafka.yaml's own fields (bootstrap_servers, consumer_groups, "
                    "instance_id); remove it"
                )
        return properties
