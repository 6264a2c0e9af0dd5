"""In-process event bus with Kafka's semantics: partitions by key, group offsets, redelivery of unacked records.

With `retention_records` set, each partition keeps whatever a subscribed group has not committed yet plus
only the newest `retention_records` of what every group has committed; offsets stay absolute, as in Kafka.
"""

from __future__ import annotations

import asyncio
import time
import zlib

from riskwatch.bus.base import Consumer, EventBus, Headers, Lag, OffsetTracker, Record, estimate_lag

# Embedded mode's retention per partition. Stages only need records they have not committed, which are
# kept regardless, so this only bounds history kept for inspection: a camera's records share one
# partition, so 1000 is ~8 minutes of a 2 FPS camera, about 20 MB of ~20 KB crops per partition.
EMBEDDED_RETENTION_RECORDS = 1000


class _Partition:
    """A log whose oldest records can be dropped; `base` is the absolute offset of the oldest one kept."""

    def __init__(self) -> None:
        # Keyed by absolute offset: reading at any position and dropping the oldest are both O(1).
        self.records: dict[int, Record] = {}
        self.base = 0

    @property
    def end(self) -> int:
        """The offset the next record will get (Kafka's log-end offset)."""
        return self.base + len(self.records)

    def read(self, start: int, limit: int) -> list[Record]:
        """Up to `limit` records from `start`, or from the oldest kept record if `start` was dropped."""
        start = max(start, self.base)
        return [self.records[offset] for offset in range(start, min(start + limit, self.end))]

    def drop_before(self, offset: int) -> None:
        offset = min(offset, self.end)
        for dropped in range(self.base, offset):
            del self.records[dropped]
        self.base = max(self.base, offset)


class _Topic:
    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.partitions = [_Partition() for _ in range(partitions)]
        # Groups that ever subscribed: their committed offsets decide what may be dropped.
        self.groups: set[str] = set()


class InMemoryBus(EventBus):
    """Topics live in memory; committed offsets live here, so a new consumer resumes where its group left off.

    `retention_records` (per partition) bounds what has been committed by every subscribed group, or
    everything in a topic no group consumes; None keeps every record.
    """

    def __init__(self, partitions: int = 4, retention_records: int | None = None) -> None:
        if retention_records is not None and retention_records < 0:
            raise ValueError(f"retention_records must be >= 0, not {retention_records}")
        self._default_partitions = partitions
        self._retention_records = retention_records
        self._topics: dict[str, _Topic] = {}
        self._committed: dict[tuple[str, str, int], int] = {}
        self._arrived = asyncio.Condition()

    def create_topic(self, name: str, partitions: int | None = None) -> None:
        if name not in self._topics:
            self._topics[name] = _Topic(name, partitions or self._default_partitions)

    def records(self, topic: str) -> list[Record]:
        """The records of `topic` still retained (every one ever published without a retention)."""
        self.create_topic(topic)
        return [r for p in self._topics[topic].partitions for r in p.records.values()]

    async def publish(self, topic: str, key: str, value: bytes, headers: Headers = ()) -> None:
        self.create_topic(topic)
        t = self._topics[topic]
        # Same role as Kafka's murmur2 partitioner: one key always lands in one partition.
        partition = zlib.crc32(key.encode()) % len(t.partitions)
        log = t.partitions[partition]
        log.records[log.end] = Record(topic, partition, log.end, key.encode(), value, int(time.time() * 1000), headers)
        if not t.groups:
            # With a subscribed group, what may be dropped changes only when it commits (see _commit).
            self._trim(t, partition)
        async with self._arrived:
            self._arrived.notify_all()

    def consumer(self, group: str, topics: list[str]) -> Consumer:
        for name in topics:
            self.create_topic(name)
            self._topics[name].groups.add(group)
        return _InMemoryConsumer(self, group, topics)

    async def close(self) -> None:
        return None

    def _commit(self, group: str, topic: str, partition: int, offset: int) -> None:
        self._committed[(group, topic, partition)] = offset
        self._trim(self._topics[topic], partition)

    def _trim(self, topic: _Topic, partition: int) -> None:
        """Drop what every group has committed, except the newest `retention_records` of it."""
        if self._retention_records is None:
            return
        log = topic.partitions[partition]
        # A group that has not committed yet still has to read everything kept.
        consumed = min((self._committed.get((g, topic.name, partition), 0) for g in topic.groups), default=log.end)
        log.drop_before(consumed - self._retention_records)


class _InMemoryConsumer(Consumer):
    def __init__(self, bus: InMemoryBus, group: str, topics: list[str]) -> None:
        self._bus = bus
        self._group = group
        self._topics = topics
        self._tracker = OffsetTracker()
        # Next offset to deliver, starting from the group's committed position (or the oldest record kept).
        self._position = {
            (name, p): bus._committed.get((group, name, p), 0)
            for name in topics
            for p in range(len(bus._topics[name].partitions))
        }
        self._closed = False

    def _take(self, max_records: int) -> list[Record]:
        batch: list[Record] = []
        for (name, p), pos in self._position.items():
            take = self._bus._topics[name].partitions[p].read(pos, max_records - len(batch))
            for record in take:
                self._tracker.delivered(record)
            batch.extend(take)
            if take:
                self._position[(name, p)] = take[-1].offset + 1
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
            self._bus._commit(self._group, name, p, offset)

    def lag(self) -> dict[tuple[str, int], Lag]:
        now = time.time()
        lags: dict[tuple[str, int], Lag] = {}
        for name, p in self._position:
            log = self._bus._topics[name].partitions[p]
            # Records dropped before this group subscribed were never its to process.
            committed = max(self._bus._committed.get((self._group, name, p), 0), log.base)
            lags[(name, p)] = estimate_lag(log.end - committed, self._tracker.oldest_timestamp_ms((name, p)), now)
        return lags

    async def close(self) -> None:
        self._closed = True
        await self.commit()
