"""The ledger itself: it must see every kind of loss the fault cases claim to rule out (no infrastructure needed)."""

from __future__ import annotations

from typing import Any

from riskwatch import events
from riskwatch.v1 import events_pb2
from tests.faults.ledger import account, alert_problems, state_mismatches
from tests.faults.load import Load, detection_event
from tests.support.stack import CONSUMED_TOPICS, TOPICS
from tests.support.topics import TopicRecord


class _Topic:
    def __init__(self) -> None:
        self.records: list[TopicRecord] = []

    def catch_up(self) -> int:
        return 0


class _Stack:
    """Just what `account` reads of a FaultStack: topic names and their records."""

    run_id = "ledger"

    def __init__(self) -> None:
        self.topics = {t: f"{t}-ledger" for t in TOPICS}
        names = [*self.topics.values(), *(f"{self.topics[t]}.dlq" for t in CONSUMED_TOPICS)]
        self.readers = {name: _Topic() for name in names}

    def put(self, topic: str, camera: str, message: Any) -> None:
        name = self.topics.get(topic, topic)
        self.readers[name].records.append(TopicRecord(camera.encode(), message.SerializeToString(), 0))


def _load(cameras: list[str], frames: int) -> tuple[Load, list[events_pb2.DetectionEvent]]:
    load = Load.__new__(Load)
    load.cameras, load.event_ids, load.task_ids = cameras, [], []
    published = []
    for frame in range(1, frames + 1):
        for index, camera in enumerate(cameras):
            event = detection_event(camera, index, frame, b"")
            load.event_ids.append(event.event_id)
            load.task_ids.extend(events.task_id(event.event_id, g.group_id) for g in event.groups)
            published.append(event)
    return load, published


def _verdict(
    event: events_pb2.DetectionEvent, group: events_pb2.Group, level: events_pb2.RiskLevel.ValueType
) -> events_pb2.AssessmentResult:
    return events_pb2.AssessmentResult(
        task_id=events.task_id(event.event_id, group.group_id),
        camera_id=event.camera_id,
        group_id=group.group_id,
        capture_time=event.capture_time,
        verdict=events_pb2.Verdict(risk_level=level),
    )


def _decisions(event: events_pb2.DetectionEvent, **how: tuple[int, str, str]) -> events_pb2.TaskDecisions:
    """The event's decisions: every group sent as "new" unless `how[group_id]` = (decision, reason, superseded_by)."""
    record = events_pb2.TaskDecisions(event_id=event.event_id, camera_id=event.camera_id)
    for group in event.groups:
        decision, reason, superseded_by = how.get(group.group_id, (events_pb2.DECISION_SENT, "new", ""))
        record.groups.add(
            group_id=group.group_id,
            task_id=events.task_id(event.event_id, group.group_id),
            decision=decision,
            reason=reason,
            superseded_by=superseded_by,
        )
    return record


def _healthy() -> tuple[_Stack, Load, list[events_pb2.DetectionEvent]]:
    stack = _Stack()
    load, published = _load(["cam-a", "cam-b"], 3)
    for event in published:
        stack.put("detection-results", event.camera_id, event)
        stack.put("task-decisions", event.camera_id, _decisions(event))
        for group in event.groups:
            task = events_pb2.AssessmentTask(
                task_id=events.task_id(event.event_id, group.group_id), camera_id=event.camera_id
            )
            stack.put("assessment-tasks", event.camera_id, task)
            stack.put("risk-assessment-results", event.camera_id, _verdict(event, group, events_pb2.RISK_LEVEL_LOW))
    return stack, load, published


def _account(stack: _Stack, load: Load) -> Any:
    return account(stack, load)  # type: ignore[arg-type]


def test_a_clean_run_is_fully_accounted() -> None:
    stack, load, _ = _healthy()
    ledger = _account(stack, load)
    assert ledger.unaccounted == 0 and ledger.complete and ledger.outcomes == {"verdict": 12}
    assert ledger.tasks_sent == 12 and not ledger.decisions and not ledger.groups_never_sent


