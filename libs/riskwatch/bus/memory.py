"""In-process event bus with Kafka's semantics: partitions by key, group offsets, redelivery of unacked records."""

from __future__ import annotations

import asyncio
import time
import zlib

from riskwatch.bus.base import Consumer, EventBus, Headers, Lag, OffsetTracker, Record, estimate_lag


class _Topic:
    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.partitions: list[list[Record]] = [[] for _ in range(partitions)]


class InMemoryBus(EventBus):
    """Topics live in lists; committed offsets live here, so a new consumer resumes where its group left off."""

    def __init__(self, partitions: int = 4) -> None:
        self._default_partitions = partitions
        self._topics: dict[str, _Topic] = {}
        self._committed: dict[tuple[str, str, int], int] = {}
        self._arrived = asyncio.Condition()

    def create_topic(self, name: str, partitions: int | None = None) -> None:
        if name not in self._topics:
            self._topics[name] = _Topic(name, partitions or self._default_partitions)

    def records(self, topic: str) -> list[Record]:
        """Every record ever published to `topic` (for tests and the ledger)."""
        self.create_topic(topic)
        return [r for p in self._topics[topic].partitions for r in p]

    async def publish(self, topic: str, key: str, value: bytes, headers: Headers = ()) -> None:
        self.create_topic(topic)
        t = self._topics[topic]
        # Same role as Kafka's murmur2 partitioner: one key always lands in one partition.
        partition = zlib.crc32(key.encode()) % len(t.partitions)
        log = t.partitions[partition]
        log.append(Record(topic, partition, len(log), key.encode(), value, int(time.time() * 1000), headers))
        async with self._arrived:
            self._arrived.notify_all()

    def consumer(self, group: str, topics: list[str]) -> Consumer:
        for name in topics:
            self.create_topic(name)
        return _InMemoryConsumer(self, group, topics)

    async def close(self) -> None:
        return None


class _InMemoryConsumer(Consumer):
    def __init__(self, bus: InMemoryBus, group: str, topics: list[str]) -> None:
        self._bus = bus
        self._group = group
        self._topics = topics
        self._tracker = OffsetTracker()
        # Next offset to deliver, starting from the group's committed position.
        self._position = {
            (name, p): bus._committed.get((group, name, p), 0)
            for name in topics
            for p in range(len(bus._topics[name].partitions))
        }
        self._closed = False

    def _take(self, max_records: int) -> list[Record]:
        batch: list[Record] = []
        for (name, p), pos in self._position.items():
            log = self._bus._topics[name].partitions[p]
            take = log[pos : pos + max_records - len(batch)]
            for record in take:
                self._tracker.delivered(record)
            batch.extend(take)
            self._position[(name, p)] = pos + len(take)
            if len(batch) >= max_records:
                break
        return batch

    async def poll(self, max_records: int = 500, timeout_s: float = 0.5) -> list[Record]:
        batch = self._take(max_records)
        if batch or self._closed:
            return batch
        try:
            async with self._bus._arrived:
                await asyncio.wait_for(self._bus._arrived.wait(), timeout_s)
        except TimeoutError:
            return []
        return self._take(max_records)

    def ack(self, record: Record) -> None:
        self._tracker.ack(record)

    async def commit(self) -> None:
        for (name, p), offset in self._tracker.committable().items():
            self._bus._committed[(self._group, name, p)] = offset

    def lag(self) -> dict[tuple[str, int], Lag]:
        now = time.time()
        return {
            tp: estimate_lag(
                len(self._bus._topics[tp[0]].partitions[tp[1]]) - self._bus._committed.get((self._group, *tp), 0),
                self._tracker.oldest_timestamp_ms(tp),
                now,
            )
            for tp in self._position
        }

    async def close(self) -> None:
        self._closed = True
        await self.commit()
