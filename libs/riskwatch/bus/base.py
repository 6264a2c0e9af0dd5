"""The event-bus interface: publish with acknowledgement, consume with explicit acknowledgement."""

from __future__ import annotations

import abc
from collections import deque
from dataclasses import dataclass, field
from typing import Self

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message. `key` is the camera id for riskwatch's topics."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int = 0
    headers: Headers = ()

    @property
    def where(self) -> str:
        """topic[partition]@offset, for logs."""
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


@dataclass(frozen=True, slots=True)
class Lag:
    """Messages not yet processed in a partition, and an estimate of how old the oldest of them is."""

    messages: int
    seconds: float


def estimate_lag(messages: int, oldest_timestamp_ms: int | None, now_s: float) -> Lag:
    """Age of the oldest unprocessed record: exact when it was delivered, else bounded by the last delivered one."""
    if messages <= 0 or not oldest_timestamp_ms:
        return Lag(max(messages, 0), 0.0)
    return Lag(messages, max(0.0, now_s - oldest_timestamp_ms / 1000))


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message a stage wants published once it has processed a record."""

    topic: str
    key: str
    value: bytes
    headers: Headers = field(default=())


class Consumer(abc.ABC):
    """A group member. Offsets advance only for acknowledged records, contiguously per partition."""

    @abc.abstractmethod
    async def poll(self, max_records: int = 500, timeout_s: float = 0.5) -> list[Record]:
        """The next records (possibly none after `timeout_s`)."""

    @abc.abstractmethod
    def ack(self, record: Record) -> None:
        """`record` is fully processed and everything it produced is acknowledged."""

    @abc.abstractmethod
    async def commit(self) -> None:
        """Commit, per partition, the offset after the highest contiguous acknowledged record."""

    @abc.abstractmethod
    def lag(self) -> dict[tuple[str, int], Lag]:
        """How far behind the end of each assigned partition this member is, as last seen."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Commit what is committable and leave the group; unacknowledged records are redelivered."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class EventBus(abc.ABC):
    """Topics with partitions; one implementation over Apache Kafka, one in memory."""

    @abc.abstractmethod
    async def publish(self, topic: str, key: str, value: bytes, headers: Headers = ()) -> None:
        """Return once the bus has durably acknowledged the message (raise if it cannot)."""

    @abc.abstractmethod
    def consumer(self, group: str, topics: list[str]) -> Consumer:
        """A new member of consumer group `group` subscribed to `topics`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush outstanding publishes and release connections."""


class OffsetTracker:
    """Per partition: which delivered offsets are acknowledged, and the contiguous commit point."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], deque[tuple[int, int]]] = {}
        self._acked: dict[tuple[str, int], set[int]] = {}
        self._commit_point: dict[tuple[str, int], int] = {}
        self._last_timestamp_ms: dict[tuple[str, int], int] = {}

    def delivered(self, record: Record) -> None:
        tp = (record.topic, record.partition)
        self._pending.setdefault(tp, deque()).append((record.offset, record.timestamp_ms))
        self._acked.setdefault(tp, set())
        self._last_timestamp_ms[tp] = record.timestamp_ms

    def ack(self, record: Record) -> None:
        tp = (record.topic, record.partition)
        pending = self._pending.get(tp)
        if pending is None:
            return  # partition was revoked meanwhile; its records will be redelivered elsewhere
        acked = self._acked[tp]
        acked.add(record.offset)
        while pending and pending[0][0] in acked:
            offset, _ = pending.popleft()
            acked.discard(offset)
            self._commit_point[tp] = offset + 1

    def committable(self) -> dict[tuple[str, int], int]:
        """Offsets to commit (the next offset to read), only for partitions that advanced."""
        ready = dict(self._commit_point)
        self._commit_point.clear()
        return ready

    def oldest_timestamp_ms(self, tp: tuple[str, int]) -> int | None:
        """Broker timestamp of the oldest unacknowledged record, else of the last record delivered."""
        pending = self._pending.get(tp)
        if pending:
            return pending[0][1]
        return self._last_timestamp_ms.get(tp)

    def pending_count(self, tp: tuple[str, int]) -> int:
        return len(self._pending.get(tp, ()))

    def in_flight(self) -> int:
        return sum(len(p) for p in self._pending.values())

    def forget(self, partitions: list[tuple[str, int]]) -> None:
        """Drop state for revoked partitions."""
        for tp in partitions:
            self._pending.pop(tp, None)
            self._acked.pop(tp, None)
            self._commit_point.pop(tp, None)
            self._last_timestamp_ms.pop(tp, None)
