"""Create riskwatch's Kafka topics (and their dead-letter topics) from config/kafka.yaml; safe to run again."""

from __future__ import annotations

import argparse
import sys

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from riskwatch.bus.kafka import MAX_MESSAGE_BYTES, wait_for_broker
from riskwatch.cli import add_kafka_options, kafka_settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_kafka_options(parser)
    settings, servers = kafka_settings(parser.parse_args())
    existing = wait_for_broker(servers, settings.kafka.client_properties)
    admin = AdminClient({"bootstrap.servers": servers, **settings.kafka.client_properties})
    wanted = settings.kafka.topics.all()
    new = [
        NewTopic(
            t.name,
            num_partitions=t.partitions,
            replication_factor=t.replication_factor,
            config={"retention.ms": str(t.retention_ms), "max.message.bytes": str(MAX_MESSAGE_BYTES)},
        )
        for t in wanted
        if t.name not in existing
    ]
    futures = admin.create_topics(new, operation_timeout=30) if new else {}
    failed = 0
    for topic in wanted:
        if topic.name in existing:
            partitions = len(existing[topic.name].partitions)
            print(f"✓ Topic '{topic.name}' already exists ({partitions} partitions)")
            continue
        try:
            futures[topic.name].result()
            print(f"✓ Topic '{topic.name}' created ({topic.partitions} partitions)")
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                print(f"✓ Topic '{topic.name}' already exists")
            else:
                print(f"✗ Topic '{topic.name}' could not be created: {exc}", file=sys.stderr)
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
