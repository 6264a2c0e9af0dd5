"""The fault suite's ledger: what became of every event, group, task and result of a case, read from the topics.

Each published DetectionEvent is identified by its event id and each of its groups by the task id
`<event_id>/<group_id>`. The task generator runs its shipped policy, and its TaskDecisions records on task-decisions
say what became of every group: sent (then a task must be on assessment-tasks and end in a result, a verdict or a
typed failure with a reason), or skipped, superseded by a newer frame's task, or expired, with the reason. A group
with no decision and no task is unaccounted. Duplicates on the wire are allowed (at-least-once) and counted; after a
crash a redelivered event may be decided again, differently, and either record accounts for it.

A `measured` result (the task generator's provisional record of a conflict, published before the LLM is asked) is an
additional record of its task, not its LLM outcome: it neither accounts for the task nor duplicates its verdict, and
is counted apart. In Redis, an alert is identified by its alert id (a task has a provisional alert and the verdict
alert that resolves it), and every provisional alert must be closed by a later resolution of its group — or its
provisional must still stand in the state.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from riskwatch import events
from riskwatch.cache import RedisCache, keys
from riskwatch.domain import RiskLevel
from riskwatch.v1 import events_pb2
from riskwatch_aggregator.state import alert_id, result_key
from tests.faults.load import Load
from tests.faults.stack import FaultStack
from tests.support.stack import CONSUMED_TOPICS


def _name(name: Callable[[Any], str], value: int, prefix: str) -> str | None:
    """The proto's own name of an enum `value` without `prefix`, lower case ("FAILURE_KIND_LLM_ERROR" -> "llm_error");
    None for the unspecified value or one this build does not know."""
    try:
        short = name(value).removeprefix(prefix).lower()
    except ValueError:
        return None
    return None if short == "unspecified" else short


def outcome_of(result: events_pb2.AssessmentResult) -> str:
    kind = result.WhichOneof("outcome")
    if kind == "verdict":
        return "verdict"
    failure = _name(events_pb2.FailureKind.Name, result.failure.kind, "FAILURE_KIND_")
    if kind == "failure" and failure is not None and result.failure.message:
        return failure
    return "untyped"


def agreement_key(result: events_pb2.AssessmentResult) -> tuple[Any, ...]:
    if result.WhichOneof("outcome") == "verdict":
        return ("verdict", result.verdict.risk_level, tuple(result.verdict.risk_types))
    return ("failure", result.failure.kind)


@dataclass
class Ledger:
    events_published: int = 0
    events_missing: list[str] = field(default_factory=list)
    event_copies: int = 0
    groups_expected: int = 0
    # Groups with neither a decision nor a task on the wire.
    undecided: list[str] = field(default_factory=list)
    # Decisions a reader cannot account with: no kind, no reason, or superseded by a task that does not exist.
    bad_decisions: list[str] = field(default_factory=list)
    # "<decision>:<reason>" -> groups, for the groups not sent.
    decisions: Counter[str] = field(default_factory=Counter)
    tasks_sent: int = 0
    # Decided "sent" but the task is not on assessment-tasks.
    tasks_missing: list[str] = field(default_factory=list)
    task_copies: int = 0
    tasks_without_result: list[str] = field(default_factory=list)
    result_copies: int = 0
    disagreements: list[str] = field(default_factory=list)
    untyped: list[str] = field(default_factory=list)
    unexpected_results: list[str] = field(default_factory=list)
    # Results of the tasks sent: "verdict" or the failure kind.
    outcomes: Counter[str] = field(default_factory=Counter)
    # (camera, group) pairs of the load never sent to the LLM at all.
    groups_never_sent: list[str] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)
    # (camera, group) -> the verdict of the latest frame that got one
    final: dict[tuple[str, str], events_pb2.AssessmentResult] = field(default_factory=dict)
    # The LLM outcomes (verdicts and failures) on risk-assessment-results.
    results: list[events_pb2.AssessmentResult] = field(default_factory=list)
    # Measured (provisional) records: distinct ones, copies on the wire, and those naming a task the load never had.
    provisionals: int = 0
    provisional_copies: int = 0
    provisionals_of_unknown_tasks: list[str] = field(default_factory=list)

    @property
    def unaccounted(self) -> int:
        return (
            len(self.events_missing)
            + len(self.undecided)
            + len(self.bad_decisions)
            + len(self.tasks_missing)
            + len(self.tasks_without_result)
            + len(self.untyped)
        )

    @property
    def complete(self) -> bool:
        gaps = (self.events_missing, self.undecided, self.bad_decisions, self.tasks_missing, self.tasks_without_result)
        return not any(gaps)

    def summary(self) -> dict[str, Any]:
        return {
            "events_published": self.events_published,
            "events_missing": len(self.events_missing),
            "duplicate_events_on_wire": self.event_copies,
            "groups_expected": self.groups_expected,
            "groups_undecided": len(self.undecided),
            "bad_decisions": len(self.bad_decisions),
            "groups_not_sent": dict(self.decisions.most_common()),
            "tasks_sent": self.tasks_sent,
            "tasks_missing": len(self.tasks_missing),
            "duplicate_tasks_on_wire": self.task_copies,
            "tasks_without_result": len(self.tasks_without_result),
            "duplicate_results_on_wire": self.result_copies,
            "disagreeing_duplicates": len(self.disagreements),
            "untyped_results": len(self.untyped),
            "unexpected_results": len(self.unexpected_results),
            "outcomes": dict(self.outcomes),
            "groups_never_sent": len(self.groups_never_sent),
            "dead_letters": self.dead_letters,
            "provisionals": self.provisionals,
            "duplicate_provisionals_on_wire": self.provisional_copies,
            "provisionals_of_unknown_tasks": len(self.provisionals_of_unknown_tasks),
            "unaccounted": self.unaccounted,
            "examples": {
                "events_missing": self.events_missing[:5],
                "undecided": self.undecided[:5],
                "bad_decisions": self.bad_decisions[:5],
                "tasks_missing": self.tasks_missing[:5],
                "tasks_without_result": self.tasks_without_result[:5],
                "disagreements": self.disagreements[:5],
                "untyped": self.untyped[:5],
                "groups_never_sent": self.groups_never_sent[:5],
                "provisionals_of_unknown_tasks": self.provisionals_of_unknown_tasks[:5],
            },
        }


def _records(stack: FaultStack, topic: str, cameras: set[str]) -> Iterable[bytes]:
    """Values of `topic` (a default topic name) keyed by one of `cameras`."""
    for record in stack.readers[stack.topics[topic]].records:
        if record.key is not None and record.key.decode() in cameras:
            yield record.value


def _supersedes(newer: str, task: str) -> bool:
    """Whether task id `newer` is a later frame of `task`'s group (what replacing it must mean)."""
    if "/" not in newer or _group_of(newer) != _group_of(task):
        return False
    return _frame_of(newer) > _frame_of(task)


