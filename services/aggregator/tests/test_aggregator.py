"""Aggregator on the in-memory bus and cache: hysteresis, idempotency, order, push, restore, loss-free degradation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from riskwatch import events
from riskwatch.bus import InMemoryBus, Record
from riskwatch.cache import InMemoryCache, keys
from riskwatch.errors import Unavailable
from riskwatch.v1 import events_pb2
from riskwatch_aggregator.aggregator import Aggregator
from riskwatch_aggregator.app import AggregatorApp
from riskwatch_aggregator.config import AggregatorConfig, AggregatorSettings

T0 = 1_800_000_000.0
NONE, LOW, MEDIUM, HIGH = (
    events_pb2.RISK_LEVEL_NONE,
    events_pb2.RISK_LEVEL_LOW,
    events_pb2.RISK_LEVEL_MEDIUM,
    events_pb2.RISK_LEVEL_HIGH,
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FlakyCache(InMemoryCache):
    """The in-memory cache, unreachable while `down` (as RedisCache is when Redis is stopped)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise Unavailable("Failed to connect to Redis (test)")

    async def get(self, key: str) -> bytes | None:
        self._check()
        return await super().get(key)

    async def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        self._check()
        await super().set(key, value, ttl_s)

    async def stream_add(self, key: str, value: bytes, maxlen: int, ttl_s: int | None = None) -> None:
        self._check()
        await super().stream_add(key, value, maxlen, ttl_s)

    async def index_touch(self, key: str, member: str, seen: float) -> None:
        self._check()
        await super().index_touch(key, member, seen)

    async def publish(self, channel: str, message: bytes) -> None:
        self._check()
        await super().publish(channel, message)


def cache_up() -> float | None:
    return REGISTRY.get_sample_value("riskwatch_aggregator_cache_up")


def settings(shutdown_grace_s: float = 10.0, **aggregator: Any) -> AggregatorSettings:
    values: dict[str, Any] = {"cache_retry_s": 0.01, "cache_retry_max_s": 0.05, **aggregator}
    return AggregatorSettings(aggregator=AggregatorConfig.model_validate(values), shutdown_grace_s=shutdown_grace_s)


def result(
    frame: int,
    level: int,
    *,
    camera: str = "cam-1",
    group: str = "g1",
    types: Iterable[str] = (),
    failure: bool = False,
) -> events_pb2.AssessmentResult:
    """The result of the task for `group` in frame `frame` (captured at T0 + frame / 2 FPS)."""
    event_id = events.event_id(camera, frame)
    msg = events_pb2.AssessmentResult(
        task_id=events.task_id(event_id, group),
        event_id=event_id,
        camera_id=camera,
        frame_id=frame,
        group_id=group,
        capture_time=events.timestamp(T0 + frame * 0.5),
        member_track_ids=[1, 2],
    )
    if failure:
        msg.failure.CopyFrom(events_pb2.Failure(kind=events_pb2.FAILURE_KIND_LLM_ERROR))
    else:
        msg.verdict.CopyFrom(events_pb2.Verdict(risk_level=level, risk_types=list(types)))  # type: ignore[arg-type]
    return msg


def record(msg: events_pb2.AssessmentResult, offset: int = 0) -> Record:
    return Record("risk-assessment-results", 0, offset, msg.camera_id.encode(), msg.SerializeToString())


@pytest.fixture
async def cache() -> FlakyCache:
    return FlakyCache()


@pytest.fixture
async def aggregator(cache: FlakyCache) -> AsyncIterator[Aggregator]:
    agg = Aggregator(settings(deescalate_after=3, deescalate_hold_s=10), cache, clock=Clock())
    await agg.start()
    yield agg
    await agg.stop()


async def feed(agg: Aggregator, *results: events_pb2.AssessmentResult) -> None:
    for r in results:
        await asyncio.wait_for(agg.handle(record(r)), 2)


async def stored(cache: InMemoryCache, camera: str = "cam-1") -> events_pb2.CameraRiskState:
    data = await cache.get(keys.camera_state(camera))
    assert data is not None
    return events_pb2.CameraRiskState.FromString(data)


def level(agg: Aggregator, camera: str = "cam-1", group: str = "g1") -> int:
    state = agg.state(camera)
    assert state is not None
    return next(g.verdict.risk_level for g in state.groups if g.group_id == group)


# ---- hysteresis ----------------------------------------------------------------------------------