def test_groups_not_sent_are_accounted_by_their_decision_and_reason() -> None:
    stack = _Stack()
    load, published = _load(["cam-a"], 3)
    first, _, third = published
    superseded = (events_pb2.DECISION_SUPERSEDED, "min_interval", events.task_id(third.event_id, "g2"))
    how = [
        {},
        {"g1": (events_pb2.DECISION_SKIPPED, "no_change", ""), "g2": superseded},
        {"g1": (events_pb2.DECISION_EXPIRED, "late", "")},
    ]
    for event, decided in zip(published, how, strict=True):
        stack.put("detection-results", event.camera_id, event)
        stack.put("task-decisions", event.camera_id, _decisions(event, **decided))
    for event, group in [(first, first.groups[0]), (first, first.groups[1]), (third, third.groups[1])]:
        task = events_pb2.AssessmentTask(task_id=events.task_id(event.event_id, group.group_id))
        stack.put("assessment-tasks", event.camera_id, task)
        stack.put("risk-assessment-results", event.camera_id, _verdict(event, group, events_pb2.RISK_LEVEL_LOW))
    ledger = _account(stack, load)
    assert ledger.unaccounted == 0 and ledger.complete, ledger.summary()
    assert ledger.tasks_sent == 3
    assert ledger.decisions == {"skipped:no_change": 1, "superseded:min_interval": 1, "expired:late": 1}


def test_groups_without_a_usable_decision_are_unaccounted() -> None:
    stack = _Stack()
    load, published = _load(["cam-a"], 3)
    first, second, third = published
    nowhere = (events_pb2.DECISION_SUPERSEDED, "budget", "cam-a:99/g1")  # replaced by a task that never existed
    stack.put("task-decisions", "cam-a", _decisions(first, g1=nowhere, g2=(events_pb2.DECISION_SKIPPED, "", "")))
    itself = (events_pb2.DECISION_SUPERSEDED, "budget", events.task_id(second.event_id, "g1"))
    other_group = (events_pb2.DECISION_SUPERSEDED, "budget", events.task_id(third.event_id, "g1"))
    stack.put("task-decisions", "cam-a", _decisions(second, g1=itself, g2=other_group))
    # No event reached detection-results, and the third event's decisions never reached task-decisions.
    ledger = _account(stack, load)
    assert len(ledger.bad_decisions) == 4
    assert ledger.undecided == [events.task_id(third.event_id, g.group_id) for g in third.groups]
    assert ledger.groups_never_sent == ["cam-a/g1", "cam-a/g2"]
    assert ledger.unaccounted == 3 + 4 + 2  # three events missing, four bad decisions, two undecided groups
    assert not ledger.complete


def test_the_latest_decision_stands_after_a_redelivery() -> None:
    """A crash between publishing the decisions and the task: the redelivered event is decided again (late)."""
    stack = _Stack()
    load, (event,) = _load(["cam-a"], 1)
    stack.put("detection-results", "cam-a", event)
    stack.put("task-decisions", "cam-a", _decisions(event))  # "sent", but the task never reached Kafka
    late = (events_pb2.DECISION_EXPIRED, "late", "")
    stack.put("task-decisions", "cam-a", _decisions(event, g1=late, g2=late))
    ledger = _account(stack, load)
    assert ledger.unaccounted == 0 and ledger.complete, ledger.summary()
    assert ledger.decisions == {"expired:late": 2}


