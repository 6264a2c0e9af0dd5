"""Protobuf decoding of Kafka records: fuzzed records raise only DecodeError and end in <topic>.dlq.

Service modules are imported inside the tests: they are being edited by others, and a broken import
should fail these tests, not the collection of the whole suite.
"""

# Service modules are imported inside tests on purpose (see the docstring).
# ruff: noqa: PLC0415

from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from riskwatch import events
from riskwatch.bus import InMemoryBus, Outgoing, Record, Stage
from riskwatch.errors import DecodeError
from riskwatch.v1 import events_pb2
from tests.fuzz.protos import bad_records, message_contents
from tests.fuzz.support import fuzz_settings
from tests.support.stack import BOOTSTRAP


@dataclass(frozen=True)
class Decoder:
    """One stage's decode function for the records of its input topic."""

    module: str
    function: str
    descriptor: Descriptor
    required: tuple[str, ...]
    # (repeated field, key): the key must be unique among the field's entries, e.g. the group ids of an event.
    unique: tuple[str, str] | None = None

    @property
    def name(self) -> str:
        return f"{self.module.rsplit('.', 1)[-1]}.{self.function}"

    def load(self) -> Callable[[Record], Message]:
        decode: Callable[[Record], Message] = getattr(importlib.import_module(self.module), self.function)
        return decode

    def valid(self) -> st.SearchStrategy[bytes]:
        return message_contents(self.descriptor, self.required)

    def well_formed(self, value: bytes) -> bool:
        """Whether a message from `valid` keeps the uniqueness rule (the decoder must reject it otherwise)."""
        if self.unique is None:
            return True
        repeated, key = self.unique
        message = events.decode(self.descriptor._concrete_class, value, what="generated")
        keys = [getattr(entry, key) for entry in getattr(message, repeated)]
        return len(set(keys)) == len(keys)

    def records(self) -> st.SearchStrategy[bytes]:
        return bad_records(self.valid(), self.descriptor)


DECODERS = [
    Decoder(
        "riskwatch_scheduler.taskgen",
        "decode_detection_event",
        events_pb2.DetectionEvent.DESCRIPTOR,
        ("event_id", "camera_id"),
        unique=("groups", "group_id"),
    ),
    Decoder(
        "riskwatch_scheduler.taskgen",
        "decode_result",
        events_pb2.AssessmentResult.DESCRIPTOR,
        ("camera_id", "group_id"),
    ),
    Decoder(
        "riskwatch_scheduler.scheduler", "decode_task", events_pb2.AssessmentTask.DESCRIPTOR, ("task_id", "camera_id")
    ),
    Decoder(
        "riskwatch_aggregator.aggregator",
        "decode_result",
        events_pb2.AssessmentResult.DESCRIPTOR,
        ("task_id", "camera_id"),
    ),
]


def record(value: bytes, topic: str = "in", offset: int = 0, key: bytes | None = b"cam") -> Record:
    return Record(topic, 0, offset, key, value)


def decodes(decode: Callable[[Record], Message], value: bytes) -> bool:
    """Whether `value` decodes; a DecodeError must say which record and what; any other error fails the test."""
    try:
        decode(record(value, "fuzz-topic", 17))
    except DecodeError as exc:
        assert "fuzz-topic[0]@17" in str(exc), f"the error does not say which record: {exc}"
        return False
    return True


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.name)
def test_decoders_raise_only_decode_error(decoder: Decoder) -> None:
    decode = decoder.load()

    @fuzz_settings(examples=200, long=1500)
    @given(value=decoder.records())
    def check(value: bytes) -> None:
        decodes(decode, value)

    check()


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.name)
def test_decoders_accept_any_well_formed_message_with_its_ids(decoder: Decoder) -> None:
    decode = decoder.load()

    @fuzz_settings(examples=100)
    @given(value=decoder.valid())
    def check(value: bytes) -> None:
        assert decodes(decode, value) == decoder.well_formed(value)

    check()


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.name)
def test_records_without_their_ids_are_decode_errors(decoder: Decoder) -> None:
    decode = decoder.load()
    for value in (b"", b"\x00", b"\xff" * 12, events_pb2.CameraRiskState(version=3).SerializeToString()):
        assert not decodes(decode, value)