async def test_escalation_shows_at_once_and_deescalation_only_after_consecutive_lower_verdicts(
    aggregator: Aggregator, cache: FlakyCache
) -> None:
    await feed(aggregator, result(1, LOW), result(2, HIGH))
    assert level(aggregator) == HIGH and (await stored(cache)).max_level == HIGH
    await feed(aggregator, result(3, NONE), result(4, NONE))
    assert level(aggregator) == HIGH  # held
    await feed(aggregator, result(5, HIGH), result(6, NONE), result(7, NONE))
    assert level(aggregator) == HIGH  # the high verdict restarted the count
    await feed(aggregator, result(8, NONE))
    assert level(aggregator) == NONE
    assert (await stored(cache)).max_level == NONE


async def test_deescalation_after_the_hold_time_in_scene_time(cache: FlakyCache) -> None:
    agg = Aggregator(settings(deescalate_after=0, deescalate_hold_s=2), cache, clock=Clock())
    await agg.start()
    try:
        await feed(agg, result(0, MEDIUM), result(1, LOW), result(4, LOW))  # lower since t=0.5, now t=2.0
        assert level(agg) == MEDIUM
        await feed(agg, result(5, LOW))  # t=2.5: 2 s of lower verdicts
        assert level(agg) == LOW
    finally:
        await agg.stop()


# ---- idempotency and order -----------------------------------------------------------------------


async def test_a_redelivered_result_changes_nothing(aggregator: Aggregator, cache: FlakyCache) -> None:
    await feed(aggregator, result(1, HIGH))
    version = (await stored(cache)).version
    await feed(aggregator, result(1, HIGH), result(1, HIGH))
    assert (await stored(cache)).version == version
    assert len(await cache.stream_tail(keys.camera_alerts("cam-1"), 10)) == 1


async def test_an_out_of_order_older_result_is_ignored(aggregator: Aggregator, cache: FlakyCache) -> None:
    await feed(aggregator, result(5, HIGH))
    version = (await stored(cache)).version
    await feed(aggregator, result(3, NONE))  # captured before the verdict we hold
    state = await stored(cache)
    assert state.version == version and state.groups[0].task_id == "cam-1:5/g1"


async def test_identical_verdicts_do_not_push(aggregator: Aggregator, cache: FlakyCache) -> None:
    await feed(aggregator, result(1, LOW, types=["crowding"]))
    version = (await stored(cache)).version
    await feed(aggregator, result(3, LOW, types=["crowding"]))
    assert (await stored(cache)).version == version
    await feed(aggregator, result(4, LOW, types=["crowding", "conflict"]))
    assert (await stored(cache)).version == version + 1


async def test_a_failure_marks_the_group_stale_and_alerts_once_until_a_verdict_clears_it(
    aggregator: Aggregator, cache: FlakyCache
) -> None:
    await feed(aggregator, result(1, HIGH, types=["crowding"]))
    version = (await stored(cache)).version
    async with cache.subscribe(keys.ALERTS_CHANNEL) as messages:
        await feed(aggregator, result(2, HIGH, failure=True))
        pushed = events_pb2.AssessmentResult.FromString(await asyncio.wait_for(anext(aiter(messages)), 2))
    assert pushed.task_id == "cam-1:2/g1" and pushed.HasField("failure")  # pushed to the gateway
    state = await stored(cache)
    assert state.version == version + 1
    group = state.groups[0]
    # the last verdict is kept (the camera stays high) and flagged as failed since
    assert group.verdict.risk_level == HIGH and state.max_level == HIGH
    assert group.HasField("failure") and group.failure.kind == events_pb2.FAILURE_KIND_LLM_ERROR
    alerts = [
        events_pb2.AssessmentResult.FromString(a) for a in await cache.stream_tail(keys.camera_alerts("cam-1"), 10)
    ]
    assert [a.WhichOneof("outcome") for a in alerts] == ["verdict", "failure"]
    # the LLM keeps failing: no more changes, no more alerts
    await feed(aggregator, result(3, HIGH, failure=True), result(4, HIGH, failure=True))
    assert (await stored(cache)).version == version + 1
    assert len(await cache.stream_tail(keys.camera_alerts("cam-1"), 10)) == 2
    # a verdict again, even the same one, clears the mark
    await feed(aggregator, result(5, HIGH, types=["crowding"]))
    state = await stored(cache)
    assert state.version == version + 2 and not state.groups[0].HasField("failure")


