"""Exercise a running streaming stack through Kafka and report throughput and latency.

  --mode producer   publish --count synthetic DetectionEvents (groups with features and a JPEG crop)
  --mode consumer   read AssessmentResults for --timeout seconds (or until --count) and report them
  --mode e2e        publish for --duration seconds (or --count events) and measure, per task, the time
                    from publishing the event to its AssessmentResult: P50/P95/P99 and throughput

Needs Kafka and the task generator, LLM scheduler and aggregator (plus an LLM: the simulator with
`--all`): `make infra-up && make topics && scripts/start_streaming_services.sh --all`.
Topic names come from config/kafka.yaml and ALGO_* variables, as for the services.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from google.protobuf.message import DecodeError

from riskwatch import events, synthetic
from riskwatch.bus.kafka import topic_reader
from riskwatch.cli import add_kafka_options, kafka_settings
from riskwatch.config import CommonSettings
from riskwatch.domain import FailureKind, RiskLevel
from riskwatch.errors import Unavailable
from riskwatch.v1 import events_pb2

# --- synthetic events ----------------------------------------------------------------------------


def crop_jpeg(seed: int, width: int = 160, height: int = 120) -> bytes:
    """A small street-like JPEG: grey road, a 'car' and a 'person' at positions varying with `seed`."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 90, dtype=np.uint8)
    image += rng.integers(0, 12, size=image.shape, dtype=np.uint8)
    x = int(rng.integers(5, width // 2))
    cv2.rectangle(image, (x, 60), (x + 50, 100), (40, 40, 200), thickness=-1)
    px = int(rng.integers(width // 2, width - 15))
    cv2.rectangle(image, (px, 40), (px + 10, 90), (200, 160, 60), thickness=-1)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise RuntimeError("cv2 could not encode a JPEG")
    return bytes(encoded.tobytes())


def detection_event(camera_id: str, frame_id: int, groups: int, crop: bytes) -> events_pb2.DetectionEvent:
    """One frame's event: per group a vehicle and a pedestrian close together (worth an LLM look)."""
    event = synthetic.detection_event(camera_id, frame_id, model="pipeline-test")
    for g in range(groups):
        # A fresh group id per frame: every group is new to the task generator, so each becomes a task.
        tracks = (1000 * frame_id + 2 * g + 1, 1000 * frame_id + 2 * g + 2)
        synthetic.add_pair(event, f"g{frame_id}-{g}", tracks, slot=g, distance=0.1, density=2.0, crop=crop)
    return event


# --- measurements ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "min_s": round(min(values), 4),
        "p50_s": round(percentile(values, 50), 4),
        "p95_s": round(percentile(values, 95), 4),
        "p99_s": round(percentile(values, 99), 4),
        "max_s": round(max(values), 4),
    }


def outcome_of(result: events_pb2.AssessmentResult) -> str:
    if result.HasField("verdict"):
        return f"risk_{RiskLevel.from_proto(result.verdict.risk_level).protocol_name}"
    if result.HasField("failure"):
        return f"failure_{FailureKind.from_proto(result.failure.kind)}"
    return "empty"


@dataclass
class Publisher:
    """Publishes synthetic events round-robin over `cameras` cameras at `rate` events per second."""

    producer: Producer
    topic: str
    run_id: str
    cameras: int
    groups: int
    rate: float
    published: int = 0
    delivered: int = 0
    errors: list[str] = field(default_factory=list)
    # task id -> time.time() when its event was handed to the producer
    sent_at: dict[str, float] = field(default_factory=dict)
    ack_latency: list[float] = field(default_factory=list)
    _crops: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._crops = [crop_jpeg(i) for i in range(8)]

    def camera(self, n: int) -> str:
        return f"pipeline-{self.run_id}-cam{n % self.cameras:02d}"

    def due(self, started: float) -> int:
        """Events that should have been published by now."""
        return int((time.monotonic() - started) * self.rate) + 1

    def publish_one(self) -> None:
        n = self.published
        frame_id = n // self.cameras + 1
        event = detection_event(self.camera(n), frame_id, self.groups, self._crops[n % len(self._crops)])
        sent = time.time()
        for group in event.groups:
            self.sent_at[events.task_id(event.event_id, group.group_id)] = sent

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.delivered += 1
                self.ack_latency.append(time.time() - sent)

        while True:
            try:
                self.producer.produce(
                    self.topic, key=event.camera_id, value=event.SerializeToString(), on_delivery=on_delivery
                )
                break
            except BufferError:  # local queue full: let deliveries complete, then retry
                self.producer.poll(0.1)
        self.published += 1
        self.producer.poll(0)


def make_producer(bootstrap: str, properties: dict[str, str]) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.max.bytes": 10 * 1024 * 1024,
            **properties,
        }
    )


def decode_results(messages: list[Message]) -> list[tuple[float, events_pb2.AssessmentResult]]:
    received = time.time()
    out = []
    for msg in messages:
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                print(f"consumer error: {error}", file=sys.stderr)
            continue
        result = events_pb2.AssessmentResult()
        try:
            result.ParseFromString(msg.value() or b"")
        except DecodeError as exc:  # a foreign record on the topic is reported, not fatal
            print(f"undecodable record at {msg.topic()}[{msg.partition()}]@{msg.offset()}: {exc}", file=sys.stderr)
            continue
        out.append((received, result))
    return out


# --- modes -------------------------------------------------------------------------------------------


def run_producer(args: argparse.Namespace, settings: CommonSettings, bootstrap: str) -> dict[str, Any]:
    topic = settings.kafka.topics.detection_results.name
    producer = make_producer(bootstrap, settings.kafka.client_properties)
    pub = Publisher(producer, topic, uuid.uuid4().hex[:8], args.cameras, args.groups, args.rate)
    count = args.count or 10
    started = time.monotonic()
    while pub.published < count:
        while pub.published < min(count, pub.due(started)):
            pub.publish_one()
        producer.poll(0.01)
    remaining = producer.flush(args.timeout)
    elapsed = time.monotonic() - started
    return {
        "mode": "producer",
        "topic": topic,
        "run_id": pub.run_id,
        "published": pub.published,
        "delivered": pub.delivered,
        "undelivered": remaining,
        "errors": pub.errors[:10],
        "groups_per_event": args.groups,
        "elapsed_s": round(elapsed, 3),
        "throughput_events_per_s": round(pub.delivered / elapsed, 2) if elapsed else 0.0,
        "ack_latency": latency_summary(pub.ack_latency),
        "ok": pub.delivered == count and not pub.errors,
    }


def run_consumer(args: argparse.Namespace, settings: CommonSettings, bootstrap: str) -> dict[str, Any]:
    topic = settings.kafka.topics.risk_assessment_results.name
    consumer = topic_reader(bootstrap, settings.kafka.client_properties, topic, from_beginning=args.from_beginning)
    outcomes: Counter[str] = Counter()
    cameras: set[str] = set()
    capture_latency: list[float] = []
    started = time.monotonic()
    first = last = None
    try:
        while time.monotonic() - started < args.timeout and not (args.count and sum(outcomes.values()) >= args.count):
            for received, result in decode_results(consumer.consume(500, 0.2)):
                outcomes[outcome_of(result)] += 1
                cameras.add(result.camera_id)
                if result.capture_time.seconds:
                    capture_latency.append(received - events.seconds(result.capture_time))
                first = first or time.monotonic()
                last = time.monotonic()
    finally:
        consumer.close()
    count = sum(outcomes.values())
    window = (last - first) if first and last and last > first else 0.0
    return {
        "mode": "consumer",
        "topic": topic,
        "received": count,
        "cameras": len(cameras),
        "outcomes": dict(outcomes),
        "elapsed_s": round(time.monotonic() - started, 3),
        "throughput_results_per_s": round(count / window, 2) if window else float(count),
        "capture_to_receive_latency": latency_summary(capture_latency),
        "ok": count > 0 and (not args.count or count >= args.count),
    }


def run_e2e(args: argparse.Namespace, settings: CommonSettings, bootstrap: str) -> dict[str, Any]:
    topics = settings.kafka.topics
    consumer = topic_reader(
        bootstrap, settings.kafka.client_properties, topics.risk_assessment_results.name, from_beginning=False
    )
    producer = make_producer(bootstrap, settings.kafka.client_properties)
    pub = Publisher(producer, topics.detection_results.name, uuid.uuid4().hex[:8], args.cameras, args.groups, args.rate)
    latency: dict[str, float] = {}
    outcomes: Counter[str] = Counter()
    duplicates = 0
    started = time.monotonic()
    publishing_until = started + args.duration

    def collect(wait_s: float) -> None:
        nonlocal duplicates
        for received, result in decode_results(consumer.consume(500, wait_s)):
            sent = pub.sent_at.get(result.task_id)
            if sent is None:
                continue  # another run's or the system's own traffic
            if result.task_id in latency:
                duplicates += 1  # at-least-once: a redelivery, counted once
                continue
            latency[result.task_id] = received - sent
            outcomes[outcome_of(result)] += 1

    try:
        while time.monotonic() < publishing_until and not (args.count and pub.published >= args.count):
            target = pub.due(started)
            if args.count:
                target = min(target, args.count)
            while pub.published < target:
                pub.publish_one()
            producer.poll(0)
            collect(0.02)
        publish_elapsed = time.monotonic() - started
        producer.flush(30)
        drain_deadline = time.monotonic() + args.timeout
        while len(latency) < len(pub.sent_at) and time.monotonic() < drain_deadline:
            collect(0.2)
    finally:
        consumer.close()
    elapsed = time.monotonic() - started
    expected = len(pub.sent_at)
    values = list(latency.values())
    summary = latency_summary(values)
    report: dict[str, Any] = {
        "mode": "e2e",
        "run_id": pub.run_id,
        "events_published": pub.published,
        "events_delivered": pub.delivered,
        "publish_errors": pub.errors[:10],
        "tasks_expected": expected,
        "results_received": len(latency),
        "missing": expected - len(latency),
        "duplicates": duplicates,
        "outcomes": dict(outcomes),
        "publish_s": round(publish_elapsed, 3),
        "elapsed_s": round(elapsed, 3),
        "throughput_events_per_s": round(pub.published / publish_elapsed, 2) if publish_elapsed else 0.0,
        "throughput_results_per_s": round(len(latency) / elapsed, 2) if elapsed else 0.0,
        "latency": summary,
    }
    ok = expected > 0 and len(latency) >= args.min_ratio * expected and not pub.errors
    if args.max_p95 is not None and summary:
        ok = ok and summary["p95_s"] <= args.max_p95
    report["ok"] = ok
    return report


# --- command line ------------------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    mode = report["mode"]
    print(f"== streaming pipeline test ({mode}) {'PASSED' if report['ok'] else 'FAILED'}")
    for key, value in report.items():
        if key in ("mode", "ok"):
            continue
        text = str(value)
        if isinstance(value, dict):
            text = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            text = "; ".join(map(str, value)) or "-"
        print(f"  {key:<26} {text}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, prog="test_streaming_pipeline.py"
    )
    parser.add_argument("--mode", choices=["e2e", "producer", "consumer"], default="e2e")
    parser.add_argument("--duration", type=float, default=60.0, help="e2e: seconds to publish (default 60)")
    parser.add_argument(
        "--count",
        type=int,
        default=None,
        help="producer: events to publish (default 10); e2e: stop after this many "
        "events; consumer: stop after this many results",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="consumer: seconds to read; e2e: seconds to wait for the last "
        "results after publishing; producer: seconds to wait for acknowledgements (default 30)",
    )
    parser.add_argument("--rate", type=float, default=10.0, help="events published per second (default 10)")
    parser.add_argument("--cameras", type=int, default=4, help="synthetic cameras (default 4)")
    parser.add_argument("--groups", type=int, default=2, help="groups per event, one task each (default 2)")
    parser.add_argument("--from-beginning", action="store_true", help="consumer: read the topic from its start")
    parser.add_argument(
        "--min-ratio", type=float, default=0.95, help="e2e: share of tasks that must get a result (default 0.95)"
    )
    parser.add_argument("--max-p95", type=float, default=None, help="e2e: fail when P95 latency exceeds this (s)")
    add_kafka_options(parser)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rate <= 0 or args.cameras < 1 or args.groups < 1 or (args.count is not None and args.count < 1):
        print("--rate must be > 0, --cameras, --groups and --count >= 1", file=sys.stderr)
        return 2
    settings, bootstrap = kafka_settings(args)
    runner = {"producer": run_producer, "consumer": run_consumer, "e2e": run_e2e}[args.mode]
    try:
        report = runner(args, settings, bootstrap)
    except (KafkaException, Unavailable) as exc:
        print(f"Kafka at {bootstrap}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
