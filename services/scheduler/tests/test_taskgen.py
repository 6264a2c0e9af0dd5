"""Task generator policy on a manual clock: each trigger, each skip reason, latest-wins, budget and fair share."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from riskwatch import events
from riskwatch.bus import Record
from riskwatch.clock import ManualClock
from riskwatch.config.loader import load_settings
from riskwatch.errors import ConfigError, DecodeError
from riskwatch.v1 import events_pb2
from riskwatch_scheduler.config import SchedulerSettings, TaskGeneratorConfig
from riskwatch_scheduler.taskgen import TaskGenerator

T0 = 1_800_000_000.0
REPO = Path(__file__).resolve().parents[3]


def generator(clock: ManualClock, **taskgen: Any) -> TaskGenerator:
    # Defaults that isolate each rule: no budget limit, no intervals unless a test sets them, every group sent.
    values: dict[str, Any] = {"llm_budget_per_s": 0, "min_group_interval_s": 0, "send_new_groups": "always", **taskgen}
    return TaskGenerator(SchedulerSettings(taskgen=TaskGeneratorConfig.model_validate(values)), clock=clock.now)


def group(
    group_id: str,
    members: Iterable[int],
    *,
    distance: float | None = None,
    density: float = 0.2,
    pedestrians: int = 1,
) -> events_pb2.Group:
    features = events_pb2.GroupFeatures(pedestrians=pedestrians, density=density)
    if distance is not None:
        features.min_ped_vehicle_distance = distance
    return events_pb2.Group(group_id=group_id, member_track_ids=sorted(members), features=features)


def event(
    frame: int,
    groups: Iterable[events_pb2.Group],
    *,
    camera: str = "cam-1",
    at: float | None = None,
    feet: Mapping[int, tuple[float, float]] | None = None,
) -> events_pb2.DetectionEvent:
    """An event captured at `at` (default: frame / 2 FPS after T0); `feet`: normalised ground point per track."""
    capture = at if at is not None else T0 + frame * 0.5
    msg = events_pb2.DetectionEvent(
        event_id=events.event_id(camera, frame),
        camera_id=camera,
        frame_id=frame,
        capture_time=events.timestamp(capture),
        image_width=1000,
        image_height=500,
        groups=list(groups),
    )
    for track, (x, y) in (feet or {}).items():
        box = events_pb2.BoundingBox(x1=x * 1000 - 10, y1=y * 500 - 40, x2=x * 1000 + 10, y2=y * 500)
        msg.detections.append(events_pb2.Detection(track_id=track, box=box))
    return msg


def sent(gen: TaskGenerator) -> list[events_pb2.AssessmentTask]:
    return [events_pb2.AssessmentTask.FromString(o.value) for o in gen.release()]


def step(gen: TaskGenerator, clock: ManualClock, ev: events_pb2.DetectionEvent) -> list[events_pb2.AssessmentTask]:
    """Deliver `ev` at its capture time and return the tasks released right after."""
    clock.advance_to(max(clock.now(), events.seconds(ev.capture_time)))
    gen.observe_event(ev)
    return sent(gen)


def verdict(
    gen: TaskGenerator, task: events_pb2.AssessmentTask, level: int, *, failure: bool = False
) -> events_pb2.AssessmentResult:
    result = events_pb2.AssessmentResult(
        task_id=task.task_id, camera_id=task.camera_id, group_id=task.group_id, capture_time=task.capture_time
    )
    if failure:
        result.failure.CopyFrom(events_pb2.Failure(kind=events_pb2.FAILURE_KIND_DEADLINE_EXCEEDED))
    else:
        result.verdict.CopyFrom(events_pb2.Verdict(risk_level=level))  # type: ignore[arg-type]
    gen.observe_result(result)
    return result


def reasons(tasks: Iterable[events_pb2.AssessmentTask]) -> list[str]:
    return [t.reason for t in tasks]


# ---- triggers -------------------------------------------------------------------------------------


def test_a_new_group_is_sent_once_then_skipped_while_nothing_changes() -> None:
    clock = ManualClock(T0)
    gen = generator(clock)
    first = step(gen, clock, event(1, [group("g1", [1, 2])]))
    assert reasons(first) == ["new"]
    assert first[0].task_id == "cam-1:1/g1" and first[0].group_id == "g1"
    assert step(gen, clock, event(2, [group("g1", [1, 2])])) == []
    assert gen.skipped["cam-1", "no_change"] == 1


def test_groups_below_the_minimum_size_are_skipped_as_too_small() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, min_group_size=2)
    assert reasons(step(gen, clock, event(1, [group("g1", [1]), group("g2", [2, 3])]))) == ["new"]
    assert gen.skipped["cam-1", "too_small"] == 1


def test_membership_change_by_jaccard_below_the_bound() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, membership_min_jaccard=0.5)
    step(gen, clock, event(1, [group("g1", [1, 2, 3, 4])]))
    # {1,2,3,4} vs {1,2,3,5}: 3/5 = 0.6, above the bound
    assert step(gen, clock, event(2, [group("g1", [1, 2, 3, 5])])) == []
    # {1,2,3,4} vs {1,6,7,8}: 1/7, below it — compared with what was *sent*, not with the previous frame
    assert reasons(step(gen, clock, event(3, [group("g1", [1, 6, 7, 8])]))) == ["membership"]


def test_ped_vehicle_distance_falling_below_each_bound_triggers_with_a_dead_band_on_the_way_back() -> None:
    clock = ManualClock(T0)
    rule = {"feature": "min_ped_vehicle_distance", "direction": "below", "bounds": [0.5, 1.5], "reason": "distance"}
    gen = generator(clock, thresholds=[{**rule, "margin": 0.1}])
    step(gen, clock, event(1, [group("g1", [1, 2], distance=3.0)]))
    assert reasons(step(gen, clock, event(2, [group("g1", [1, 2], distance=1.2)]))) == ["distance"]
    assert step(gen, clock, event(3, [group("g1", [1, 2], distance=1.4)])) == []
    assert reasons(step(gen, clock, event(4, [group("g1", [1, 2], distance=0.3)]))) == ["distance"]
    # back above 0.5 but inside the 10 % dead band (< 0.55): not a recovery yet
    assert step(gen, clock, event(5, [group("g1", [1, 2], distance=0.52)])) == []
    assert reasons(step(gen, clock, event(6, [group("g1", [1, 2], distance=0.6)]))) == ["recovery"]


def test_a_threshold_may_watch_any_group_feature_and_names_a_wrong_one() -> None:
    clock = ManualClock(T0)
    rule = {"feature": "min_spacing", "direction": "below", "bounds": [0.5], "reason": "spacing"}
    gen = generator(clock, thresholds=[rule])
    near = events_pb2.Group(group_id="g1", member_track_ids=[1, 2], features=events_pb2.GroupFeatures(min_spacing=2.0))
    step(gen, clock, event(1, [near]))
    near.features.min_spacing = 0.2
    assert reasons(step(gen, clock, event(2, [near]))) == ["spacing"]
    with pytest.raises(ValueError, match="'speed' is not a group feature"):
        generator(clock, thresholds=[{**rule, "feature": "speed"}])


def test_recovery_trigger_can_be_switched_off() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, trigger_on_recovery=False)
    step(gen, clock, event(1, [group("g1", [1, 2], distance=0.3)]))
    assert step(gen, clock, event(2, [group("g1", [1, 2], distance=3.0)])) == []


def test_density_and_crowd_size_rising_above_a_bound_trigger() -> None:
    clock = ManualClock(T0)
    gen = generator(clock)
    step(gen, clock, event(1, [group("g1", [1, 2], density=0.5)]))
    assert reasons(step(gen, clock, event(2, [group("g1", [1, 2], density=1.1)]))) == ["density"]
    assert reasons(step(gen, clock, event(3, [group("g1", [1, 2], density=1.1, pedestrians=3)]))) == ["crowd"]


def test_entering_a_configured_zone_triggers_and_raises_priority() -> None:
    clock = ManualClock(T0)
    zone = {"name": "crosswalk", "polygon": [[0.4, 0.5], [0.6, 0.5], [0.6, 1.0], [0.4, 1.0]], "weight": 0.7}
    gen = generator(clock, cameras={"cam-1": {"zones": [zone]}})
    outside = step(gen, clock, event(1, [group("g1", [1, 2])], feet={1: (0.1, 0.9), 2: (0.2, 0.9)}))
    inside = step(gen, clock, event(2, [group("g1", [1, 2])], feet={1: (0.5, 0.9), 2: (0.2, 0.9)}))
    assert reasons(inside) == ["zone"]
    assert inside[0].priority > outside[0].priority
    # zones are per camera: the same positions on another camera trigger nothing
    step(gen, clock, event(3, [group("g1", [1, 2])], camera="cam-2", feet={1: (0.1, 0.9)}))
    assert step(gen, clock, event(4, [group("g1", [1, 2])], camera="cam-2", feet={1: (0.5, 0.9)})) == []


@pytest.mark.parametrize(
    ("level", "interval"),
    [
        (events_pb2.RISK_LEVEL_NONE, 30.0),
        (events_pb2.RISK_LEVEL_LOW, 15.0),
        (events_pb2.RISK_LEVEL_MEDIUM, 6.0),
        (events_pb2.RISK_LEVEL_HIGH, 3.0),
    ],
)
def test_refresh_interval_depends_on_the_last_verdict(level: int, interval: float) -> None:
    clock = ManualClock(T0)
    gen = generator(clock)
    (task,) = step(gen, clock, event(0, [group("g1", [1, 2])]))
    verdict(gen, task, level)
    assert step(gen, clock, event(1, [group("g1", [1, 2])], at=T0 + interval - 0.1)) == []
    assert reasons(step(gen, clock, event(2, [group("g1", [1, 2])], at=T0 + interval))) == ["refresh"]


def test_a_dropped_verdict_is_rechecked_after_the_drop_interval_so_the_aggregator_can_confirm_it() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, refresh_s={"high": 3, "low": 15, "after_drop": 10})
    (first,) = step(gen, clock, event(0, [group("g1", [1, 2])]))
    verdict(gen, first, events_pb2.RISK_LEVEL_HIGH)
    (second,) = step(gen, clock, event(1, [group("g1", [1, 2])], at=T0 + 3))
    verdict(gen, second, events_pb2.RISK_LEVEL_LOW)  # dropped: re-checked after 10 s, not 15
    assert step(gen, clock, event(2, [group("g1", [1, 2])], at=T0 + 12.9)) == []
    (confirm,) = step(gen, clock, event(3, [group("g1", [1, 2])], at=T0 + 13))
    assert confirm.reason == "refresh"
    verdict(gen, confirm, events_pb2.RISK_LEVEL_LOW)  # confirmed: back to the low interval
    assert step(gen, clock, event(4, [group("g1", [1, 2])], at=T0 + 27.9)) == []
    assert reasons(step(gen, clock, event(5, [group("g1", [1, 2])], at=T0 + 28))) == ["refresh"]


def test_a_failed_assessment_is_retried_at_the_unassessed_interval() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, refresh_s={"none": 30, "unassessed": 4})
    (task,) = step(gen, clock, event(0, [group("g1", [1, 2])]))
    verdict(gen, task, 0, failure=True)
    assert reasons(step(gen, clock, event(1, [group("g1", [1, 2])], at=T0 + 4))) == ["refresh"]


def test_an_older_result_does_not_overwrite_a_newer_verdict() -> None:
    clock = ManualClock(T0)
    gen = generator(clock)
    (old,) = step(gen, clock, event(0, [group("g1", [1, 2])]))
    (new,) = step(gen, clock, event(1, [group("g1", [1, 2], distance=0.2)]))
    verdict(gen, new, events_pb2.RISK_LEVEL_HIGH)
    verdict(gen, old, events_pb2.RISK_LEVEL_NONE)  # arrives late
    # high → refreshed 3 s after the last task, not 30 s
    assert reasons(step(gen, clock, event(2, [group("g1", [1, 2], distance=0.2)], at=T0 + 0.5 + 3))) == ["refresh"]


def test_a_group_not_seen_for_group_idle_s_is_forgotten_and_new_again() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, group_idle_s=10, refresh_s={"unassessed": 1000})
    step(gen, clock, event(0, [group("g1", [1, 2])]))
    step(gen, clock, event(1, [group("g2", [3])], at=T0 + 5))
    assert step(gen, clock, event(2, [group("g1", [1, 2])], at=T0 + 6)) == []  # seen recently: remembered
    step(gen, clock, event(3, [group("g2", [3])], at=T0 + 20))  # sweeps g1 (last seen at 6)
    assert reasons(step(gen, clock, event(4, [group("g1", [1, 2])], at=T0 + 21))) == ["new"]


# ---- intervals, latest wins, expiry ----------------------------------------------------------------


def test_min_group_interval_holds_a_trigger_and_sends_the_latest_frame_when_it_ends() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, min_group_interval_s=2.0)
    step(gen, clock, event(0, [group("g1", [1, 2], distance=3.0)]))
    assert step(gen, clock, event(1, [group("g1", [1, 2], distance=1.0)])) == []  # held: 0.5 s after the last
    assert step(gen, clock, event(2, [group("g1", [1, 2], distance=1.0)])) == []  # supersedes frame 1
    assert gen.skipped["cam-1", "min_interval"] == 1
    clock.advance_to(T0 + 2.0)
    (task,) = sent(gen)
    assert (task.reason, task.frame_id) == ("distance", 2)


def test_a_frame_that_looks_like_the_last_one_sent_does_not_replace_a_pending_change() -> None:
    """A short-lived change is still assessed: the flap back does not overwrite the frame that showed it."""
    clock = ManualClock(T0)
    gen = generator(clock, min_group_interval_s=1.5)
    step(gen, clock, event(0, [group("g1", [1, 2], distance=3.0)]))
    assert step(gen, clock, event(1, [group("g1", [1, 2], distance=1.0)])) == []  # held by the interval
    assert step(gen, clock, event(2, [group("g1", [1, 2], distance=3.0)])) == []  # back: no_change
    clock.advance_to(T0 + 1.5)
    (task,) = sent(gen)
    assert (task.reason, task.frame_id) == ("distance", 1)
    assert gen.skipped["cam-1", "no_change"] == 1


def test_per_camera_overrides_of_the_intervals() -> None:
    clock = ManualClock(T0)
    gen = generator(
        clock, min_group_interval_s=5.0, cameras={"fast": {"min_group_interval_s": 0.0, "camera_min_interval_s": 1.0}}
    )
    step(gen, clock, event(0, [group("g1", [1, 2], distance=3.0)], camera="fast"))
    assert reasons(step(gen, clock, event(1, [group("g1", [1, 2], distance=1.0)], camera="fast", at=T0 + 1))) == [
        "distance"
    ]
    # camera interval: two new groups of one camera are sent 1 s apart; the second waits
    assert reasons(step(gen, clock, event(2, [group("g2", [3]), group("g3", [4])], camera="fast", at=T0 + 2))) == [
        "new"
    ]
    assert step(gen, clock, event(3, [group("g2", [3]), group("g3", [4])], camera="fast", at=T0 + 2.5)) == []
    assert gen.skipped["fast", "camera_interval"] == 1
    clock.advance_to(T0 + 3)
    assert len(sent(gen)) == 1


def test_a_pending_task_whose_frame_gets_too_old_expires() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, min_group_interval_s=5.0, max_task_age_s=2.0)
    step(gen, clock, event(0, [group("g1", [1, 2], distance=3.0)]))
    step(gen, clock, event(1, [group("g1", [1, 2], distance=1.0)]))  # held by the interval
    clock.advance_to(T0 + 0.5 + 2.1)  # the camera went quiet
    assert sent(gen) == []
    assert gen.skipped["cam-1", "expired"] == 1
    assert gen.pending == 0


def test_latest_wins_under_budget_pressure_and_the_superseded_frame_counts_as_budget() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, llm_budget_per_s=1, budget_burst=1)
    assert reasons(step(gen, clock, event(0, [group("g1", [1])]))) == ["new"]
    assert step(gen, clock, event(1, [group("g2", [2])], at=T0 + 0.2)) == []  # no token left
    assert step(gen, clock, event(2, [group("g2", [2])], at=T0 + 0.4)) == []
    assert gen.skipped["cam-1", "budget"] == 1
    clock.advance_to(T0 + 1.0)
    (task,) = sent(gen)
    assert (task.group_id, task.frame_id) == ("g2", 2)


# ---- budget and fair share -----------------------------------------------------------------------


def test_fair_share_across_cameras_under_budget_high_priority_first() -> None:
    """A busy camera cannot starve quiet ones; inside a camera the riskiest group goes first."""
    clock = ManualClock(T0)
    gen = generator(clock, llm_budget_per_s=3, budget_burst=3, refresh_s={"unassessed": 1000})
    busy = [group(f"b{i}", [100 + i], distance=5.0 - i * 0.4) for i in range(10)]  # b9 closest
    order: list[tuple[str, str]] = []
    for tick in range(4):
        clock.advance_to(T0 + tick)
        for camera, groups in (("busy", busy), ("quiet-1", [group("q1", [1])]), ("quiet-2", [group("q2", [2])])):
            gen.observe_event(event(tick, groups, camera=camera, at=clock.now()))
        order += [(t.camera_id, t.group_id) for t in sent(gen)]
    per_camera = collections.Counter(camera for camera, _ in order)
    # 3 tokens at t=0 then 3/s: 12 tasks; the quiet cameras each get their one new group at once
    assert len(order) == 12
    assert per_camera["quiet-1"] == per_camera["quiet-2"] == 1
    assert set(order[:3]) == {("busy", "b9"), ("quiet-1", "q1"), ("quiet-2", "q2")}
    busy_order = [g for c, g in order if c == "busy"]
    assert busy_order == [f"b{i}" for i in range(9, -1, -1)]
    # nothing vanished: every group of every frame is generated, skipped or still pending
    groups_seen = 4 * (10 + 1 + 1)
    assert sum(gen.generated.values()) + sum(gen.skipped.values()) + gen.pending == groups_seen


def test_equal_demand_gets_equal_shares_and_weights_skew_them() -> None:
    clock = ManualClock(T0)
    gen = generator(
        clock,
        llm_budget_per_s=4,
        budget_burst=1,
        refresh_s={"none": 1, "low": 1, "medium": 1, "high": 1, "unassessed": 0.1},
        cameras={"heavy": {"weight": 3}},
    )
    counts: collections.Counter[str] = collections.Counter()
    for tick in range(200):
        clock.advance_to(T0 + tick * 0.05)
        for camera in ("a", "b", "heavy"):
            gen.observe_event(
                event(tick, [group(f"{camera}{i}", [i]) for i in range(20)], camera=camera, at=clock.now())
            )
        counts.update(t.camera_id for t in sent(gen))
    total = sum(counts.values())
    assert 38 <= total <= 41  # 4/s for 10 s (+ burst)
    assert abs(counts["a"] - counts["b"]) <= 1
    assert counts["heavy"] == pytest.approx(3 * counts["a"], abs=3)


# ---- the stage handler ---------------------------------------------------------------------------


async def test_handle_takes_detections_and_results_and_dead_letters_garbage() -> None:
    clock = ManualClock(T0)
    gen = generator(clock)
    settings = SchedulerSettings()
    det_topic = settings.kafka.topics.detection_results.name
    res_topic = settings.kafka.topics.risk_assessment_results.name
    ev = event(0, [group("g1", [1, 2])])
    out = await gen.handle(Record(det_topic, 0, 0, b"cam-1", ev.SerializeToString()))
    topics = settings.kafka.topics
    assert [o.topic for o in out] == [topics.assessment_tasks.name, topics.task_decisions.name]
    assert [o.key for o in out] == ["cam-1", "cam-1"]
    task = events_pb2.AssessmentTask.FromString(out[0].value)
    assert task.deadline.seconds == int(events.seconds(ev.capture_time) + settings.scheduler.task_deadline_s)
    result = events_pb2.AssessmentResult(task_id=task.task_id, camera_id="cam-1", group_id="g1")
    result.verdict.risk_level = events_pb2.RISK_LEVEL_HIGH
    result.capture_time.CopyFrom(task.capture_time)
    assert await gen.handle(Record(res_topic, 0, 0, b"cam-1", result.SerializeToString())) == []
    with pytest.raises(DecodeError):
        await gen.handle(Record(det_topic, 0, 1, b"cam-1", b"\xff\xfe not protobuf"))
    with pytest.raises(DecodeError):
        await gen.handle(Record(det_topic, 0, 2, b"cam-1", events_pb2.DetectionEvent().SerializeToString()))
    twice = event(1, [group("g1", [1, 2]), group("g1", [3, 4])])
    with pytest.raises(DecodeError, match="repeats a group id"):
        await gen.handle(Record(det_topic, 0, 3, b"cam-1", twice.SerializeToString()))


async def test_every_group_of_every_event_is_decided_item_by_item_with_its_reason() -> None:
    """The TaskDecisions record of each event names what became of each group: sent, skipped, superseded, expired."""
    clock = ManualClock(T0)
    gen = generator(clock, llm_budget_per_s=1, budget_burst=1, min_group_size=2, max_task_age_s=2.0)
    topics = SchedulerSettings().kafka.topics

    def handle(ev: events_pb2.DetectionEvent) -> asyncio.Task[Any]:
        record = Record(topics.detection_results.name, 0, ev.frame_id, b"cam-1", ev.SerializeToString())
        return asyncio.create_task(gen.handle(record))

    def decided(out: Any) -> list[tuple[str, str, str, str]]:
        (record,) = [o for o in out if o.topic == topics.task_decisions.name]
        decisions = events_pb2.TaskDecisions.FromString(record.value)
        assert (decisions.event_id, decisions.camera_id) == ("cam-1:" + str(decisions.frame_id), "cam-1")
        return [
            (
                d.group_id,
                events_pb2.Decision.Name(d.decision).removeprefix("DECISION_").lower(),
                d.reason,
                d.superseded_by,
            )
            for d in decisions.groups
        ]

    first = handle(event(0, [group("g1", [1, 2]), group("g2", [3])]))  # g1 takes the only token
    second = handle(event(1, [group("g1", [1, 2]), group("g3", [4, 5])], at=T0 + 0.2))  # g3 waits for budget
    third = handle(event(2, [group("g3", [4, 5, 6])], at=T0 + 0.4))  # replaces frame 1's g3, waits again
    out = await first
    assert decided(out) == [("g1", "sent", "new", ""), ("g2", "skipped", "too_small", "")]
    assert [o.topic for o in out].count(topics.assessment_tasks.name) == 1
    assert decided(await second) == [("g1", "skipped", "no_change", ""), ("g3", "superseded", "budget", "cam-1:2/g3")]
    await asyncio.sleep(0.05)
    assert not third.done()  # its g3 is still pending: the record must not be acknowledged yet
    clock.advance_to(T0 + 0.4 + 2.1)  # frame 2 got too old before a token came
    gen.release()
    out = await third
    assert decided(out) == [("g3", "expired", "budget", "")]
    assert [o.topic for o in out] == [topics.task_decisions.name]
    # A backlog frame, already too old on arrival (e.g. redelivered after an outage), never waits.
    backlog = handle(event(3, [group("g4", [7, 8])], at=clock.now() - 2.5))
    assert decided(await backlog) == [("g4", "expired", "late", "")]
    assert gen.skipped["cam-1", "expired"] == 2


# ---- configuration -------------------------------------------------------------------------------


def test_the_shipped_config_loads() -> None:
    settings = load_settings(SchedulerSettings, REPO / "config")
    assert [r.reason for r in settings.taskgen.thresholds] == ["ttc", "pet", "drac", "distance", "density", "crowd"]
    # the file shows the defaults, as it says
    assert settings.taskgen.model_dump(exclude={"cameras"}) == TaskGeneratorConfig().model_dump(exclude={"cameras"})


def test_a_zone_outside_the_unit_square_fails_naming_the_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "taskgen.yaml").write_text(
        "cameras:\n  cam-1:\n    zones:\n      - {name: z, polygon: [[0, 0], [640, 0], [640, 480]]}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_settings(SchedulerSettings, tmp_path)
    assert "taskgen.yaml" in str(exc.value) and "cameras.cam-1.zones[0].polygon" in str(exc.value)


async def test_a_redelivered_copy_of_a_waiting_event_shares_its_task_instead_of_replacing_it() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, min_group_interval_s=5.0, max_task_age_s=60)
    topics = SchedulerSettings().kafka.topics
    gen.observe_event(event(0, [group("g1", [1, 2])]))
    assert len(sent(gen)) == 1  # g1 known; its next change waits out the 5 s interval
    changed = event(1, [group("g1", [3, 4])]).SerializeToString()
    first = asyncio.create_task(gen.handle(Record(topics.detection_results.name, 0, 1, b"cam-1", changed)))
    await asyncio.sleep(0)
    again = asyncio.create_task(gen.handle(Record(topics.detection_results.name, 0, 1, b"cam-1", changed)))
    await asyncio.sleep(0.05)
    assert not first.done() and not again.done() and gen.pending == 1
    clock.advance_to(T0 + 5.0)
    gen.release()
    for out in (await first, await again):
        (decisions,) = [o for o in out if o.topic == topics.task_decisions.name]
        (decision,) = events_pb2.TaskDecisions.FromString(decisions.value).groups
        assert (decision.decision, decision.reason) == (events_pb2.DECISION_SENT, "membership")
    assert not gen.skipped  # nothing was counted as superseded by itself


def test_an_idle_camera_is_forgotten_with_its_metric_labels() -> None:
    clock = ManualClock(T0)
    gen = generator(clock, camera_idle_s=30, camera_min_interval_s=5)
    assert reasons(step(gen, clock, event(1, [group("g1", [1, 2])], camera="cam-idle"))) == ["new"]
    assert REGISTRY.get_sample_value("riskwatch_tasks_generated_total", {"camera_id": "cam-idle", "reason": "new"})
    assert gen.generated["cam-idle", "new"] == 1
    # another camera keeps the generator busy well past the idle time
    step(gen, clock, event(1, [group("g1", [1, 2])], camera="cam-busy", at=T0 + 60))
    step(gen, clock, event(2, [group("g1", [1, 2])], camera="cam-busy", at=T0 + 70))
    labels = {"camera_id": "cam-idle", "reason": "new"}
    assert REGISTRY.get_sample_value("riskwatch_tasks_generated_total", labels) is None
    assert ("cam-idle", "new") not in gen.generated
    assert REGISTRY.get_sample_value("riskwatch_tasks_generated_total", {"camera_id": "cam-busy", "reason": "new"})
    # back again, it is a fresh camera: its group is new, and not held by its old min interval
    assert reasons(step(gen, clock, event(3, [group("g1", [1, 2])], camera="cam-idle", at=T0 + 71))) == ["new"]
