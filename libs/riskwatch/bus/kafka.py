"""Apache Kafka event bus over confluent-kafka: idempotent acks=all producer, explicitly acknowledged consumer."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka import Consumer as _KafkaConsumer
from confluent_kafka.admin import AdminClient

from riskwatch.bus.base import Consumer, EventBus, Headers, Lag, OffsetTracker, Record, estimate_lag
from riskwatch.config.kafka import CONSUMER_GUARANTEES, PRODUCER_GUARANTEES
from riskwatch.errors import BusFailed, Unavailable
from riskwatch.retry import RetryCallState, retrying_blocking

log = logging.getLogger(__name__)

# Group crops make events larger than Kafka's 1 MB default; topics are created with the same limit.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024


def wait_for_broker(
    bootstrap_servers: str, properties: dict[str, str], stop: threading.Event | None = None, max_backoff_s: float = 30.0
) -> dict[str, Any]:
    """Block until the cluster answers a metadata request, logging each failed attempt and the next retry; the
    cluster's topics by name (confluent_kafka TopicMetadata). Raises Unavailable once `stop` is set."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **properties})

    def log_failure(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "Failed to connect to Kafka at %s (%s); retrying in %.0f s",
            bootstrap_servers,
            error.args[0] if error is not None and error.args else error,
            state.next_action.sleep if state.next_action is not None else 0.0,
        )

    try:
        for attempt in retrying_blocking(
            retry_on=KafkaException,
            initial_s=1.0,
            max_s=max_backoff_s,
            stop=stop or threading.Event(),
            before_sleep=log_failure,
        ):
            with attempt:
                return dict(admin.list_topics(timeout=5).topics)
    except Unavailable as exc:
        raise Unavailable(f"Kafka at {bootstrap_servers} is unreachable ({exc})") from exc
    raise AssertionError("unreachable: retrying_blocking returns or raises")


def topic_reader(
    bootstrap_servers: str, properties: dict[str, str], topic: str, *, from_beginning: bool
) -> _KafkaConsumer:
    """A plain consumer on every partition of `topic`, from its start or its current end, joining no group
    (operator tools read without disturbing the stages). Raises Unavailable if the topic does not exist."""
    consumer = _KafkaConsumer(
        {
            "fetch.max.bytes": MAX_MESSAGE_BYTES,
            **properties,
            **CONSUMER_GUARANTEES,
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"riskwatch-reader-{uuid.uuid4().hex}",
        }
    )
    info = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        consumer.close()
        raise Unavailable(f"topic {topic!r} does not exist on {bootstrap_servers}: run `make topics` first")
    partitions = []
    for p in info.partitions:
        if from_beginning:
            partitions.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        else:
            # Pin the current end now, so nothing published after this call can be missed.
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            partitions.append(TopicPartition(topic, p, high if high >= 0 else OFFSET_END))
    consumer.assign(partitions)
    return consumer