# --- through the real Stage over the in-memory bus ---------------------------------------------------

Handler = Callable[[Record], Awaitable[Sequence[Outgoing]]]


def _dead_letter(topic: str) -> str:
    return topic + ".dlq"


async def _run_until_committed(bus: InMemoryBus, stage: Stage, topic: str, timeout: float = 30.0) -> None:
    """Run `stage` until its group has committed every record of `topic` (the partitions moved on)."""
    total = len(bus.records(topic))
    await stage.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            await asyncio.sleep(0.05)
            lag = {tp: lag for tp, lag in stage.lag.items() if tp[0] == topic}
            if lag and sum(v.messages for v in lag.values()) == 0:
                return
            assert time.monotonic() < deadline, f"{total} records, lag still {lag}"
    finally:
        await stage.stop()


@dataclass
class Mixed:
    """A stream of valid and fuzzed records, and which of them the stage's decoder rejects."""

    values: list[bytes]
    rejected: list[bool]


@st.composite
def mixed_streams(draw: st.DrawFn, decoder: Decoder, decode: Callable[[Record], Message]) -> Mixed:
    values = draw(st.lists(decoder.valid() | decoder.records(), min_size=1, max_size=40))
    return Mixed(values, [not decodes(decode, v) for v in values])


def _check_dead_letters(bus: InMemoryBus, topic: str, mixed: Mixed) -> None:
    dead = bus.records(_dead_letter(topic))
    for letter in dead:
        error = letter.header("error") or b""
        assert error.startswith(b"DecodeError: "), f"a decodable record was dead-lettered: {error!r}"
        assert (letter.header("source") or b"").startswith(f"{topic}[".encode()), letter.headers
    expected = sorted(v for v, bad in zip(mixed.values, mixed.rejected, strict=True) if bad)
    assert sorted(d.value for d in dead) == expected


async def _stage_over_memory(decoder: Decoder, handler: Handler, mixed: Mixed) -> InMemoryBus:
    bus = InMemoryBus(partitions=3)
    topic = "input"
    for i, value in enumerate(mixed.values):
        await bus.publish(topic, f"cam-{i % 5}", value)
    group = f"fuzz-{uuid.uuid4().hex[:6]}"
    stage = Stage(
        decoder.name,
        bus,
        bus.consumer(group, [topic]),
        handler,
        dead_letter_topic=_dead_letter,
        group=group,
        commit_interval_s=0.05,
    )
    await _run_until_committed(bus, stage, topic)
    _check_dead_letters(bus, topic, mixed)
    return bus


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.name)
async def test_stage_dead_letters_every_undecodable_record_and_processes_the_others(decoder: Decoder) -> None:
    decode = decoder.load()
    streams = mixed_streams(decoder, decode)

    async def handler(r: Record) -> list[Outgoing]:
        return [Outgoing("processed", "k", decode(r).SerializeToString())]

    @fuzz_settings(examples=3, long=40)
    @given(mixed=streams)
    def check(mixed: Mixed) -> None:
        async def run() -> None:
            bus = await _stage_over_memory(decoder, handler, mixed)
            processed = sorted(r.value for r in bus.records("processed"))
            valid = [v for v, bad in zip(mixed.values, mixed.rejected, strict=True) if not bad]
            assert processed == sorted(decode(record(v)).SerializeToString() for v in valid)

        asyncio.run(run())

    await asyncio.to_thread(check)


def _task_generator_handler() -> Handler:
    from riskwatch_scheduler.config import SchedulerSettings
    from riskwatch_scheduler.taskgen import TaskGenerator

    generator: Any = TaskGenerator(SchedulerSettings())
    handle: Handler = generator.handle
    return handle


@pytest.mark.parametrize(
    ("decoder", "make_handler"),
    [(DECODERS[0], _task_generator_handler)],
    ids=["task-generator"],
)
async def test_the_real_handler_dead_letters_only_undecodable_records(
    decoder: Decoder, make_handler: Callable[[], Handler]
) -> None:
    """Well-formed records with any contents (unknown enum values, NaN, huge numbers) must not crash the stage."""
    decode = decoder.load()
    streams = mixed_streams(decoder, decode)

    @fuzz_settings(examples=3, long=40)
    @given(mixed=streams)
    def check(mixed: Mixed) -> None:
        async def run() -> None:
            await _stage_over_memory(decoder, make_handler(), mixed)

        asyncio.run(run())

    await asyncio.to_thread(check)