def _frame_of(task_id: str) -> int:
    """The frame of a task id "<camera>:<frame>/<group>"."""
    return int(task_id.rsplit("/", 1)[0].rsplit(":", 1)[1])


def _group_of(task_id: str) -> str:
    """ "<camera>/<group>" of a task id "<camera>:<frame>/<group>"."""
    event_id, group_id = task_id.rsplit("/", 1)
    return f"{event_id.rsplit(':', 1)[0]}/{group_id}"


def account(stack: FaultStack, load: Load) -> Ledger:
    """Read every topic to its end and account for each event, group, task and result of this case's cameras."""
    for reader in stack.readers.values():
        reader.catch_up()
    cameras = set(load.cameras)
    ledger = Ledger(events_published=len(load.event_ids), groups_expected=len(load.task_ids))
    expected = set(load.task_ids)

    seen_events = Counter(
        events_pb2.DetectionEvent.FromString(v).event_id for v in _records(stack, "detection-results", cameras)
    )
    ledger.events_missing = [e for e in load.event_ids if e not in seen_events]
    ledger.event_copies = sum(n - 1 for n in seen_events.values())

    seen_tasks = Counter(
        events_pb2.AssessmentTask.FromString(v).task_id for v in _records(stack, "assessment-tasks", cameras)
    )
    ledger.task_copies = sum(n - 1 for n in seen_tasks.values())

    decided: dict[str, list[events_pb2.GroupDecision]] = defaultdict(list)
    for value in _records(stack, "task-decisions", cameras):
        for decision in events_pb2.TaskDecisions.FromString(value).groups:
            decided[decision.task_id].append(decision)
    sent: list[str] = []
    for task in load.task_ids:
        decisions = decided.get(task, [])
        # After a crash an event may be decided again; the latest record (one camera, one partition: in order)
        # is the one that stands. A task on the wire was sent whatever was decided later.
        latest = decisions[-1] if decisions else None
        if task in seen_tasks or (latest is not None and latest.decision == events_pb2.DECISION_SENT):
            sent.append(task)
            if task not in seen_tasks:
                ledger.tasks_missing.append(task)
            continue
        if latest is None:
            ledger.undecided.append(task)
            continue
        name = _name(events_pb2.Decision.Name, latest.decision, "DECISION_")
        replaced_by = latest.superseded_by
        if name == "superseded" and not (replaced_by in expected and _supersedes(replaced_by, task)):
            name = None  # replaced by a task the load never had, of another group, or not later
        if name is None or not latest.reason:
            ledger.bad_decisions.append(f"{task}: {latest}")
            continue
        ledger.decisions[f"{name}:{latest.reason}"] += 1
    ledger.tasks_sent = len(sent)
    ledger.groups_never_sent = sorted({_group_of(t) for t in load.task_ids} - {_group_of(t) for t in sent})

    by_task: dict[str, list[events_pb2.AssessmentResult]] = defaultdict(list)
    measured: Counter[str] = Counter()
    for value in _records(stack, "risk-assessment-results", cameras):
        result = events_pb2.AssessmentResult.FromString(value)
        if result.WhichOneof("outcome") == "measured":
            measured[result_key(result)] += 1
            if result.task_id not in expected:
                ledger.provisionals_of_unknown_tasks.append(result.task_id)
            continue
        by_task[result.task_id].append(result)
        ledger.results.append(result)
    ledger.provisionals = len(measured)
    ledger.provisional_copies = sum(n - 1 for n in measured.values())
    ledger.unexpected_results = [task for task in by_task if task not in expected]
    ledger.tasks_without_result = [task for task in sent if task in seen_tasks and task not in by_task]
    for task, results in by_task.items():
        ledger.result_copies += len(results) - 1
        ledger.outcomes[outcome_of(results[0])] += 1
        if len({agreement_key(r) for r in results}) > 1:
            ledger.disagreements.append(f"{task}: {[outcome_of(r) for r in results]}")
        if any(outcome_of(r) == "untyped" for r in results):
            ledger.untyped.append(task)
        for result in results:
            if result.WhichOneof("outcome") != "verdict":
                continue
            key = (result.camera_id, result.group_id)
            current = ledger.final.get(key)
            if current is None or events.seconds(result.capture_time) > events.seconds(current.capture_time):
                ledger.final[key] = result

    for topic in CONSUMED_TOPICS:
        dlq = stack.readers[f"{stack.topics[topic]}.dlq"]
        ledger.dead_letters[topic] = sum(1 for r in dlq.records if r.key is not None and r.key.decode() in cameras)
    return ledger