class KafkaBus(EventBus):
    """One producer per bus, shared by every stage in the process; a poll thread completes deliveries."""

    def __init__(
        self,
        bootstrap_servers: str,
        properties: dict[str, str] | None = None,
        consumer_properties: dict[str, str] | None = None,
        instance_id: str | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._properties = dict(properties or {})
        self._consumer_properties = {**self._properties, **(consumer_properties or {})}
        self._instance_id = instance_id
        # kafka.yaml's properties may tune the clients, never weaken their guarantees: those are applied last.
        self._producer = Producer(
            {
                "linger.ms": 5,
                "compression.type": "lz4",
                "message.max.bytes": MAX_MESSAGE_BYTES,
                **self._properties,
                **PRODUCER_GUARANTEES,
                "bootstrap.servers": bootstrap_servers,
            }
        )
        self._closing = threading.Event()
        self._poller = threading.Thread(target=self._poll_deliveries, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    @property
    def bootstrap_servers(self) -> str:
        return self._bootstrap

    def _poll_deliveries(self) -> None:
        while not self._closing.is_set():
            self._producer.poll(0.1)

    async def publish(self, topic: str, key: str, value: bytes, headers: Headers = ()) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            loop.call_soon_threadsafe(_settle, done, err, topic)

        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key.encode(), headers=list(headers), on_delivery=on_delivery
                )
                break
            except BufferError:
                await asyncio.sleep(0.05)  # local queue full: let the poll thread drain it
        await done

    def consumer(self, group: str, topics: list[str]) -> Consumer:
        properties = dict(self._consumer_properties)
        if self._instance_id is not None:
            # Static membership: a member of `group` known by name (unique within the group), so its restart
            # needs no rebalance.
            properties["group.instance.id"] = self._instance_id
        return KafkaConsumer(self._bootstrap, group, topics, properties)

    async def close(self) -> None:
        await asyncio.to_thread(self._producer.flush, 30)
        self._closing.set()
        await asyncio.to_thread(self._poller.join, 5)


def record_headers(raw: Any) -> Headers:
    """librdkafka's header list as (name, bytes) pairs; values may arrive as str or None."""
    return tuple((name, value.encode() if isinstance(value, str) else (value or b"")) for name, value in raw or [])


def _settle(future: asyncio.Future[None], err: KafkaError | None, topic: str) -> None:
    if future.done():
        return
    if err is None:
        future.set_result(None)
    else:
        future.set_exception(Unavailable(f"publish to {topic} failed: {err.str()}"))


class KafkaConsumer(Consumer):
    """Every call into librdkafka runs on one dedicated thread, so the event loop never blocks."""

    def __init__(self, bootstrap_servers: str, group: str, topics: list[str], properties: dict[str, str]) -> None:
        self._group = group
        self._tracker = OffsetTracker()
        self._lock = threading.Lock()  # tracker is touched by rebalance callbacks on the worker thread
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kafka-{group}")
        self._consumer = _KafkaConsumer(
            {
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "fetch.max.bytes": 4 * MAX_MESSAGE_BYTES,
                **properties,
                **CONSUMER_GUARANTEES,
                "bootstrap.servers": bootstrap_servers,
                "group.id": group,
            }
        )
        self._positions: dict[tuple[str, int], int] = {}
        self._consumer.subscribe(topics, on_revoke=self._on_revoke, on_lost=self._on_lost)
        self._closed = False

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._commit_now(sync=True)
        with self._lock:
            self._tracker.forget([(p.topic, p.partition) for p in partitions])

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self._tracker.forget([(p.topic, p.partition) for p in partitions])

    def _fetch(self, max_records: int, timeout_s: float) -> list[Message]:
        """Whatever is already fetched, else wait for the first message and take what came with it.

        consume(n, timeout) would wait until n messages arrived or the timeout passed: at a modest rate
        that adds up to the whole timeout to every record's latency.
        """
        messages = self._consumer.consume(max_records, 0)
        if messages:
            return list(messages)
        first = self._consumer.poll(timeout_s)
        if first is None:
            return []
        return [first, *self._consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]

    def _consume(self, max_records: int, timeout_s: float) -> list[Record]:
        batch: list[Record] = []
        for msg in self._fetch(max_records, timeout_s):
            err = msg.error()
            if err is not None:
                if err.fatal() or err.code() == KafkaError._FATAL:  # librdkafka gave up on this client
                    raise BusFailed(f"Kafka consumer of group {self._group} failed for good: {err.str()}")
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("Kafka consumer %s: %s", self._group, err.str())
                continue
            ts_type, ts = msg.timestamp()
            record = Record(
                topic=msg.topic() or "",
                partition=msg.partition() or 0,
                offset=msg.offset() or 0,
                key=msg.key(),
                value=msg.value() or b"",
                timestamp_ms=ts if ts_type else 0,
                headers=record_headers(msg.headers()),
            )
            with self._lock:
                self._tracker.delivered(record)
            self._positions[(record.topic, record.partition)] = record.offset + 1
            batch.append(record)
        return batch

    async def poll(self, max_records: int = 500, timeout_s: float = 0.5) -> list[Record]:
        if self._closed:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._consume, max_records, timeout_s)

    def ack(self, record: Record) -> None:
        with self._lock:
            self._tracker.ack(record)

    def _commit_now(self, sync: bool) -> None:
        with self._lock:
            ready = self._tracker.committable()
        if not ready:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in ready.items()]
        try:
            if sync:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            # Not fatal: the records stay uncommitted and are redelivered; consumers are idempotent.
            log.warning("Kafka commit for group %s failed (%s); will be redelivered", self._group, exc)

    async def commit(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._commit_now, True)

    def lag(self) -> dict[tuple[str, int], Lag]:
        result = {}
        now = time.time()
        for (topic, partition), position in list(self._positions.items()):
            try:
                _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                with self._lock:
                    oldest = self._tracker.oldest_timestamp_ms((topic, partition))
                    in_flight = self._tracker.pending_count((topic, partition))
                result[(topic, partition)] = estimate_lag(max(0, high - position) + in_flight, oldest, now)
        return result

    async def close(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close_now)
        self._closed = True
        self._thread.shutdown(wait=True)

    def _close_now(self) -> None:
        self._commit_now(sync=True)
        self._consumer.close()