async def test_the_real_aggregator_dead_letters_only_undecodable_records() -> None:
    from riskwatch.cache import InMemoryCache
    from riskwatch_aggregator.app import AggregatorApp
    from riskwatch_aggregator.config import AggregatorSettings

    decoder = DECODERS[3]
    decode = decoder.load()
    streams = mixed_streams(decoder, decode)

    @fuzz_settings(examples=3, long=40)
    @given(mixed=streams)
    def check(mixed: Mixed) -> None:
        async def run() -> None:
            settings = AggregatorSettings()
            topic = settings.kafka.topics.risk_assessment_results.name
            bus = InMemoryBus(partitions=3)
            for i, value in enumerate(mixed.values):
                await bus.publish(topic, f"cam-{i % 5}", value)
            app = AggregatorApp(settings, bus, InMemoryCache())
            await app.aggregator.start()
            try:
                await _run_until_committed(bus, app.stage, topic)
            finally:
                await app.aggregator.stop()
            dead = bus.records(settings.kafka.topics.dead_letter(topic))
            for letter in dead:
                error = letter.header("error") or b""
                assert error.startswith(b"DecodeError: "), f"a decodable record was dead-lettered: {error!r}"
            expected = sorted(v for v, bad in zip(mixed.values, mixed.rejected, strict=True) if bad)
            assert sorted(d.value for d in dead) == expected

        asyncio.run(run())

    await asyncio.to_thread(check)


# --- against the real Kafka ----------------------------------------------------------------------


@pytest.mark.infra
async def test_garbage_on_real_kafka_ends_in_the_dead_letter_topic_and_the_partition_moves_on(
    topic_factory: Callable[..., str],
) -> None:
    from riskwatch.bus.kafka import KafkaBus
    from riskwatch_scheduler.config import SchedulerSettings
    from riskwatch_scheduler.taskgen import TaskGenerator

    topic = topic_factory("fuzz-detections", partitions=1)
    decisions = topic_factory("fuzz-decisions", partitions=1)
    dead_letters = topic_factory("fuzz-detections-dlq", partitions=1)
    garbage = [b"\xff\xfe not protobuf", b"\x0a\x05ab", events_pb2.AssessmentTask(task_id="t").SerializeToString()]
    valid = events_pb2.DetectionEvent(
        event_id="cam-1:1", camera_id="cam-1", frame_id=1, capture_time=events.timestamp()
    ).SerializeToString()
    bus = KafkaBus(BOOTSTRAP)
    try:
        for value in [garbage[0], valid, garbage[1], garbage[2], valid]:
            await bus.publish(topic, "cam-1", value)
        group = f"fuzz-{uuid.uuid4().hex[:10]}"
        settings = SchedulerSettings.model_validate({"kafka": {"topics": {"task_decisions": {"name": decisions}}}})
        generator = TaskGenerator(settings)
        stage = Stage(
            "fuzz",
            bus,
            bus.consumer(group, [topic]),
            generator.handle,
            dead_letter_topic=lambda _topic: dead_letters,
            group=group,
            commit_interval_s=0.1,
        )
        await _run_until_committed_kafka(stage, topic)
        reader = bus.consumer(f"fuzz-dlq-{uuid.uuid4().hex[:10]}", [dead_letters])
        dead: list[Record] = []
        async with asyncio.timeout(30):
            while len(dead) < len(garbage):
                dead.extend(await reader.poll(timeout_s=0.5))
        await reader.close()
        assert [d.value for d in dead] == garbage
        for letter in dead:
            assert (letter.header("error") or b"").startswith(b"DecodeError: "), letter.headers
            assert (letter.header("source") or b"").startswith(f"{topic}[0]@".encode())
    finally:
        await bus.close()


async def _run_until_committed_kafka(stage: Stage, topic: str, timeout: float = 60.0) -> None:
    await stage.start()
    try:
        async with asyncio.timeout(timeout):
            while True:
                await asyncio.sleep(0.1)
                lag = [v.messages for tp, v in stage.lag.items() if tp[0] == topic]
                if lag and sum(lag) == 0:
                    return
    finally:
        await stage.stop()