async def test_a_failure_of_a_new_group_shows_it_unassessed_and_failed(
    aggregator: Aggregator, cache: FlakyCache
) -> None:
    await feed(aggregator, result(1, LOW, group="a"), result(2, NONE, group="b", failure=True))
    state = await stored(cache)
    failed = next(g for g in state.groups if g.group_id == "b")
    assert not failed.HasField("verdict") and failed.HasField("failure")
    assert state.max_level == LOW
    # a late verdict about an older frame than the failure changes nothing
    await feed(aggregator, result(1, HIGH, group="b"))
    assert next(g for g in (await stored(cache)).groups if g.group_id == "b").HasField("failure")


async def test_a_group_without_verdicts_for_the_ttl_leaves_the_state(cache: FlakyCache) -> None:
    clock = Clock()
    agg = Aggregator(settings(group_ttl_s=5), cache, clock=clock)
    await agg.start()
    try:
        await feed(agg, result(0, HIGH, group="old"))
        clock.now = T0 + 10
        await feed(agg, result(19, LOW, group="new"))
        state = await stored(cache)
        assert [g.group_id for g in state.groups] == ["new"] and state.max_level == LOW
    finally:
        await agg.stop()


async def test_a_result_that_expires_another_group_still_updates_its_own(cache: FlakyCache) -> None:
    clock = Clock()
    agg = Aggregator(settings(group_ttl_s=5), cache, clock=clock)
    await agg.start()
    try:
        await feed(agg, result(0, LOW, group="old"), result(18, LOW, group="kept"))
        clock.now = T0 + 10  # "old" (captured at T0) has expired, "kept" (T0 + 9) has not
        await feed(agg, result(19, HIGH, group="kept"))
        state = await stored(cache)
        assert [(g.group_id, g.verdict.risk_level) for g in state.groups] == [("kept", HIGH)]
        assert state.max_level == HIGH
    finally:
        await agg.stop()


# ---- persistence and push ------------------------------------------------------------------------


async def test_state_is_written_with_ttl_before_it_is_published_and_alerts_are_capped(cache: FlakyCache) -> None:
    agg = Aggregator(AggregatorSettings.model_validate({"redis": {"alert_history_len": 10}}), cache)
    await agg.start()
    seen: list[tuple[int, int]] = []
    try:
        async with cache.subscribe(keys.RISK_STATE_CHANNEL) as messages:

            async def watch() -> None:
                async for data in messages:
                    pushed = events_pb2.CameraRiskState.FromString(data)
                    seen.append((pushed.version, (await stored(cache)).version))

            watcher = asyncio.create_task(watch())
            for frame in range(12):
                await feed(agg, result(frame, HIGH if frame % 2 else LOW, group=f"g{frame}"))
            await asyncio.sleep(0.01)
            watcher.cancel()
        assert len(seen) == 12
        assert all(in_cache >= pushed for pushed, in_cache in seen)  # never published before written
        assert len(await cache.stream_tail(keys.camera_alerts("cam-1"), 100)) == 10
        assert "cam-1" in await cache.index_members(keys.cameras_index(), since=0)
    finally:
        await agg.stop()


async def test_a_client_connecting_mid_stream_gets_the_current_state_then_the_changes(
    aggregator: Aggregator, cache: FlakyCache
) -> None:
    await feed(aggregator, result(1, LOW), result(2, HIGH, group="g2"))
    # what the gateway does: subscribe, then read the key
    async with cache.subscribe(keys.RISK_STATE_CHANNEL) as messages:
        current = await stored(cache)
        assert current.max_level == HIGH and len(current.groups) == 2
        await feed(aggregator, result(3, MEDIUM))
        change = events_pb2.CameraRiskState.FromString(await asyncio.wait_for(anext(messages), 1))
    assert change.version == current.version + 1


async def test_a_restarted_aggregator_continues_from_the_persisted_state(cache: FlakyCache) -> None:
    first = Aggregator(settings(), cache)
    await first.start()
    await feed(first, result(1, HIGH), result(2, LOW, group="g2"))
    await first.stop()
    before = await stored(cache)

    second = Aggregator(settings(), cache)
    await second.start()
    try:
        await feed(second, result(1, HIGH))  # redelivered after the restart: still stale
        assert (await stored(cache)).version == before.version
        await feed(second, result(3, LOW, group="g3"))
        after = await stored(cache)
        assert after.version == before.version + 1
        assert {g.group_id for g in after.groups} == {"g1", "g2", "g3"} and after.max_level == HIGH
    finally:
        await second.stop()


