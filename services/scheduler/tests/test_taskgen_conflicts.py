"""Near-misses in the task generator: conflict triggers, danger-only sending, provisional measured-danger results."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import REGISTRY

from riskwatch import events
from riskwatch.bus import InMemoryBus, Outgoing, Record
from riskwatch.cache import InMemoryCache
from riskwatch.clock import ManualClock
from riskwatch.domain import RiskLevel
from riskwatch.v1 import events_pb2
from riskwatch_scheduler.app import TaskGeneratorApp
from riskwatch_scheduler.config import SchedulerSettings, TaskGeneratorConfig
from riskwatch_scheduler.policy.settings import SendNewGroups
from riskwatch_scheduler.taskgen import TaskGenerator
from services.scheduler.tests.test_taskgen import T0, event, generator, group, reasons, sent, step, verdict

TOPICS = SchedulerSettings().kafka.topics


def conflict_group(
    group_id: str = "g1",
    *,
    ttc: float | None = None,
    pet: float | None = None,
    drac: float | None = None,
    members: Sequence[int] = (3, 7),
) -> events_pb2.Group:
    """A pedestrian (3) and a vehicle (7) heading at each other, with the given worst measures."""
    features = events_pb2.GroupFeatures(pedestrians=1, vehicles=1, density=0.2, max_speed_box_s=1.5)
    conflict = events_pb2.Conflict(
        track_a=members[0],
        track_b=members[1],
        category_a=events_pb2.CATEGORY_PEDESTRIAN,
        category_b=events_pb2.CATEGORY_VEHICLE,
        kind=events_pb2.CONFLICT_KIND_HEAD_ON,
        calibrated=drac is not None,
        distance=4.0,
        closing_speed=5.0,
    )
    for name, value in (("min_ttc_s", ttc), ("min_pet_s", pet), ("max_drac_m_s2", drac)):
        if value is not None:
            setattr(features, name, value)
    for name, value in (("ttc_s", ttc), ("pet_s", pet), ("drac_m_s2", drac)):
        if value is not None:
            setattr(conflict, name, value)
    measured = ttc is not None or pet is not None or drac is not None
    return events_pb2.Group(
        group_id=group_id,
        member_track_ids=sorted(members),
        features=features,
        conflict=conflict if measured else None,
    )


def detection_record(ev: events_pb2.DetectionEvent) -> Record:
    return Record(TOPICS.detection_results.name, 0, ev.frame_id, ev.camera_id.encode(), ev.SerializeToString())


def results(outputs: Sequence[Outgoing]) -> list[events_pb2.AssessmentResult]:
    return [
        events_pb2.AssessmentResult.FromString(o.value)
        for o in outputs
        if o.topic == TOPICS.risk_assessment_results.name
    ]


class Published:
    """The early publisher the Stage gives the generator: records what went out, and for which record."""

    def __init__(self) -> None:
        self.outputs: list[tuple[Outgoing, Record]] = []

    async def __call__(self, outputs: Sequence[Outgoing], record: Record) -> None:
        self.outputs += [(o, record) for o in outputs]

    @property
    def results(self) -> list[events_pb2.AssessmentResult]:
        return results([o for o, _ in self.outputs])


def publishing_generator(clock: ManualClock, published: Published, **taskgen: Any) -> TaskGenerator:
    values: dict[str, Any] = {"llm_budget_per_s": 0, "min_group_interval_s": 0, "send_new_groups": "always", **taskgen}
    settings = SchedulerSettings(taskgen=TaskGeneratorConfig.model_validate(values))
    return TaskGenerator(settings, clock=clock.now, publish=published)


# ---- triggers -------------------------------------------------------------------------------------


def test_each_conflict_measure_crossing_its_bound_sends_the_group_named_by_that_measure() -> None:
    clock = ManualClock(T0)
    gen = generator(clock)
    step(gen, clock, event(0, [conflict_group()]))  # new, nothing measured
    assert reasons(step(gen, clock, event(1, [conflict_group(ttc=1.5)]))) == ["ttc"]
    assert reasons(step(gen, clock, event(2, [conflict_group(ttc=1.5, pet=0.8)]))) == ["pet"]
    assert reasons(step(gen, clock, event(3, [conflict_group(ttc=1.5, pet=0.8, drac=4.0)]))) == ["drac"]
    # nothing new crossed: the same measures again send nothing
    assert step(gen, clock, event(4, [conflict_group(ttc=1.4, pet=0.7, drac=4.2)])) == []
    assert reasons(step(gen, clock, event(5, [conflict_group(ttc=0.8, pet=0.7, drac=4.2)]))) == ["ttc"]


def test_ttc_jitter_around_a_bound_sends_at_most_once_per_min_group_interval() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, min_group_interval_s=1.0)
    step(gen, clock, event(0, [conflict_group(ttc=2.5)], at=T0))
    tasks = []
    for frame in range(1, 51):  # 5 s at 10 FPS, TTC flipping across the 1 s bound every frame
        ttc = 0.97 if frame % 2 else 1.03
        tasks += step(gen, clock, event(frame, [conflict_group(ttc=ttc)], at=T0 + frame * 0.1))
    assert 1 <= len(tasks) <= 5
    sent_at = [events.seconds(t.created_time) for t in tasks]
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(sent_at))


def test_a_conflict_outranks_a_close_crowd_when_the_budget_is_short() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, llm_budget_per_s=1, budget_burst=1)
    step(gen, clock, event(0, [group("warm-up", [99])]))  # takes the one token
    crowd = group("crowd", [1, 2, 3], distance=0.4, density=1.5, pedestrians=3)
    near_miss = conflict_group("near-miss", ttc=0.6)
    step(gen, clock, event(1, [crowd, near_miss], at=T0 + 0.1))
    clock.advance_to(T0 + 1.0)
    (first,) = sent(gen)
    assert first.group_id == "near-miss"


def test_the_task_carries_the_members_with_their_kinematics_and_the_conflict() -> None:
    clock = ManualClock(T0)
    gen = generator(clock)
    ev = event(0, [conflict_group(ttc=0.75)], feet={3: (0.4, 0.8), 7: (0.6, 0.8), 12: (0.1, 0.1)})
    ev.detections[0].kinematics.CopyFrom(events_pb2.Kinematics(estimated=True, samples=8, speed_box_s=1.25))
    (task,) = step(gen, clock, ev)
    assert [d.track_id for d in task.members] == [3, 7]  # track 12 is in no group of ours
    assert task.members[0].kinematics.speed_box_s == 1.25
    assert task.conflict.ttc_s == 0.75 and task.conflict.kind == events_pb2.CONFLICT_KIND_HEAD_ON


# ---- danger only ----------------------------------------------------------------------------------


def test_on_trigger_sends_a_group_only_when_danger_appears_and_not_while_it_stays_calm() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, send_new_groups="on_trigger", refresh_s={"none": 2, "low": 2, "unassessed": 2})
    calm = group("g1", [1, 2], distance=4.0)
    assert step(gen, clock, event(0, [calm])) == []
    assert gen.skipped["cam-1", "calm"] == 1
    assert step(gen, clock, event(1, [group("g1", [5, 6], distance=4.0)], at=T0 + 5)) == []  # no membership send
    (task,) = step(gen, clock, event(2, [conflict_group("g1", ttc=1.5)], at=T0 + 6))
    assert task.reason == "ttc"  # first sent when the danger appears, named by it
    verdict(gen, task, events_pb2.RISK_LEVEL_MEDIUM)
    # The pair passed: no call of its own for that (the conflict rules have no recovery) ...
    assert step(gen, clock, event(3, [conflict_group("g1")], at=T0 + 7)) == []
    # ... the medium verdict's refresh (6 s) lets the LLM see the danger end.
    (back,) = step(gen, clock, event(4, [conflict_group("g1")], at=T0 + 12.5))
    assert back.reason == "refresh"
    verdict(gen, back, events_pb2.RISK_LEVEL_NONE)
    # calm, and the LLM found it calm: never refreshed
    assert step(gen, clock, event(5, [conflict_group("g1")], at=T0 + 30)) == []


def test_on_trigger_still_refreshes_a_calm_group_the_llm_found_risky() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, send_new_groups="on_trigger", refresh_s={"low": 3})
    (task,) = step(gen, clock, event(0, [group("g1", [1, 2], density=1.5)]))
    assert task.reason == "density"
    (back,) = step(gen, clock, event(1, [group("g1", [1, 2], density=0.5)], at=T0 + 1))
    verdict(gen, back, events_pb2.RISK_LEVEL_LOW)  # the crop showed something the features did not
    assert reasons(step(gen, clock, event(2, [group("g1", [1, 2], density=0.5)], at=T0 + 4))) == ["refresh"]


# ---- provisional results ---------------------------------------------------------------------------


async def test_a_provisional_is_published_at_once_even_with_the_llm_budget_exhausted() -> None:
    clock = ManualClock(T0)
    published = Published()
    gen = publishing_generator(clock, published, llm_budget_per_s=1, budget_burst=1, max_task_age_s=5)
    gen.observe_event(event(0, [group("other", [50])]))
    assert len(sent(gen)) == 1  # the only token is gone
    ev = event(1, [conflict_group(ttc=0.625)], at=T0 + 0.1)
    clock.advance_to(T0 + 0.1)
    handling = asyncio.create_task(gen.handle(detection_record(ev)))
    await asyncio.sleep(0.05)
    assert not handling.done()  # its task still waits for the budget...
    (result,) = published.results  # ...but the provisional is out
    assert published.outputs[0][1].offset == ev.frame_id  # published for this record, before it is acknowledged
    assert result.WhichOneof("outcome") == "measured"
    assert result.measured.risk_level == events_pb2.RISK_LEVEL_HIGH
    assert list(result.measured.risk_types) == ["near_miss"]
    assert result.measured.conflict.ttc_s == 0.625 and result.measured.conflict.track_b == 7
    assert "pedestrian 3 and vehicle 7" in result.measured.description and "TTC 0.6 s" in result.measured.description
    assert (result.task_id, result.camera_id, result.group_id, result.frame_id) == ("cam-1:1/g1", "cam-1", "g1", 1)
    assert (result.event_id, result.model, list(result.member_track_ids)) == ("cam-1:1", "measured", [3, 7])
    assert result.capture_time == ev.capture_time and events.seconds(result.completed_time) == T0 + 0.1
    clock.advance_to(T0 + 1.0)
    gen.release()
    out = await handling
    (task,) = [events_pb2.AssessmentTask.FromString(o.value) for o in out if o.topic == TOPICS.assessment_tasks.name]
    assert task.task_id == result.task_id  # the LLM's verdict for this task resolves the provisional
    assert results(out) == []  # not published twice
    labels = {"camera_id": "cam-1", "level": "high"}
    assert REGISTRY.get_sample_value("riskwatch_provisional_alerts_total", labels) == 1


async def test_a_provisional_is_not_held_by_the_min_interval_or_a_pending_task() -> None:
    clock = ManualClock(T0)
    published = Published()
    gen = publishing_generator(clock, published, min_group_interval_s=10, max_task_age_s=30)
    gen.observe_event(event(0, [conflict_group()], camera="cam-held"))
    assert len(sent(gen)) == 1
    ev = event(1, [conflict_group(ttc=1.8)], camera="cam-held", at=T0 + 0.5)
    clock.advance_to(T0 + 0.5)
    first = asyncio.create_task(gen.handle(detection_record(ev)))
    await asyncio.sleep(0.02)
    assert [r.measured.risk_level for r in published.results] == [events_pb2.RISK_LEVEL_MEDIUM]
    assert not first.done()  # held by the 10 s interval
    first.cancel()


def test_one_provisional_per_episode_again_on_a_rise_and_after_the_episode_ends() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, provisional={"episode_gap_s": 1.0})
    published: list[tuple[int, int]] = []

    def frame(n: int, at: float, ttc: float) -> None:
        clock.advance_to(at)
        ev = event(n, [conflict_group(ttc=ttc)], at=at)
        published.extend((n, r.measured.risk_level) for r in gen.observe_danger(ev))

    medium, high = events_pb2.RISK_LEVEL_MEDIUM, events_pb2.RISK_LEVEL_HIGH
    frame(0, T0, ttc=1.9)  # medium: published
    frame(1, T0 + 0.1, ttc=1.7)
    frame(2, T0 + 0.2, ttc=1.95)
    frame(3, T0 + 0.3, ttc=0.9)  # rises to high: published again
    frame(4, T0 + 0.4, ttc=1.2)  # back to medium, jitter: nothing
    frame(5, T0 + 0.5, ttc=0.95)  # high again within the episode: nothing
    frame(6, T0 + 1.0, ttc=2.5)  # within the bounds...
    frame(7, T0 + 1.4, ttc=1.5)  # ...for 0.9 s only: the same episode
    frame(8, T0 + 2.6, ttc=2.8)
    frame(9, T0 + 2.7, ttc=1.6)  # 1.3 s since last past the bounds: a new episode
    assert published == [(0, medium), (3, high), (9, medium)]
    assert gen.provisional["cam-1", "medium"] == 2 and gen.provisional["cam-1", "high"] == 1


def test_pet_and_drac_raise_provisionals_too_and_a_backlog_frame_raises_none() -> None:
    clock = ManualClock(T0 + 10)
    gen = generator(clock)
    (by_pet,) = gen.observe_danger(event(0, [conflict_group("a", pet=0.4)], at=T0 + 10))
    (by_drac,) = gen.observe_danger(event(1, [conflict_group("b", ttc=2.5, drac=5.0)], at=T0 + 10))
    assert by_pet.measured.risk_level == by_drac.measured.risk_level == events_pb2.RISK_LEVEL_HIGH
    assert gen.observe_danger(event(2, [conflict_group("c", ttc=2.5)], at=T0 + 10)) == []  # past no bound
    assert gen.observe_danger(event(3, [conflict_group("d", ttc=0.2)], at=T0 + 5)) == []  # 5 s old: stale


async def test_without_an_early_publisher_the_provisional_goes_out_with_the_records_outputs() -> None:
    clock = ManualClock(T0)
    gen = generator(clock)
    out = await gen.handle(detection_record(event(0, [conflict_group(ttc=0.5)])))
    assert [o.topic for o in out] == [
        TOPICS.risk_assessment_results.name,
        TOPICS.assessment_tasks.name,
        TOPICS.task_decisions.name,
    ]


async def test_the_generators_own_measured_record_is_not_taken_for_a_verdict() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, refresh_s={"high": 3, "unassessed": 6})
    ev = event(0, [conflict_group(ttc=0.5)])
    out = await gen.handle(detection_record(ev))
    (provisional,) = results(out)
    record = Record(TOPICS.risk_assessment_results.name, 0, 0, b"cam-1", provisional.SerializeToString())
    assert await gen.handle(record) == []
    assert gen.last_verdict("cam-1", "g1") is None  # no verdict known: still unassessed
    # so the group is refreshed at the unassessed interval (6 s), not the high one (3 s) the measurement says
    assert step(gen, clock, event(1, [conflict_group(ttc=0.5)], at=T0 + 3)) == []
    assert reasons(step(gen, clock, event(2, [conflict_group(ttc=0.5)], at=T0 + 6))) == ["refresh"]
    (task,) = [events_pb2.AssessmentTask.FromString(o.value) for o in out if o.topic == TOPICS.assessment_tasks.name]
    verdict(gen, task, events_pb2.RISK_LEVEL_LOW)
    assert gen.last_verdict("cam-1", "g1") is RiskLevel.LOW


async def test_through_the_stage_the_provisional_is_on_the_results_topic_while_its_record_waits_unacknowledged() -> (
    None
):
    settings = SchedulerSettings(
        taskgen=TaskGeneratorConfig(
            llm_budget_per_s=0.2,
            budget_burst=1,
            min_group_interval_s=0,
            max_task_age_s=10,
            send_new_groups=SendNewGroups.ALWAYS,
        ),
        shutdown_grace_s=0.1,  # the waiting record is handed back at stop, not waited for
    )
    bus = InMemoryBus(partitions=1)
    app = TaskGeneratorApp(settings, bus, InMemoryCache())
    await app.start()
    try:
        now = time.time()
        await bus.publish(
            TOPICS.detection_results.name, "cam-1", event(0, [group("other", [50])], at=now).SerializeToString()
        )
        near_miss = event(1, [conflict_group(ttc=0.5)], at=now + 0.01)
        await bus.publish(TOPICS.detection_results.name, "cam-1", near_miss.SerializeToString())
        for _ in range(100):
            await asyncio.sleep(0.02)
            if bus.records(TOPICS.risk_assessment_results.name):
                break
        (record,) = bus.records(TOPICS.risk_assessment_results.name)
        assert events_pb2.AssessmentResult.FromString(record.value).measured.risk_level == events_pb2.RISK_LEVEL_HIGH
        # the budget (one task per 5 s) still holds the group's task, so the event is not acknowledged yet
        tasks = [events_pb2.AssessmentTask.FromString(r.value) for r in bus.records(TOPICS.assessment_tasks.name)]
        assert [t.group_id for t in tasks] == ["other"]
        assert app.stage.in_flight == 1
    finally:
        await app.stop()


def test_a_rule_without_recovery_does_not_resend_when_its_danger_passes() -> None:
    """A near-miss ends by the pair passing: the verdict's refresh sees that, so the conflict rules need no call of
    their own for it, while a rule with recovery on still sends."""
    clock = ManualClock(T0)
    rules = [
        {"feature": "min_ttc_s", "direction": "below", "bounds": [2.0], "reason": "ttc", "recovery": False},
        {"feature": "min_ped_vehicle_distance", "direction": "below", "bounds": [0.5], "reason": "distance"},
    ]
    gen = generator(clock, thresholds=rules)
    step(gen, clock, event(0, [conflict_group()]))
    assert reasons(step(gen, clock, event(1, [conflict_group(ttc=1.2)]))) == ["ttc"]
    assert step(gen, clock, event(2, [conflict_group()])) == []  # the pair passed: TTC unset again

    close = conflict_group("g2", members=(4, 8))
    step(gen, clock, event(3, [close]))
    close.features.min_ped_vehicle_distance = 0.3
    assert reasons(step(gen, clock, event(4, [close]))) == ["distance"]
    close.features.min_ped_vehicle_distance = 2.0
    assert reasons(step(gen, clock, event(5, [close]))) == ["recovery"]
