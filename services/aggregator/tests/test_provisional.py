"""Provisional alerts: measured danger raises a group at once; the next LLM verdict confirms, upgrades or dismisses it;
a provisional no verdict resolves expires; redeliveries and restarts change none of that."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import REGISTRY

from riskwatch.cache import keys
from riskwatch.v1 import events_pb2
from riskwatch_aggregator.aggregator import Aggregator
from services.aggregator.tests.test_aggregator import (
    HIGH,
    LOW,
    MEDIUM,
    NONE,
    T0,
    Clock,
    FlakyCache,
    feed,
    level,
    result,
    settings,
    stored,
)

CONFIRMED, UPGRADED, DISMISSED, EXPIRED = (
    events_pb2.PROVISIONAL_RESOLUTION_CONFIRMED,
    events_pb2.PROVISIONAL_RESOLUTION_UPGRADED,
    events_pb2.PROVISIONAL_RESOLUTION_DISMISSED,
    events_pb2.PROVISIONAL_RESOLUTION_EXPIRED,
)
DESCRIPTION = "pedestrian 1 and vehicle 2 head-on, TTC 0.8 s"


def measured(frame: int, lvl: int, *, camera: str = "cam-1", group: str = "g1") -> events_pb2.AssessmentResult:
    """What the task generator publishes at once for a conflict of `group` in frame `frame` (same task id)."""
    msg = result(frame, NONE, camera=camera, group=group)
    msg.model = "measured"
    msg.measured.CopyFrom(
        events_pb2.MeasuredDanger(
            risk_level=lvl,  # type: ignore[arg-type]
            risk_types=["near_miss"],
            description=DESCRIPTION,
            conflict=events_pb2.Conflict(track_a=1, track_b=2, kind=events_pb2.CONFLICT_KIND_HEAD_ON, ttc_s=0.8),
        )
    )
    return msg


def group(agg: Aggregator, camera: str = "cam-1", group_id: str = "g1") -> events_pb2.GroupRisk:
    state = agg.state(camera)
    assert state is not None
    return next(g for g in state.groups if g.group_id == group_id)


async def alerts(cache: FlakyCache, camera: str = "cam-1") -> list[tuple[str, str, int]]:
    """The camera's alert stream as (task id, outcome, resolution)."""
    stream = await cache.stream_tail(keys.camera_alerts(camera), 100)
    parsed = [events_pb2.AssessmentResult.FromString(a) for a in stream]
    return [(a.task_id, a.WhichOneof("outcome") or "", a.provisional_resolution) for a in parsed]


def resolutions(camera: str, resolution: str) -> float:
    labels = {"camera_id": camera, "resolution": resolution}
    return REGISTRY.get_sample_value("riskwatch_provisional_resolutions_total", labels) or 0.0


@asynccontextmanager
async def running(cache: FlakyCache, clock: Clock, **config: Any) -> AsyncIterator[Aggregator]:
    """An aggregator on `cache` from start to stop (a second one on the same cache is a restart)."""
    agg = Aggregator(settings(**config), cache, clock=clock)
    await agg.start()
    try:
        yield agg
    finally:
        await agg.stop()


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def aggregator(cache: FlakyCache, clock: Clock) -> AsyncIterator[Aggregator]:
    """De-escalation needs 10 s of lower verdicts or 3 in a row: a dismissal must not wait for either."""
    async with running(cache, clock, deescalate_after=3, deescalate_hold_s=10, provisional_ttl_s=2) as agg:
        yield agg


@pytest.fixture
async def cache() -> FlakyCache:
    return FlakyCache()


# ---- raised at once ------------------------------------------------------------------------------