async def test_a_crash_after_the_alert_but_before_the_state_does_not_duplicate_the_alert(cache: FlakyCache) -> None:
    # The alert of task X is in the stream but the state that X produced never reached the cache (crash).
    alert = result(1, HIGH)
    await cache.stream_add(keys.camera_alerts("cam-1"), alert.SerializeToString(), 100)
    restarted = Aggregator(settings(), cache)
    await restarted.start()
    try:
        await feed(restarted, alert)  # redelivered: applies again to the (empty) persisted state
    finally:
        await restarted.stop()
    assert (await stored(cache)).max_level == HIGH
    stream = await cache.stream_tail(keys.camera_alerts("cam-1"), 100)
    assert [events_pb2.AssessmentResult.FromString(a).task_id for a in stream] == [alert.task_id]


async def test_each_new_alert_is_published_once_after_it_is_in_the_stream(
    aggregator: Aggregator, cache: FlakyCache
) -> None:
    pushed: list[tuple[str, list[str]]] = []
    async with cache.subscribe(keys.ALERTS_CHANNEL) as messages:

        async def watch() -> None:
            async for data in messages:
                stream = await cache.stream_tail(keys.camera_alerts("cam-1"), 100)
                tail = [events_pb2.AssessmentResult.FromString(a).task_id for a in stream]
                pushed.append((events_pb2.AssessmentResult.FromString(data).task_id, tail))

        watcher = asyncio.create_task(watch())
        first, second = result(1, HIGH), result(2, LOW, group="g2")
        await feed(aggregator, first, result(1, HIGH), second, result(3, NONE, group="g3"))
        await asyncio.sleep(0.01)
        watcher.cancel()
    # The redelivered result and the verdict of no risk push nothing; each push is already in the stream.
    assert [task_id for task_id, _ in pushed] == [first.task_id, second.task_id]
    assert all(task_id in tail for task_id, tail in pushed)


async def test_an_alert_already_in_the_stream_after_a_crash_is_not_published_again(cache: FlakyCache) -> None:
    alert = result(1, HIGH)
    await cache.stream_add(keys.camera_alerts("cam-1"), alert.SerializeToString(), 100)
    restarted = Aggregator(settings(), cache)
    await restarted.start()
    try:
        async with cache.subscribe(keys.ALERTS_CHANNEL) as messages:
            await feed(restarted, alert)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(messages), 0.2)
    finally:
        await restarted.stop()


# ---- degradation ---------------------------------------------------------------------------------


async def test_with_the_cache_down_results_apply_in_memory_and_are_acknowledged_only_once_written(
    aggregator: Aggregator, cache: FlakyCache
) -> None:
    await feed(aggregator, result(1, LOW))
    cache.down = True
    pending = [
        asyncio.create_task(aggregator.handle(record(r))) for r in (result(2, HIGH), result(3, HIGH, group="g2"))
    ]
    await asyncio.sleep(0.1)
    assert not any(t.done() for t in pending)  # not acknowledged: a crash now loses nothing
    assert level(aggregator) == HIGH and level(aggregator, group="g2") == HIGH  # but applied in memory
    assert aggregator.backlog == 1
    cache.down = False
    await asyncio.wait_for(asyncio.gather(*pending), 2)
    state = await stored(cache)
    assert state.max_level == HIGH and len(state.groups) == 2
    assert len(await cache.stream_tail(keys.camera_alerts("cam-1"), 10)) == 3
    assert aggregator.backlog == 0


async def test_an_outage_is_logged_once_and_the_recovery_once_with_the_cache_up_gauge(
    aggregator: Aggregator, cache: FlakyCache, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="riskwatch_aggregator.aggregator")
    await feed(aggregator, result(1, LOW))
    assert cache_up() == 1
    cache.down = True
    pending = asyncio.create_task(aggregator.handle(record(result(2, HIGH))))
    await asyncio.sleep(0.3)  # retries every 0.01 s, then every 0.05 s: several attempts
    assert cache_up() == 0
    cache.down = False
    await asyncio.wait_for(pending, 2)
    assert cache_up() == 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("cache unavailable (Failed to connect to Redis (test))") for m in messages) == 1
    assert sum(m.startswith("cache is back after") for m in messages) == 1


