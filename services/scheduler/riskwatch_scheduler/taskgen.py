"""Task generator: turns DetectionEvents into AssessmentTasks only for the groups whose risk may have changed.

Policy (config/taskgen.yaml documents every knob):
- A group is *triggered* when it is new; when a member entered a configured zone; when a feature crossed a
  threshold bound in the risky direction; when its membership changed (track-id Jaccard below a bound); when a
  crossing or zone entry reverted (recovery, optional); or when its last verdict is older than the refresh
  interval of that verdict's level. Triggers compare the frame with the group *as last sent*, not with the
  previous frame, so slow drifts are caught too.
- A triggered group becomes a pending task; at most one per (camera, group): a newer *triggered* frame of
  the group replaces it (latest wins — a task superseded before it was sent never reaches Kafka, so the
  scheduler needs no cancellation). The replaced frame is counted as skipped with the reason it was still
  waiting (budget, min_interval, camera_interval). A newer frame that triggers nothing (it looks like what
  the LLM last saw) leaves the pending task alone, so a short-lived change is still assessed.
- Pending tasks are released under the LLM budget (token bucket, calls/s) with a fair share per camera,
  highest heuristic risk score first (see policy/fairshare.py), respecting the per-group and per-camera
  minimum intervals. A pending task whose frame is older than `max_task_age_s` is dropped ("expired").
- Verdicts: the generator also consumes risk-assessment-results (same `handle`; a record from that topic is
  a result, any other a detection), keeping the latest level per group for the refresh interval and the
  priority; a verdict lower than the previous one is re-checked after `refresh_s.after_drop`. A group whose
  results never reach this instance is refreshed at the `unassessed` interval: more calls, never fewer.

- Danger only (`send_new_groups: on_trigger`): a group that shows no danger measure (no crossed bound, no zone)
  is not sent as new, nor for a membership change, nor refreshed while its last verdict is none: only when
  something dangerous appears (or, once sent, when it recovers). The default `always` sends every new group.
- Provisional results (policy/provisional.py): a group whose conflict is past the `provisional` bounds gets a
  `measured` AssessmentResult on risk-assessment-results in the `handle` that sees its frame, whatever the budget,
  the intervals or its pending task; once per conflict episode, again when the level rises. It is published
  through the Stage's publishing path (`publish`, acknowledged before the record is), so it is at-least-once
  like the tasks. The generator's own measured records coming back on the results topic are no verdicts.

Every group of every event ends in exactly one of riskwatch_tasks_generated_total{reason} or
riskwatch_groups_skipped_total{reason}, and item by item in the event's TaskDecisions record on task-decisions
(sent with its trigger; skipped, superseded or expired with the reason): nothing disappears silently.

Pending tasks are released whenever a record (detection or result) arrives and by a ticker (`start`), so a
quiet camera's last look is sent or expires on time. Nothing is lost in a crash: `handle` for a detection
returns only when each of its queued groups is resolved (its task returned for publishing, or superseded or
expired and counted), so the Stage publishes the event's tasks and decisions and acknowledges the record only
then — the stage runs with many records in flight (`max_records_in_flight`) and commits contiguously. After a
crash the unresolved records are redelivered; the restarted generator knows no group and sends them as "new".
Stale detections (a backlog) expire instead of reaching the LLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Sequence

from riskwatch import events
from riskwatch.bus import Outgoing, Record
from riskwatch.domain import GroupFeatures, RiskLevel
from riskwatch.errors import DecodeError
from riskwatch.telemetry.metrics import forget_camera
from riskwatch.v1 import events_pb2
from riskwatch_scheduler.config import SchedulerSettings
from riskwatch_scheduler.metrics import GROUPS_SKIPPED, PENDING_TASKS, PROVISIONAL_ALERTS, TASKS_GENERATED
from riskwatch_scheduler.policy import triggers
from riskwatch_scheduler.policy.fairshare import FairShareQueue, PendingTask, Resolved
from riskwatch_scheduler.policy.provisional import ProvisionalEpisodes, measured_result
from riskwatch_scheduler.policy.settings import SendNewGroups
from riskwatch_scheduler.policy.triggers import GroupMemory, VerdictMemory

log = logging.getLogger(__name__)

# Skip reasons besides those of policy/fairshare.py (budget, min_interval, camera_interval).
TOO_SMALL = "too_small"
NO_CHANGE = "no_change"
# send_new_groups on_trigger: nothing triggered and the group shows no danger measure.
CALM = "calm"
EXPIRED = "expired"
# Decision reason of an expiry for a frame already older than max_task_age_s when it arrived (a backlog).
LATE = "late"
SWEEP_EVERY_S = 5.0
RELEASE_EVERY_S = 0.1

# Publishes a record's outputs before the record is acknowledged (the Stage's `publish`), retrying until they are.
Publish = Callable[[Sequence[Outgoing], Record], Awaitable[None]]


def decode_detection_event(record: Record) -> events_pb2.DetectionEvent:
    event = events.decode(
        events_pb2.DetectionEvent, record.value, what=record.where, required=("camera_id", "event_id")
    )
    group_ids = [group.group_id for group in event.groups]
    if len(set(group_ids)) != len(group_ids):
        raise DecodeError(f"{record.where}: DetectionEvent {event.event_id} repeats a group id")
    return event


def decode_result(record: Record) -> events_pb2.AssessmentResult:
    return events.decode(
        events_pb2.AssessmentResult, record.value, what=record.where, required=("camera_id", "group_id")
    )


class TaskGenerator:
    """Stage handler for detection-results and risk-assessment-results; emits AssessmentTasks."""

    def __init__(
        self, settings: SchedulerSettings, *, clock: Callable[[], float] = time.time, publish: Publish | None = None
    ) -> None:
        """`publish` sends provisional results at once; without it they go out with the record's other outputs."""
        self._config = settings.taskgen
        self._topic = settings.kafka.topics.assessment_tasks.name
        self._results_topic = settings.kafka.topics.risk_assessment_results.name
        self._decisions_topic = settings.kafka.topics.task_decisions.name
        self._deadline_s = settings.scheduler.task_deadline_s
        self._clock = clock
        self._publish = publish
        config = self._config
        self._queue = FairShareQueue(
            config.llm_budget_per_s,
            config.budget_burst,
            now=clock(),
            camera_interval=self._camera_interval,
            camera_weight=lambda camera_id: config.camera(camera_id).weight,
        )
        self._groups: dict[tuple[str, str], GroupMemory] = {}
        self._verdicts: dict[tuple[str, str], VerdictMemory] = {}
        self._episodes = ProvisionalEpisodes(config.provisional.episode_gap_s)
        self._swept = clock()
        # When each camera last sent an event: cameras idle longer than camera_idle_s are forgotten.
        self._camera_seen: dict[str, float] = {}
        self._camera_idle_s = config.camera_idle_s or float(settings.redis.state_ttl_s)
        self._ticker: asyncio.Task[None] | None = None
        # Tallies of what the counters received, by (camera, reason): for tests and the benchmark.
        self.generated: Tally[tuple[str, str]] = Tally()
        self.skipped: Tally[tuple[str, str]] = Tally()
        self.provisional: Tally[tuple[str, str]] = Tally()  # by (camera, level label)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def last_verdict(self, camera_id: str, group_id: str) -> RiskLevel | None:
        """The level of the latest verdict known for a group (UNASSESSED after a failure), if any."""
        verdict = self._verdicts.get((camera_id, group_id))
        return verdict.level if verdict is not None else None

    async def start(self) -> None:
        """Release due tasks (and expire stale ones) even when no record arrives."""
        self._ticker = asyncio.create_task(self._tick(), name="taskgen-release")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(RELEASE_EVERY_S)
            self.release()

    async def handle(self, record: Record) -> Sequence[Outgoing]:
        """Results: remember the verdict. Detections: provisional results at once; then, once every group is
        resolved, its tasks and decisions."""
        if record.topic == self._results_topic:
            self.observe_result(decode_result(record))
            self.release()
            return []
        event = decode_detection_event(record)
        loop = asyncio.get_running_loop()
        provisional = [
            Outgoing(self._results_topic, event.camera_id, result.SerializeToString())
            for result in self.observe_danger(event)
        ]
        outcomes = self.observe_event(event)
        queued = [o for o in outcomes if isinstance(o, PendingTask)]
        for item in queued:
            if item.resolution is None:  # a redelivered copy of the event shares the first copy's
                item.resolution = loop.create_future()
        self.release()
        if provisional and self._publish is not None:
            await self._publish(provisional, record)
            provisional = []
        resolved = iter(await asyncio.gather(*(item.resolution for item in queued if item.resolution is not None)))
        decisions = events_pb2.TaskDecisions(
            event_id=event.event_id,
            camera_id=event.camera_id,
            frame_id=event.frame_id,
            capture_time=event.capture_time,
            decided_time=events.timestamp(self._clock()),
        )
        outgoing = provisional
        for outcome in outcomes:
            if isinstance(outcome, PendingTask):
                decision, task = next(resolved)
                if task is not None:
                    outgoing.append(Outgoing(self._topic, event.camera_id, task))
                decisions.groups.append(decision)
            else:
                decisions.groups.append(outcome)
        outgoing.append(Outgoing(self._decisions_topic, event.camera_id, decisions.SerializeToString()))
        return outgoing

    def observe_event(self, event: events_pb2.DetectionEvent) -> list[events_pb2.GroupDecision | PendingTask]:
        """Apply the policy to every group of `event`: skip it (counted) or make it the group's pending task.

        Returns, group by group, the decision (a skip) or the pending task it queued.
        """
        outcomes: list[events_pb2.GroupDecision | PendingTask] = []
        now = self._clock()
        config = self._config
        self._camera_seen[event.camera_id] = now
        camera = config.camera(event.camera_id)
        min_interval = (
            camera.min_group_interval_s if camera.min_group_interval_s is not None else config.min_group_interval_s
        )
        capture = events.seconds(event.capture_time)
        late = capture < now - config.max_task_age_s
        for group in event.groups:
            if len(group.member_track_ids) < config.min_group_size:
                outcomes.append(self._skip(event, group, TOO_SMALL))
                continue
            if late:
                outcomes.append(self._skip(event, group, EXPIRED, decision=events_pb2.DECISION_EXPIRED, reason=LATE))
                continue
            key = (event.camera_id, group.group_id)
            memory = self._groups.get(key)
            if memory is not None:
                memory.last_seen = now
            verdict = self._verdicts.get(key)
            level = verdict.level if verdict is not None else RiskLevel.UNASSESSED
            refresh_after = config.refresh_s.for_level(level.label)
            if verdict is not None and verdict.dropped:
                refresh_after = min(refresh_after, config.refresh_s.after_drop)
            seen = triggers.observe(event, group, config.thresholds, camera.zones, memory)
            reason = triggers.trigger(
                seen,
                memory,
                rules=config.thresholds,
                min_jaccard=config.membership_min_jaccard,
                on_recovery=config.trigger_on_recovery,
                refresh_after=refresh_after,
                clock=now,
                send_new=config.send_new_groups,
                verdict_level=level,
            )
            if reason is None:
                # Also when the group has a pending task: that frame showed a change, this one does not.
                danger_only = config.send_new_groups is SendNewGroups.ON_TRIGGER
                outcomes.append(self._skip(event, group, CALM if danger_only and seen.calm else NO_CHANGE))
                continue
            zone_weights = [z.weight for z in camera.zones if z.name in seen.zones]
            priority = triggers.risk_score(
                GroupFeatures.from_proto(group.features), config.priority, zone_weights, level
            )
            not_before = memory.last_sent + min_interval if memory is not None else now
            item = PendingTask(
                camera_id=event.camera_id,
                group_id=group.group_id,
                task=self.task_for(event, group, reason, priority),
                reason=reason,
                priority=priority,
                capture=capture,
                not_before=not_before,
                observation=seen,
            )
            waiting = self._queue.get(event.camera_id, group.group_id)
            if waiting is not None and waiting.task.task_id == item.task.task_id:
                # The same event again (redelivered while its first copy waits): both copies share that task.
                outcomes.append(waiting)
                continue
            superseded = self._queue.put(item, now)
            outcomes.append(item)
            if superseded is not None:
                old, waited_for = superseded
                self._count_skip(event.camera_id, waited_for)
                _resolve(old, events_pb2.DECISION_SUPERSEDED, waited_for, superseded_by=item.task.task_id)
        self._sweep(now)
        return outcomes

    def observe_danger(self, event: events_pb2.DetectionEvent) -> list[events_pb2.AssessmentResult]:
        """The provisional results to publish for `event` now: its groups whose conflict is past the bounds and
        whose episode has not yet been published at that level (a backlog frame raises none: it is stale)."""
        now = self._clock()
        capture = events.seconds(event.capture_time)
        if capture < now - self._config.max_task_age_s:
            return []
        results = []
        for group in event.groups:
            if not group.HasField("conflict"):
                continue
            level = self._config.provisional.level(GroupFeatures.from_proto(group.features))
            if level is not None and self._episodes.observe((event.camera_id, group.group_id), level, capture):
                results.append(measured_result(event, group, level, now=now))
                PROVISIONAL_ALERTS.labels(event.camera_id, level.label).inc()
                self.provisional[event.camera_id, level.label] += 1
        return results

    def observe_result(self, result: events_pb2.AssessmentResult) -> None:
        """Remember the group's latest verdict level (a failure makes it UNASSESSED); older results are ignored.

        A verdict lower than the previous one marks the group `dropped`: it is re-checked after
        `refresh_s.after_drop` so the aggregator gets the confirming verdict its de-escalation hold needs.
        """
        if result.WhichOneof("outcome") == "measured":
            return  # our own provisional result: a measurement, not the LLM's verdict
        key = (result.camera_id, result.group_id)
        capture = events.seconds(result.capture_time)
        current = self._verdicts.get(key)
        if current is not None and capture <= current.capture:
            return  # a redelivery, or older than what we know
        dropped = False
        if result.WhichOneof("outcome") == "verdict":
            level = RiskLevel.from_proto(result.verdict.risk_level)
            # A drop is from one verdict to a lower one; a verdict after a failure is no drop.
            dropped = current is not None and RiskLevel.NONE <= level < current.level
        else:
            level = RiskLevel.UNASSESSED
        self._verdicts[key] = VerdictMemory(level, capture, self._clock(), dropped)

    def release(self) -> list[Outgoing]:
        """Tasks due now (budget, fair share, intervals permitting), oldest-frame ones expired first."""
        now = self._clock()
        for item, waited_for in self._queue.expire(now - self._config.max_task_age_s, now):
            self._count_skip(item.camera_id, EXPIRED)
            _resolve(item, events_pb2.DECISION_EXPIRED, waited_for)
        outgoing: list[Outgoing] = []
        for item in self._queue.release(now):
            key = (item.camera_id, item.group_id)
            self._groups[key] = GroupMemory(item.observation, last_sent=now, last_seen=now)
            item.task.created_time.CopyFrom(events.timestamp(now))
            data = item.task.SerializeToString()
            _resolve(item, events_pb2.DECISION_SENT, item.reason, task=data)
            outgoing.append(Outgoing(self._topic, item.camera_id, data))
            TASKS_GENERATED.labels(item.camera_id, item.reason).inc()
            self.generated[item.camera_id, item.reason] += 1
        PENDING_TASKS.set(len(self._queue))
        return outgoing

    def task_for(
        self, event: events_pb2.DetectionEvent, group: events_pb2.Group, reason: str, priority: float
    ) -> events_pb2.AssessmentTask:
        capture = events.seconds(event.capture_time)
        members = frozenset(group.member_track_ids)
        return events_pb2.AssessmentTask(
            task_id=events.task_id(event.event_id, group.group_id),
            event_id=event.event_id,
            camera_id=event.camera_id,
            frame_id=event.frame_id,
            group_id=group.group_id,
            member_track_ids=group.member_track_ids,
            features=group.features,
            crop_jpeg=group.crop_jpeg,
            priority=priority,
            capture_time=event.capture_time,
            deadline=events.timestamp(capture + self._deadline_s),
            reason=reason,
            members=[d for d in event.detections if d.track_id in members],
            conflict=group.conflict if group.HasField("conflict") else None,
        )

    def _camera_interval(self, camera_id: str) -> float:
        override = self._config.camera(camera_id).camera_min_interval_s
        return override if override is not None else self._config.camera_min_interval_s

    def _skip(
        self,
        event: events_pb2.DetectionEvent,
        group: events_pb2.Group,
        counted_as: str,
        *,
        decision: events_pb2.Decision.ValueType = events_pb2.DECISION_SKIPPED,
        reason: str | None = None,
    ) -> events_pb2.GroupDecision:
        """Count a group decided on arrival under `counted_as`; its decision (reason defaults to `counted_as`)."""
        self._count_skip(event.camera_id, counted_as)
        return events_pb2.GroupDecision(
            group_id=group.group_id,
            task_id=events.task_id(event.event_id, group.group_id),
            decision=decision,
            reason=reason or counted_as,
        )

    def _count_skip(self, camera_id: str, reason: str) -> None:
        GROUPS_SKIPPED.labels(camera_id, reason).inc()
        self.skipped[camera_id, reason] += 1

    def _sweep(self, now: float) -> None:
        """Forget groups (and their verdicts) not seen for `group_idle_s`, so memory follows the live scene."""
        if now - self._swept < SWEEP_EVERY_S:
            return
        self._swept = now
        idle = now - self._config.group_idle_s
        for key in [k for k, m in self._groups.items() if m.last_seen < idle]:
            del self._groups[key]
        for key in [k for k, v in self._verdicts.items() if v.last_seen < idle and k not in self._groups]:
            del self._verdicts[key]
        self._episodes.forget(idle)
        for camera_id in [c for c, seen in self._camera_seen.items() if now - seen > self._camera_idle_s]:
            if self._queue.forget(camera_id):
                del self._camera_seen[camera_id]
                forget_camera(camera_id, TASKS_GENERATED, GROUPS_SKIPPED, PROVISIONAL_ALERTS)
                self._episodes.forget_camera(camera_id)
                for tally in (self.generated, self.skipped, self.provisional):
                    for key in [k for k in tally if k[0] == camera_id]:
                        del tally[key]


def _resolve(
    item: PendingTask,
    decision: events_pb2.Decision.ValueType,
    reason: str,
    *,
    task: bytes | None = None,
    superseded_by: str = "",
) -> None:
    """Complete the item's resolution (if a detection record waits for it) with its group's decision."""
    if item.resolution is None or item.resolution.done():
        return
    record = events_pb2.GroupDecision(
        group_id=item.group_id,
        task_id=item.task.task_id,
        decision=decision,
        reason=reason,
        superseded_by=superseded_by,
    )
    item.resolution.set_result(Resolved(record, task))
