"""Print riskwatch's Kafka records decoded, one JSON object per line.

  uv run python scripts/tail_topic.py task-decisions                   # why each group was or was not assessed
  uv run python scripts/tail_topic.py task-decisions --camera cam-01 --from-beginning
  uv run python scripts/tail_topic.py risk-assessment-results --from-beginning --max 20
  uv run python scripts/tail_topic.py detection-results.dlq --from-beginning   # dead letters and their errors

TOPIC is a topic's name in config/kafka.yaml (ALGO_* overrides apply): detection-results, assessment-tasks,
risk-assessment-results, task-decisions, or one of their dead-letter topics (<topic>.dlq). Reads without joining a
consumer group, so the stages are not disturbed. Follows new records until Ctrl+C, --max records or --idle seconds
without one. Bytes (group crops, undecodable values) are shown by size, never dumped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message as ProtoMessage

from riskwatch import events
from riskwatch.bus.kafka import record_headers, topic_reader
from riskwatch.cli import add_kafka_options, kafka_settings
from riskwatch.config import CommonSettings
from riskwatch.errors import DecodeError, Unavailable
from riskwatch.v1 import events_pb2


def message_types(settings: CommonSettings) -> dict[str, type[ProtoMessage]]:
    """Each topic's configured name -> the message its records hold."""
    topics = settings.kafka.topics
    return {
        topics.detection_results.name: events_pb2.DetectionEvent,
        topics.assessment_tasks.name: events_pb2.AssessmentTask,
        topics.risk_assessment_results.name: events_pb2.AssessmentResult,
        topics.task_decisions.name: events_pb2.TaskDecisions,
    }


def to_json(message: ProtoMessage) -> dict[str, Any]:
    """The message as JSON (field names as in the .proto), with every bytes field replaced by its size."""
    out = MessageToDict(message, preserving_proto_field_name=True)
    _sizes_for_bytes(message, out)
    return out


def _sizes_for_bytes(message: ProtoMessage, out: dict[str, Any]) -> None:
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_BYTES:
            out[field.name] = f"<{len(value)} bytes>"
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.is_repeated:
            for item, item_out in zip(value, out[field.name], strict=True):
                _sizes_for_bytes(item, item_out)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            _sizes_for_bytes(value, out[field.name])


def describe(msg: Message, message_type: type[ProtoMessage] | None) -> dict[str, Any]:
    """One record as a JSON object: where it is, its key, and its value decoded (or why it could not be)."""
    value = msg.value() or b""
    record: dict[str, Any] = {
        "partition": msg.partition(),
        "offset": msg.offset(),
        "key": (msg.key() or b"").decode(errors="replace"),
    }
    headers = {name: data.decode(errors="replace") for name, data in record_headers(msg.headers())}
    if headers:
        record["headers"] = headers
    if message_type is None:  # a dead-letter topic: the value is whatever could not be processed
        record["value"] = f"<{len(value)} bytes>"
        return record
    try:
        record["value"] = to_json(events.decode(message_type, value, what=f"{msg.topic()}[{msg.partition()}]"))
    except DecodeError as exc:
        record["error"] = str(exc)
    return record


def records(consumer: Any, idle_s: float | None) -> Iterator[Message]:
    """The reader's records as they come; stops after `idle_s` seconds without one (never when None)."""
    last = time.monotonic()
    while idle_s is None or time.monotonic() - last < idle_s:
        for msg in consumer.consume(500, 0.5):
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    print(f"consumer error: {error}", file=sys.stderr)
                continue
            last = time.monotonic()
            yield msg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("topic", help="a topic of config/kafka.yaml, or <topic>.dlq")
    parser.add_argument("--camera", action="append", help="only records of this camera (repeatable)")
    parser.add_argument("--from-beginning", action="store_true", help="start at the oldest record kept")
    parser.add_argument("--max", type=int, default=None, help="stop after this many records")
    parser.add_argument("--idle", type=float, default=None, help="stop after this many seconds without a record")
    add_kafka_options(parser)
    args = parser.parse_args()
    settings, bootstrap = kafka_settings(args)
    if args.max is not None and args.max < 1:
        print("--max must be at least 1", file=sys.stderr)
        return 2
    types = message_types(settings)
    known = [topic.name for topic in settings.kafka.topics.all()]  # with the dead-letter topics
    if args.topic not in known:
        print(f"unknown topic {args.topic!r}; one of: {', '.join(known)}", file=sys.stderr)
        return 2
    cameras = set(args.camera or [])
    shown = 0
    try:
        consumer = topic_reader(
            bootstrap, settings.kafka.client_properties, args.topic, from_beginning=args.from_beginning
        )
        try:
            for msg in records(consumer, args.idle):
                if cameras and (msg.key() or b"").decode(errors="replace") not in cameras:
                    continue
                print(json.dumps(describe(msg, types.get(args.topic)), ensure_ascii=False), flush=True)
                shown += 1
                if args.max is not None and shown >= args.max:
                    break
        finally:
            consumer.close()
    except (KafkaException, Unavailable) as exc:
        print(f"Kafka at {bootstrap}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