def test_every_kind_of_loss_is_seen() -> None:
    stack, load, published = _healthy()
    # An event the broker never got, a task never produced, a result never produced.
    lost_event = published[-1]
    stack.readers[stack.topics["detection-results"]].records.pop()
    tasks = stack.readers[stack.topics["assessment-tasks"]].records
    results = stack.readers[stack.topics["risk-assessment-results"]].records
    del tasks[0]  # its decision says "sent"
    del results[3]
    # A duplicate that disagrees, a failure without a reason, a dead letter.
    first = published[0]
    stack.put("risk-assessment-results", first.camera_id, _verdict(first, first.groups[1], events_pb2.RISK_LEVEL_HIGH))
    untyped = events_pb2.AssessmentResult(task_id=load.task_ids[4], camera_id=published[2].camera_id)
    untyped.failure.kind = events_pb2.FAILURE_KIND_LLM_ERROR
    stack.put("risk-assessment-results", untyped.camera_id, untyped)
    stack.put(f"{stack.topics['assessment-tasks']}.dlq", "cam-a", untyped)

    ledger = _account(stack, load)
    assert ledger.events_missing == [lost_event.event_id]
    assert ledger.tasks_missing == [load.task_ids[0]]
    assert len(ledger.tasks_without_result) == 1
    assert len(ledger.disagreements) == 2  # the high verdict among lows, and the failure beside a verdict
    assert ledger.untyped == [load.task_ids[4]]
    assert sum(ledger.dead_letters.values()) == 1
    assert ledger.unaccounted == 4
    assert not ledger.complete


def test_final_state_is_the_latest_verdict_per_group() -> None:
    stack, load, published = _healthy()
    last = detection_event(published[-1].camera_id, 1, 4, b"")  # a later frame of the same camera
    last.capture_time.FromSeconds(published[-1].capture_time.seconds + 1)
    stack.put("risk-assessment-results", last.camera_id, _verdict(last, last.groups[0], events_pb2.RISK_LEVEL_HIGH))
    ledger = _account(stack, load)
    assert ledger.final[(last.camera_id, "g1")].verdict.risk_level == events_pb2.RISK_LEVEL_HIGH
    assert ledger.final[(last.camera_id, "g2")].verdict.risk_level == events_pb2.RISK_LEVEL_LOW


# ---- provisional (measured) records ----------------------------------------------------------------


def _measured(
    event: events_pb2.DetectionEvent, group: events_pb2.Group, level: events_pb2.RiskLevel.ValueType
) -> events_pb2.AssessmentResult:
    """The task generator's provisional record of a conflict in `group` (same task id as its task)."""
    result = _verdict(event, group, level)
    result.measured.CopyFrom(events_pb2.MeasuredDanger(risk_level=level, risk_types=["near_miss"]))
    return result


def test_a_measured_record_is_an_additional_record_of_its_task_not_a_duplicate_verdict() -> None:
    stack, load, published = _healthy()
    first = published[0]
    for _ in range(2):  # published twice (at-least-once)
        high = _measured(first, first.groups[0], events_pb2.RISK_LEVEL_HIGH)
        stack.put("risk-assessment-results", first.camera_id, high)
    raised = _measured(first, first.groups[0], events_pb2.RISK_LEVEL_HIGH)
    raised.measured.risk_level = events_pb2.RISK_LEVEL_MEDIUM  # the same task's provisional at another level
    stack.put("risk-assessment-results", first.camera_id, raised)
    ledger = _account(stack, load)
    assert ledger.unaccounted == 0 and ledger.complete, ledger.summary()
    assert ledger.outcomes == {"verdict": 12} and not ledger.untyped and not ledger.disagreements
    assert ledger.result_copies == 0 and ledger.provisionals == 2 and ledger.provisional_copies == 1
    # the final state is still the verdicts': a high measurement is no verdict
    assert ledger.final[(first.camera_id, "g1")].verdict.risk_level == events_pb2.RISK_LEVEL_LOW