async def test_a_measured_danger_raises_the_group_at_once_and_is_pushed_as_a_provisional_alert(
    aggregator: Aggregator, cache: FlakyCache
) -> None:
    await feed(aggregator, result(1, LOW))
    async with cache.subscribe(keys.ALERTS_CHANNEL) as messages:
        await feed(aggregator, measured(2, HIGH))
        pushed = events_pb2.AssessmentResult.FromString(await asyncio.wait_for(anext(aiter(messages)), 2))
    assert pushed.WhichOneof("outcome") == "measured" and pushed.measured.risk_level == HIGH
    assert pushed.provisional_resolution == events_pb2.PROVISIONAL_RESOLUTION_UNSPECIFIED
    state = await stored(cache)
    raised = state.groups[0]
    assert state.max_level == HIGH and raised.verdict.risk_level == HIGH
    assert raised.verdict.description == DESCRIPTION and list(raised.verdict.involved_track_ids) == [1, 2]
    assert raised.provisional.risk_level == HIGH and raised.provisional_task_id == "cam-1:2/g1"
    assert raised.llm_verdict.risk_level == LOW  # what it falls back to


async def test_a_measurement_never_lowers_a_level(aggregator: Aggregator, cache: FlakyCache) -> None:
    await feed(aggregator, result(1, HIGH), measured(2, MEDIUM))
    raised = group(aggregator)
    assert raised.verdict.risk_level == HIGH and raised.provisional.risk_level == MEDIUM
    assert [kind for _, kind, _ in await alerts(cache)] == ["verdict", "measured"]


async def test_a_higher_measurement_replaces_the_provisional_and_an_equal_one_changes_nothing(
    aggregator: Aggregator, cache: FlakyCache
) -> None:
    await feed(aggregator, measured(2, MEDIUM), measured(3, MEDIUM))
    assert group(aggregator).provisional_task_id == "cam-1:2/g1" and len(await alerts(cache)) == 1
    await feed(aggregator, measured(4, HIGH))
    assert level(aggregator) == HIGH and group(aggregator).provisional_task_id == "cam-1:4/g1"
    await feed(aggregator, result(4, HIGH))
    assert await alerts(cache) == [
        ("cam-1:2/g1", "measured", 0),
        ("cam-1:4/g1", "measured", 0),
        ("cam-1:4/g1", "verdict", CONFIRMED),
    ]


# ---- resolved by the verdict ---------------------------------------------------------------------


async def test_a_verdict_at_the_measured_level_confirms_it(aggregator: Aggregator, cache: FlakyCache) -> None:
    before = resolutions("cam-1", "confirmed")
    await feed(aggregator, result(1, NONE), measured(2, HIGH))
    async with cache.subscribe(keys.ALERTS_CHANNEL) as messages:
        await feed(aggregator, result(2, HIGH, types=["vehicle_pedestrian_conflict"]))
        pushed = events_pb2.AssessmentResult.FromString(await asyncio.wait_for(anext(aiter(messages)), 2))
    assert pushed.WhichOneof("outcome") == "verdict" and pushed.provisional_resolution == CONFIRMED
    resolved = (await stored(cache)).groups[0]
    assert not resolved.HasField("provisional") and not resolved.HasField("llm_verdict")
    assert resolved.verdict.risk_level == HIGH and list(resolved.verdict.risk_types) == ["vehicle_pedestrian_conflict"]
    assert await alerts(cache) == [("cam-1:2/g1", "measured", 0), ("cam-1:2/g1", "verdict", CONFIRMED)]
    assert resolutions("cam-1", "confirmed") == before + 1


async def test_a_higher_verdict_upgrades_it(aggregator: Aggregator, cache: FlakyCache) -> None:
    await feed(aggregator, measured(2, MEDIUM), result(2, HIGH))
    assert level(aggregator) == HIGH and not group(aggregator).HasField("provisional")
    assert (await alerts(cache))[-1] == ("cam-1:2/g1", "verdict", UPGRADED)


