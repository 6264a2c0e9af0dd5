"""The one Kafka topic reader of the tests and benches: every record of a topic, read without a consumer group."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType

from confluent_kafka import Consumer, KafkaException, TopicPartition
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from riskwatch.bus.kafka import topic_reader
from riskwatch.errors import Unavailable
from tests.support.stack import BOOTSTRAP


@dataclass(frozen=True)
class TopicRecord:
    key: bytes | None
    value: bytes
    timestamp_ms: int


class TopicReader:
    """Every record of `topic` from its beginning, caught up to the high watermarks on demand.

    Built on riskwatch.bus.kafka.topic_reader (no group, so reading disturbs no stage). A topic that does not
    exist yet reads as empty until it does.
    """

    def __init__(self, topic: str, bootstrap: str = BOOTSTRAP, properties: Mapping[str, str] | None = None) -> None:
        self.topic = topic
        self.records: list[TopicRecord] = []
        self._bootstrap = bootstrap
        self._properties = {
            # Watermark queries wait behind a pending long-poll fetch on the same connection: keep it short.
            "fetch.wait.max.ms": "10",
            **(properties or {}),
        }
        self._consumer: Consumer | None = None
        self._partitions: list[int] = []
        # catch_up runs in worker threads (asyncio.to_thread); a consumer is not to be used by two at once.
        self._lock = threading.Lock()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    @property
    def values(self) -> list[bytes]:
        return [record.value for record in self.records]

    def _open(self) -> Consumer | None:
        try:
            consumer = topic_reader(self._bootstrap, self._properties, self.topic, from_beginning=True)
        except Unavailable:
            return None
        self._partitions = sorted(tp.partition for tp in consumer.assignment())
        return consumer

    def catch_up(self, timeout: float = 30.0) -> int:
        """Read up to the current high watermark of every partition; the number of records read."""
        with self._lock:
            if self._consumer is None:
                self._consumer = self._open()
                if self._consumer is None:
                    return 0
            consumer = self._consumer
            targets = self._high_watermarks(consumer, timeout)
            read = 0
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                behind = [p for p in self._partitions if targets[p] > 0]
                if not behind:
                    break
                positions = consumer.position([TopicPartition(self.topic, p) for p in behind])
                if all(tp.offset >= targets[tp.partition] for tp in positions):
                    break
                for msg in consumer.consume(500, 0.5):
                    if msg.error() is None:
                        self.records.append(TopicRecord(msg.key(), msg.value() or b"", msg.timestamp()[1]))
                        read += 1
            return read

    def _high_watermarks(self, consumer: Consumer, timeout: float) -> dict[int, int]:
        # Just after a broker restart the client's metadata lags: "Unknown partition" until it is refreshed.
        for attempt in Retrying(
            retry=retry_if_exception_type(KafkaException),
            stop=stop_after_delay(timeout),
            wait=wait_fixed(0.5),
            reraise=True,
        ):
            with attempt:
                return {
                    p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
                    for p in self._partitions
                }
        raise AssertionError("unreachable: Retrying either returns or re-raises")

    def read_until(
        self, done: Callable[[list[TopicRecord]], bool], timeout: float = 60.0, settle: float = 0.0
    ) -> list[TopicRecord]:
        """Catch up until `done(records)` holds or `timeout` passes, then once more after `settle` s (to catch
        what arrives late, such as duplicates); every record read. Never raises on timeout: the caller asserts."""
        deadline = time.monotonic() + timeout
        while True:
            self.catch_up(max(1.0, deadline - time.monotonic()))
            if done(self.records) or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if settle > 0:
            time.sleep(settle)
            self.catch_up()
        return self.records

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


def read_topic(topic: str, bootstrap: str = BOOTSTRAP, timeout: float = 60.0) -> list[TopicRecord]:
    """Every record `topic` holds now."""
    with TopicReader(topic, bootstrap) as reader:
        reader.catch_up(timeout)
        return reader.records