async def redis_states(
    stack: FaultStack, cameras: Iterable[str]
) -> tuple[dict[str, events_pb2.CameraRiskState], list[str]]:
    """Each camera's state in Redis, and what is wrong with its alert stream (alert_problems)."""
    assert stack.infra is not None
    cache = RedisCache(stack.infra.redis_url, prefix=stack.redis_prefix)
    states = {}
    problems = []
    try:
        for camera in cameras:
            data = await cache.get(keys.camera_state(camera))
            states[camera] = events_pb2.CameraRiskState.FromString(data or b"")
            stream = await cache.stream_tail(keys.camera_alerts(camera), 1000)
            problems += alert_problems(states[camera], [events_pb2.AssessmentResult.FromString(a) for a in stream])
    finally:
        await cache.close()
    return states, problems


def alert_problems(state: events_pb2.CameraRiskState, alerts: list[events_pb2.AssessmentResult]) -> list[str]:
    """Alerts of one camera's stream (oldest first) that are there more than once, and provisional alerts that no
    later alert of their group closes while the state no longer shows the group provisional."""
    counts = Counter(alert_id(a) for a in alerts)
    problems = [f"{alert} x{n} in the alert stream" for alert, n in counts.items() if n > 1]
    open_: dict[str, str] = {}  # group -> the id of its latest provisional alert not closed yet
    for alert in alerts:
        if alert.provisional_resolution != events_pb2.PROVISIONAL_RESOLUTION_UNSPECIFIED:
            open_.pop(alert.group_id, None)
        elif alert.WhichOneof("outcome") == "measured":
            open_[alert.group_id] = alert_id(alert)
    standing = {g.group_id for g in state.groups if g.HasField("provisional")}
    problems += [f"{alert} never closed" for group, alert in open_.items() if group not in standing]
    return problems


def state_mismatches(ledger: Ledger, states: dict[str, events_pb2.CameraRiskState]) -> list[str]:
    """Where the camera state in Redis is not the latest verdict per group of the results topic. Under a standing
    provisional the LLM's verdict is `llm_verdict`, and the group's level is raised to at least the measured one; a
    group only ever measured has no LLM verdict to compare."""
    problems = []
    for camera, state in states.items():
        got = {g.group_id: _llm_verdict(g) for g in state.groups if g.task_id}
        want = {
            group: (r.verdict.risk_level, tuple(r.verdict.risk_types))
            for (cam, group), r in ledger.final.items()
            if cam == camera
        }
        if got != want:
            problems.append(f"{camera}: redis {got} != latest verdicts {want}")
        measured = [g.provisional.risk_level for g in state.groups if g.HasField("provisional")]
        levels = [w[0] for w in want.values()] + measured
        if levels and state.max_level != max(levels, key=RiskLevel.from_proto):
            problems.append(f"{camera}: max_level {state.max_level}")
    return problems


def _llm_verdict(group: events_pb2.GroupRisk) -> tuple[int, tuple[str, ...]]:
    verdict = group.llm_verdict if group.HasField("provisional") else group.verdict
    return (verdict.risk_level, tuple(verdict.risk_types))