async def test_a_lower_verdict_dismisses_it_and_the_level_drops_at_once_even_below_the_alert_level(
    aggregator: Aggregator, cache: FlakyCache
) -> None:
    await feed(aggregator, result(1, NONE), measured(2, HIGH))
    await feed(aggregator, result(2, NONE))  # were HIGH a verdict, the hold (10 s or 3 in a row) would keep it
    state = await stored(cache)
    assert state.groups[0].verdict.risk_level == NONE and state.max_level == NONE
    assert not state.groups[0].HasField("provisional")
    # pushed although a verdict of no risk is otherwise no alert: the client sees its provisional closed
    assert (await alerts(cache))[-1] == ("cam-1:2/g1", "verdict", DISMISSED)


async def test_the_hold_still_keeps_an_earlier_higher_llm_verdict_after_a_dismissal(
    aggregator: Aggregator, cache: FlakyCache
) -> None:
    """Only the measured raise goes at once: a high LLM verdict underneath de-escalates as it always does."""
    await feed(aggregator, result(1, HIGH), measured(2, MEDIUM), result(2, NONE))
    assert (await alerts(cache))[-1] == ("cam-1:2/g1", "verdict", DISMISSED)
    assert level(aggregator) == HIGH and not group(aggregator).HasField("provisional")
    await feed(aggregator, result(3, NONE), result(4, NONE))  # the third lower verdict in a row
    assert level(aggregator) == NONE


async def test_a_verdict_of_an_older_frame_does_not_resolve_it_but_replaces_the_llm_verdict_underneath(
    aggregator: Aggregator, cache: FlakyCache, clock: Clock
) -> None:
    await feed(aggregator, result(1, NONE), measured(4, HIGH))
    await feed(aggregator, result(3, MEDIUM))  # the task sent before the conflict, answered after it
    raised = group(aggregator)
    assert raised.HasField("provisional") and raised.verdict.risk_level == HIGH
    assert raised.llm_verdict.risk_level == MEDIUM
    assert [r for _, _, r in await alerts(cache)] == [0, 0]  # the medium verdict is an alert, not a resolution
    clock.now = T0 + 2 + 3  # past the ttl after the measurement at T0 + 2: falls back to the newer LLM verdict
    aggregator.expire_provisionals()
    assert level(aggregator) == MEDIUM


async def test_a_later_frame_resolves_it_whatever_its_task(aggregator: Aggregator, cache: FlakyCache) -> None:
    await feed(aggregator, measured(2, HIGH), result(5, LOW))
    assert level(aggregator) == LOW
    assert (await alerts(cache))[-1] == ("cam-1:5/g1", "verdict", DISMISSED)


# ---- idempotent and durable ----------------------------------------------------------------------


async def test_a_redelivered_measurement_pushes_no_second_alert_before_or_after_a_restart(
    cache: FlakyCache, clock: Clock
) -> None:
    async with running(cache, clock) as first:
        await feed(first, measured(2, HIGH), measured(2, HIGH))
    version = (await stored(cache)).version
    async with running(cache, clock) as second:
        await feed(second, measured(2, HIGH))  # redelivered after the restart
        assert (await stored(cache)).version == version
        await feed(second, result(2, HIGH), measured(2, HIGH))  # resolved, then redelivered again
    assert await alerts(cache) == [("cam-1:2/g1", "measured", 0), ("cam-1:2/g1", "verdict", CONFIRMED)]


async def test_a_restart_keeps_the_provisional_and_its_verdict_still_resolves_it(
    cache: FlakyCache, clock: Clock
) -> None:
    async with running(cache, clock) as first:
        await feed(first, result(1, LOW), measured(2, HIGH))
    assert (await stored(cache)).groups[0].provisional.risk_level == HIGH
    async with running(cache, clock) as second:
        await feed(second, result(2, MEDIUM))
        resolved = group(second)
        assert resolved.verdict.risk_level == MEDIUM and not resolved.HasField("provisional")
    assert (await alerts(cache))[-1] == ("cam-1:2/g1", "verdict", DISMISSED)


