"""The in-memory bus and the stage loop: explicit acknowledgement, contiguous commits, dead letters."""

from __future__ import annotations

import asyncio

import pytest

from riskwatch.bus import InMemoryBus, Outgoing, Record, Stage
from riskwatch.bus.base import Headers, OffsetTracker
from riskwatch.bus.stage import STAGE_FAILED, Handler
from riskwatch.errors import BusFailed, DecodeError


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


async def _run_stage(
    bus: InMemoryBus, handler: Handler, concurrency: int = 1, group: str = "g", source: str = "in"
) -> Stage:
    stage = Stage(
        group,
        bus,
        bus.consumer(group, [source]),
        handler,
        dead_letter_topic=lambda t: t + ".dlq",
        group=group,
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


async def test_a_handler_failing_every_attempt_is_dead_lettered_after_max_attempts() -> None:
    bus = InMemoryBus(partitions=1)
    calls = 0

    async def broken(record: Record) -> list[Outgoing]:
        nonlocal calls
        calls += 1
        raise RuntimeError(f"bug {calls}")

    await bus.publish("in", "cam", b"x")
    stage = await _run_stage(bus, broken)
    await _until(lambda: len(bus.records("in.dlq")) == 1)
    await stage.stop()
    assert calls == 3  # the default max_attempts
    assert b"RuntimeError: bug 3" in (bus.records("in.dlq")[0].header("error") or b"")
    assert sum(lag.messages for lag in bus.consumer("g", ["in"]).lag().values()) == 0


async def test_publishing_retries_only_the_outputs_not_yet_acknowledged() -> None:
    attempts: dict[str, int] = {}

    class FlakyBus(InMemoryBus):
        async def publish(self, topic: str, key: str, value: bytes, headers: Headers = ()) -> None:
            attempts[key] = attempts.get(key, 0) + 1
            if key == "b" and attempts[key] == 1:
                raise BusFailed("broker away")
            await super().publish(topic, key, value, headers)

    bus = FlakyBus(partitions=1)

    async def fan_out(record: Record) -> list[Outgoing]:
        return [Outgoing("out", k, record.value) for k in ("a", "b", "c")]

    await bus.publish("in", "cam", b"x")
    stage = await _run_stage(bus, fan_out)
    await _until(lambda: len(bus.records("out")) == 3)
    await stage.stop()
    assert attempts == {"cam": 1, "a": 1, "b": 2, "c": 1}
    assert sum(lag.messages for lag in bus.consumer("g", ["in"]).lag().values()) == 0


async def test_a_record_whose_publish_is_cancelled_stays_unacknowledged() -> None:
    class SilentBus(InMemoryBus):
        async def publish(self, topic: str, key: str, value: bytes, headers: Headers = ()) -> None:
            if topic == "out":
                await asyncio.Event().wait()  # the broker never acknowledges
            await super().publish(topic, key, value, headers)

    bus = SilentBus(partitions=1)

    async def echo(record: Record) -> list[Outgoing]:
        return [Outgoing("out", "cam", record.value)]

    await bus.publish("in", "cam", b"x")
    stage = Stage(
        "s",
        bus,
        bus.consumer("g", ["in"]),
        echo,
        dead_letter_topic=lambda t: t + ".dlq",
        group="g",
        concurrency=2,
        commit_interval_s=0.01,
        drain_timeout_s=0.1,
    )
    await stage.start()
    await _until(lambda: stage.in_flight == 1)
    await stage.stop()  # the drain times out and cancels the publish
    assert [r.value for r in await bus.consumer("g", ["in"]).poll(timeout_s=0.1)] == [b"x"]


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


async def _publish(bus: InMemoryBus, topic: str, count: int) -> None:
    for i in range(count):
        await bus.publish(topic, "cam", str(i).encode())


async def _consume_all(bus: InMemoryBus, group: str, topic: str, commit_up_to: int | None = None) -> list[Record]:
    """Poll what `group` has left of `topic`; acknowledge and commit it (or only offsets below `commit_up_to`)."""
    async with bus.consumer(group, [topic]) as consumer:
        batch = await consumer.poll(timeout_s=0)
        for record in batch:
            if commit_up_to is None or record.offset < commit_up_to:
                consumer.ack(record)
        await consumer.commit()
    return batch


def _offsets(records: list[Record]) -> list[int]:
    return [r.offset for r in records]


async def test_retention_keeps_only_the_newest_committed_records() -> None:
    bus = InMemoryBus(partitions=1, retention_records=3)
    bus.consumer("g", ["t"])
    await _publish(bus, "t", 10)
    assert len(bus.records("t")) == 10  # nothing is committed yet
    await _consume_all(bus, "g", "t")
    assert _offsets(bus.records("t")) == [7, 8, 9]
    assert [r.value for r in bus.records("t")] == [b"7", b"8", b"9"]


async def test_retention_never_drops_what_a_group_has_not_committed() -> None:
    bus = InMemoryBus(partitions=1, retention_records=2)
    bus.consumer("absent", ["t"])  # subscribes, never commits
    await _publish(bus, "t", 10)
    await _consume_all(bus, "fast", "t")
    assert len(bus.records("t")) == 10

    bus = InMemoryBus(partitions=1, retention_records=2)
    bus.consumer("slow", ["t"])
    await _publish(bus, "t", 20)
    await _consume_all(bus, "fast", "t")
    await _consume_all(bus, "slow", "t", commit_up_to=10)
    assert _offsets(bus.records("t")) == list(range(8, 20))
    assert [r.value for r in await _consume_all(bus, "slow", "t")] == [str(i).encode() for i in range(10, 20)]
    assert _offsets(bus.records("t")) == [18, 19]


async def test_offsets_and_lag_stay_absolute_across_a_trim() -> None:
    bus = InMemoryBus(partitions=1, retention_records=2)
    bus.consumer("g", ["t"])
    await _publish(bus, "t", 10)
    await _consume_all(bus, "g", "t")
    await _publish(bus, "t", 3)
    assert _offsets(bus.records("t")) == [8, 9, 10, 11, 12]
    consumer = bus.consumer("g", ["t"])
    assert consumer.lag()[("t", 0)].messages == 3
    batch = await consumer.poll(timeout_s=0)
    assert _offsets(batch) == [10, 11, 12] and [r.value for r in batch] == [b"0", b"1", b"2"]
    consumer.ack(batch[0])
    await consumer.commit()
    assert consumer.lag()[("t", 0)].messages == 2
    assert _offsets(bus.records("t")) == [9, 10, 11, 12]


async def test_a_group_created_after_trimming_starts_at_the_oldest_retained_record() -> None:
    bus = InMemoryBus(partitions=1, retention_records=3)
    bus.consumer("early", ["t"])
    await _publish(bus, "t", 10)
    await _consume_all(bus, "early", "t")
    late = bus.consumer("late", ["t"])
    assert late.lag()[("t", 0)].messages == 3
    assert _offsets(await late.poll(timeout_s=0)) == [7, 8, 9]


async def test_a_topic_no_group_consumes_keeps_only_the_newest_records() -> None:
    bus = InMemoryBus(partitions=1, retention_records=3)
    await _publish(bus, "audit", 10)
    assert _offsets(bus.records("audit")) == [7, 8, 9]


async def test_without_retention_every_record_is_kept() -> None:
    bus = InMemoryBus(partitions=1)
    await _publish(bus, "audit", 10)
    await _consume_all(bus, "g", "t")
    assert _offsets(bus.records("audit")) == list(range(10))


async def test_a_long_embedded_like_run_keeps_a_bounded_number_of_records() -> None:
    retention, partitions, cameras, frames = 20, 4, 8, 150
    bus = InMemoryBus(partitions=partitions, retention_records=retention)
    seen: list[bytes] = []

    async def detect(record: Record) -> list[Outgoing]:
        return [Outgoing("tasks", record.key.decode() if record.key else "", record.value)]

    async def assess(record: Record) -> list[Outgoing]:
        seen.append(record.value)
        return [Outgoing("results", "k", record.value), Outgoing("audit", "k", record.value)]

    bus.consumer("aggregate", ["results"])  # subscribed but committing nothing: keeps every result
    stages = [await _run_stage(bus, detect, 8, "detect", "frames"), await _run_stage(bus, assess, 8, "assess", "tasks")]
    for frame in range(frames):
        for camera in range(cameras):
            await bus.publish("frames", f"cam-{camera}", f"{camera}/{frame}".encode())
        await asyncio.sleep(0)
    await _until(lambda: len(seen) == cameras * frames)
    for stage in stages:
        await stage.stop()

    assert sorted(seen) == sorted(f"{c}/{f}".encode() for c in range(cameras) for f in range(frames))
    for topic in ("frames", "tasks", "audit"):
        assert len(bus.records(topic)) <= partitions * retention, topic
    assert len(bus.records("results")) == cameras * frames


async def test_a_failing_consume_loop_commits_what_is_done_and_ends_the_process() -> None:
    """A consumer that cannot go on (here: its third poll fails) must not leave a live process consuming nothing."""
    bus = InMemoryBus(partitions=1)
    for i in range(3):
        await bus.publish("in", "cam", str(i).encode())
    consumer = bus.consumer("g", ["in"])
    polls = 0
    real_poll = consumer.poll

    async def poll(max_records: int = 500, timeout_s: float = 0.5) -> list[Record]:
        nonlocal polls
        polls += 1
        if polls == 3:
            raise BusFailed("fenced")
        return await real_poll(max_records=1, timeout_s=timeout_s)

    consumer.poll = poll  # type: ignore[method-assign]

    async def echo(record: Record) -> list[Outgoing]:
        return [Outgoing("out", "cam", record.value)]

    stage = Stage("s", bus, consumer, echo, dead_letter_topic=lambda t: t + ".dlq", group="g", commit_interval_s=60)
    with pytest.raises(SystemExit) as exited:
        await stage.run()
    assert exited.value.code == STAGE_FAILED
    # The two records processed before the failure are published and committed; the third is redelivered.
    assert [r.value for r in bus.records("out")] == [b"0", b"1"]
    assert [r.value for r in await bus.consumer("g", ["in"]).poll(timeout_s=0.1)] == [b"2"]