def test_a_measured_record_does_not_account_for_a_task_without_its_llm_outcome() -> None:
    stack, load, published = _healthy()
    results = stack.readers[stack.topics["risk-assessment-results"]].records
    del results[0]  # the verdict of the first event's g1
    first = published[0]
    stack.put("risk-assessment-results", first.camera_id, _measured(first, first.groups[0], events_pb2.RISK_LEVEL_HIGH))
    unknown = _measured(first, first.groups[0], events_pb2.RISK_LEVEL_HIGH)
    unknown.task_id = "cam-a:99/g1"  # a frame the load never had
    stack.put("risk-assessment-results", first.camera_id, unknown)
    ledger = _account(stack, load)
    assert ledger.tasks_without_result == [load.task_ids[0]] and not ledger.complete
    assert ledger.provisionals_of_unknown_tasks == ["cam-a:99/g1"] and not ledger.unexpected_results


def _alert(
    task_id: str,
    outcome: str,
    resolution: events_pb2.ProvisionalResolution.ValueType = events_pb2.PROVISIONAL_RESOLUTION_UNSPECIFIED,
) -> events_pb2.AssessmentResult:
    alert = events_pb2.AssessmentResult(
        task_id=task_id, camera_id="cam-a", group_id=task_id.rsplit("/", 1)[1], provisional_resolution=resolution
    )
    if outcome == "measured":
        alert.measured.risk_level = events_pb2.RISK_LEVEL_HIGH
    else:
        alert.verdict.risk_level = events_pb2.RISK_LEVEL_HIGH
    return alert


def test_an_alert_may_be_provisional_or_a_resolution_and_every_provisional_must_be_closed() -> None:
    provisional = _alert("cam-a:1/g1", "measured")
    confirmed = _alert("cam-a:1/g1", "verdict", events_pb2.PROVISIONAL_RESOLUTION_CONFIRMED)
    expired = _alert("cam-a:2/g2", "measured", events_pb2.PROVISIONAL_RESOLUTION_EXPIRED)
    state = events_pb2.CameraRiskState(camera_id="cam-a")
    # a provisional and its resolution share a task id: neither is a repeat
    assert alert_problems(state, [provisional, confirmed, _alert("cam-a:2/g2", "measured"), expired]) == []
    # one never closed, while the state no longer shows it; one still standing in the state is fine
    standing = _alert("cam-a:3/g3", "measured")
    state.groups.add(group_id="g3").provisional.risk_level = events_pb2.RISK_LEVEL_HIGH
    assert alert_problems(state, [provisional, standing]) == ["cam-a:1/g1#measured:high never closed"]
    # the same alert twice is a repeat
    assert alert_problems(state, [provisional, confirmed, confirmed]) == ["cam-a:1/g1#confirmed x2 in the alert stream"]


def test_under_a_standing_provisional_the_state_is_compared_by_its_llm_verdict() -> None:
    stack, load, _ = _healthy()
    ledger = _account(stack, load)
    low, high = events_pb2.RISK_LEVEL_LOW, events_pb2.RISK_LEVEL_HIGH
    states = {}
    for camera in ("cam-a", "cam-b"):
        state = events_pb2.CameraRiskState(camera_id=camera, max_level=low)
        for group_id in ("g1", "g2"):
            state.groups.add(group_id=group_id, task_id="t", verdict=events_pb2.Verdict(risk_level=low))
        states[camera] = state
    raised = states["cam-a"].groups[0]
    raised.verdict.risk_level = high
    raised.provisional.risk_level = high
    raised.llm_verdict.risk_level = low
    states["cam-a"].max_level = high
    states["cam-a"].groups.add(group_id="g9", verdict=events_pb2.Verdict(risk_level=high)).provisional.risk_level = high
    assert state_mismatches(ledger, states) == []  # g9 was only ever measured: no LLM verdict to compare
    raised.llm_verdict.risk_level = high
    assert state_mismatches(ledger, states) == [
        "cam-a: redis {'g1': (4, ()), 'g2': (2, ())} != latest verdicts {'g1': (2, ()), 'g2': (2, ())}"
    ]