async def test_a_crash_after_the_provisional_alert_but_before_the_state_does_not_duplicate_it(
    cache: FlakyCache, clock: Clock
) -> None:
    alert = measured(2, HIGH)
    await cache.stream_add(keys.camera_alerts("cam-1"), alert.SerializeToString(), 100)
    async with running(cache, clock) as restarted:
        await feed(restarted, alert)  # redelivered: applies again to the (empty) persisted state
    assert (await stored(cache)).groups[0].provisional.risk_level == HIGH
    assert await alerts(cache) == [("cam-1:2/g1", "measured", 0)]


# ---- expiry --------------------------------------------------------------------------------------


async def test_a_failure_leaves_it_standing_until_it_expires_back_to_the_last_verdict(
    aggregator: Aggregator, cache: FlakyCache, clock: Clock
) -> None:
    before = resolutions("cam-1", "expired")
    await feed(aggregator, result(1, LOW), measured(2, HIGH), result(2, HIGH, failure=True))
    failed = group(aggregator)
    assert failed.HasField("provisional") and failed.HasField("failure") and failed.verdict.risk_level == HIGH

    async with cache.subscribe(keys.ALERTS_CHANNEL) as messages:
        clock.now = T0 + 1 + 2  # the measurement was captured at T0 + 1; the ttl is 2 s: the sweep closes it
        pushed = events_pb2.AssessmentResult.FromString(await asyncio.wait_for(anext(aiter(messages)), 2))
    assert pushed.provisional_resolution == EXPIRED and pushed.WhichOneof("outcome") == "measured"
    assert pushed.task_id == "cam-1:2/g1" and pushed.measured.description == DESCRIPTION
    for _ in range(100):  # the sweep's state reaches the cache right after its alert
        state = await stored(cache)
        if not state.groups[0].HasField("provisional"):
            break
        await asyncio.sleep(0.01)
    assert state.groups[0].verdict.risk_level == LOW and state.max_level == LOW
    assert [r for _, _, r in await alerts(cache)] == [0, 0, 0, EXPIRED]  # low, provisional, failure, expiry
    assert resolutions("cam-1", "expired") == before + 1


async def test_a_verdict_after_the_expiry_is_an_ordinary_verdict(
    aggregator: Aggregator, cache: FlakyCache, clock: Clock
) -> None:
    await feed(aggregator, measured(2, HIGH))
    clock.now = T0 + 1 + 5
    await feed(aggregator, result(2, MEDIUM))  # too late: the provisional is closed first, by expiry
    assert level(aggregator) == MEDIUM
    assert [r for _, _, r in await alerts(cache)] == [0, EXPIRED, 0]


async def test_a_provisional_expires_before_its_group_even_when_the_group_ttl_is_shorter(
    cache: FlakyCache, clock: Clock
) -> None:
    async with running(cache, clock, group_ttl_s=1, provisional_ttl_s=10) as agg:
        await feed(agg, measured(2, HIGH, group="gone"))
        clock.now = T0 + 1 + 1
        await feed(agg, result(4, LOW, group="other"))
    assert [g.group_id for g in (await stored(cache)).groups] == ["other"]
    assert [(t, r) for t, _, r in await alerts(cache)][:2] == [("cam-1:2/gone", 0), ("cam-1:2/gone", EXPIRED)]


# ---- input ---------------------------------------------------------------------------------------


async def test_a_measured_danger_without_a_level_to_alert_at_changes_nothing(
    aggregator: Aggregator, cache: FlakyCache
) -> None:
    await feed(aggregator, result(1, LOW))
    version = (await stored(cache)).version
    before = REGISTRY.get_sample_value("riskwatch_results_ignored_total", {"reason": "invalid"}) or 0.0
    await feed(aggregator, measured(2, NONE), measured(3, events_pb2.RISK_LEVEL_UNSPECIFIED), measured(4, 9))
    assert (await stored(cache)).version == version and not group(aggregator).HasField("provisional")
    assert REGISTRY.get_sample_value("riskwatch_results_ignored_total", {"reason": "invalid"}) == before + 3
