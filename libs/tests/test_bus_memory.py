"""The in-memory bus and the stage loop: explicit acknowledgement, contiguous commits, dead letters."""

from __future__ import annotations

import asyncio

from riskwatch.bus import InMemoryBus, Outgoing, Record, Stage
from riskwatch.bus.base import OffsetTracker
from riskwatch.errors import DecodeError


def _record(offset: int, partition: int = 0) -> Record:
    return Record("t", partition, offset, b"k", b"v")


def test_commit_point_advances_only_over_contiguous_acks() -> None:
    tracker = OffsetTracker()
    records = [_record(i) for i in range(4)]
    for r in records:
        tracker.delivered(r)
    tracker.ack(records[1])
    tracker.ack(records[2])
    assert tracker.committable() == {}
    tracker.ack(records[0])
    assert tracker.committable() == {("t", 0): 3}
    tracker.ack(records[3])
    assert tracker.committable() == {("t", 0): 4}


async def test_unacknowledged_records_are_redelivered_to_the_next_member() -> None:
    bus = InMemoryBus(partitions=1)
    for i in range(3):
        await bus.publish("t", "cam", f"m{i}".encode())
    first = bus.consumer("g", ["t"])
    batch = await first.poll()
    first.ack(batch[0])
    await first.close()  # m1 and m2 were never acknowledged
    second = bus.consumer("g", ["t"])
    assert [r.value for r in await second.poll()] == [b"m1", b"m2"]


async def test_same_key_same_partition() -> None:
    bus = InMemoryBus(partitions=8)
    for i in range(5):
        await bus.publish("t", "cam-7", str(i).encode())
    assert len({r.partition for r in bus.records("t")}) == 1


async def _run_stage(bus: InMemoryBus, handler, concurrency: int = 1) -> Stage:  # type: ignore[no-untyped-def]
    stage = Stage(
        "s",
        bus,
        bus.consumer("g", ["in"]),
        handler,
        dead_letter_topic=lambda t: t + ".dlq",
        group="g",
        concurrency=concurrency,
        commit_interval_s=0.01,
    )
    await stage.start()
    return stage


async def _until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_stage_publishes_outputs_then_commits() -> None:
    bus = InMemoryBus(partitions=2)

    async def double(record: Record) -> list[Outgoing]:
        return [Outgoing("out", "k", record.value * 2)]

    for i in range(10):
        await bus.publish("in", f"cam-{i}", str(i).encode())
    stage = await _run_stage(bus, double, concurrency=4)
    await _until(lambda: len(bus.records("out")) == 10)
    await stage.stop()
    assert sorted(r.value for r in bus.records("out")) == sorted(str(i).encode() * 2 for i in range(10))
    assert sum(lag.messages for lag in bus.consumer("g", ["in"]).lag().values()) == 0


async def test_undecodable_record_goes_to_dead_letter_topic_and_partition_moves_on() -> None:
    bus = InMemoryBus(partitions=1)

    async def strict(record: Record) -> list[Outgoing]:
        if record.value == b"garbage":
            raise DecodeError("not a DetectionEvent")
        return [Outgoing("out", "k", record.value)]

    for value in (b"a", b"garbage", b"b"):
        await bus.publish("in", "cam", value)
    stage = await _run_stage(bus, strict)
    await _until(lambda: len(bus.records("out")) == 2)
    await stage.stop()
    dead = bus.records("in.dlq")
    assert [r.value for r in dead] == [b"garbage"]
    assert b"not a DetectionEvent" in (dead[0].header("error") or b"")
    assert dead[0].header("source") == b"in[0]@1"


async def test_handler_errors_are_retried_before_dead_lettering() -> None:
    bus = InMemoryBus(partitions=1)
    calls = 0

    async def flaky(record: Record) -> list[Outgoing]:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("transient")
        return [Outgoing("out", "k", record.value)]

    await bus.publish("in", "cam", b"x")
    stage = await _run_stage(bus, flaky)
    await _until(lambda: len(bus.records("out")) == 1)
    await stage.stop()
    assert calls == 3 and bus.records("in.dlq") == []


async def test_lag_counts_unprocessed_records_and_their_age() -> None:
    bus = InMemoryBus(partitions=1)
    for i in range(3):
        await bus.publish("t", "cam", str(i).encode())
    consumer = bus.consumer("g", ["t"])
    batch = await consumer.poll()
    consumer.ack(batch[0])
    await consumer.commit()
    (lag,) = consumer.lag().values()
    assert lag.messages == 2
    assert 0 <= lag.seconds < 5