async def test_a_new_camera_seen_while_the_cache_is_down_is_restored_before_it_is_written(
    cache: FlakyCache,
) -> None:
    first = Aggregator(settings(), cache)
    await first.start()
    await feed(first, result(1, HIGH), result(2, LOW, group="g2"))
    await first.stop()
    before = await stored(cache)

    cache.down = True
    second = Aggregator(settings(), cache)
    await second.start()
    try:
        waiting = asyncio.create_task(second.handle(record(result(3, MEDIUM, group="g3"))))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        cache.down = False
        await asyncio.wait_for(waiting, 2)
        after = await stored(cache)
        # merged into the persisted state, not written over it with a fresh version
        assert after.version == before.version + 1
        assert {g.group_id for g in after.groups} == {"g1", "g2", "g3"}
    finally:
        await second.stop()


async def test_stage_does_not_commit_past_an_unwritten_change_and_redelivers_it_after_a_crash() -> None:
    bus = InMemoryBus(partitions=1)
    cache = FlakyCache()
    conf = settings(shutdown_grace_s=0.2)
    topic = conf.kafka.topics.risk_assessment_results.name
    bus.create_topic(topic, 1)
    bus.create_topic(conf.kafka.topics.dead_letter(topic), 1)
    app = AggregatorApp(conf, bus, cache)
    await app.start()
    await bus.publish(topic, "cam-1", result(1, LOW).SerializeToString())
    for _ in range(100):
        if await cache.get(keys.camera_state("cam-1")):
            break
        await asyncio.sleep(0.01)
    cache.down = True
    for frame, lvl in ((2, HIGH), (3, HIGH)):
        await bus.publish(topic, "cam-1", result(frame, lvl, group=f"g{frame}").SerializeToString())
    for _ in range(100):
        if app.aggregator.state("cam-1") and len(app.aggregator.state("cam-1").groups) == 3:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.01)
    await app.stop()  # "crash" while Redis is down: the two unwritten results stay unacknowledged
    cache.down = False

    restarted = AggregatorApp(conf, bus, cache)
    await restarted.start()
    try:
        for _ in range(200):
            data = await cache.get(keys.camera_state("cam-1"))
            if data and len(events_pb2.CameraRiskState.FromString(data).groups) == 3:
                break
            await asyncio.sleep(0.01)
        state = await stored(cache)
        assert {g.group_id for g in state.groups} == {"g1", "g2", "g3"} and state.max_level == HIGH
    finally:
        await restarted.stop()


def risk_label(camera: str) -> float | None:
    return REGISTRY.get_sample_value("riskwatch_camera_risk_level", {"camera_id": camera})


async def test_idle_cameras_are_forgotten_with_their_labels_and_index_entry(cache: FlakyCache) -> None:
    clock = Clock()
    agg = Aggregator(settings(camera_idle_s=100), cache, clock=clock)
    await agg.start()
    try:
        await feed(agg, result(1, HIGH, camera="cam-old"), result(1, LOW, camera="cam-new"))
        assert risk_label("cam-old") is not None
        assert await cache.index_members(keys.cameras_index(), since=0) == ["cam-new", "cam-old"]

        clock.now = T0 + 150
        await feed(agg, result(2, LOW, camera="cam-new"))
        assert agg.state("cam-old") is None and risk_label("cam-old") is None
        assert agg.state("cam-new") is not None and risk_label("cam-new") is not None

        # a forgotten camera's next result continues from the state stored in the cache (its version)
        await feed(agg, result(3, HIGH, camera="cam-old", group="g2"))
        state = agg.state("cam-old")
        assert state is not None and state.version == 2 and [g.group_id for g in state.groups] == ["g2"]
    finally:
        await agg.stop()


async def test_the_index_drops_cameras_whose_state_expired(cache: FlakyCache) -> None:
    clock = Clock()
    agg = Aggregator(
        AggregatorSettings.model_validate(
            {"redis": {"state_ttl_s": 60}, "aggregator": {"cache_retry_s": 0.01, "cache_retry_max_s": 0.05}}
        ),
        cache,
        clock=clock,
    )
    await agg.start()
    try:
        await cache.index_touch(keys.cameras_index(), "other-instance-cam", T0 - 3600)
        await feed(agg, result(1, HIGH))
        assert await cache.index_members(keys.cameras_index(), since=0) == ["cam-1"]
    finally:
        await agg.stop()
