"""The analysis of one `make bench` run: from what was pushed or published, the topics read back and the samples
taken, the numbers of its report (throughput, latencies, the ledger of unaccounted items, LLM usage), step by step."""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from riskwatch import events
from riskwatch.v1 import events_pb2
from tests.bench import measure
from tests.support.stack import (
    REPO,
)
from tests.support.topics import TopicRecord

KEYS = 10
QPS = 10
LLM_MEDIAN_S = 1.0
CONSUMERS = ("task-generator", "llm-scheduler", "aggregator")
OUT_DIR = REPO / "bench-results"


# --- analysis --------------------------------------------------------------------------------------


Samples = list[tuple[str, dict[str, str], float]]


def delta(before: Samples, after: Samples, name: str, **match: str) -> float:
    return measure.total(after, name, **match) - measure.total(before, name, **match)


@dataclass
class RunData:
    """What one run left behind: the load's own record, counters and simulator stats around the measured window,
    what the WebSocket client saw, and every record of the run's topics."""

    mode: str
    args: argparse.Namespace
    topic_names: dict[str, str]
    window: tuple[float, float]
    load: list[Any]
    before: dict[str, Samples]
    after: dict[str, Samples]
    final: dict[str, Samples]
    sim: tuple[dict[str, Any], dict[str, Any]]
    seen: dict[str, Any]
    topics: dict[str, list[TopicRecord]]
    dlq: dict[str, int]
    events: list[events_pb2.DetectionEvent] = field(init=False)
    tasks: list[events_pb2.AssessmentTask] = field(init=False)
    results: list[events_pb2.AssessmentResult] = field(init=False)

    def __post_init__(self) -> None:
        self.events = [events_pb2.DetectionEvent.FromString(r.value) for r in self.topics["detection-results"]]
        self.tasks = [events_pb2.AssessmentTask.FromString(r.value) for r in self.topics["assessment-tasks"]]
        self.results = [events_pb2.AssessmentResult.FromString(r.value) for r in self.topics["risk-assessment-results"]]

    @property
    def span(self) -> float:
        return self.window[1] - self.window[0]

    def in_window(self, t: float) -> bool:
        return self.window[0] <= t < self.window[1]

    def delta(self, service: str, name: str, **match: str) -> float:
        """How much a counter of `service` grew over the measured window."""
        return delta(self.before.get(service, []), self.after.get(service, []), name, **match)


def analyse(run: RunData) -> dict[str, Any]:
    """The run's report: each step below reads one part of what the run left behind."""
    unaccounted: Counter[str] = Counter()
    out: dict[str, Any] = {"mode": run.mode, "offered_per_s": run.args.cameras * run.args.fps}
    out |= event_publish_delays(run)
    out |= detector_frames(run, unaccounted) if run.mode == "detector" else replayed_events(run, unaccounted)
    out |= groups_decided(run, unaccounted)
    out |= tasks_and_results(run, unaccounted)
    out["dead_letters"] = run.dlq
    unaccounted["dead_letters"] = sum(run.dlq.values())
    out["unaccounted_detail"] = dict(unaccounted)
    out["unaccounted"] = sum(unaccounted.values())
    out |= latencies(run)
    out |= state_and_websocket(run)
    out |= llm_usage(run)
    return out


def event_publish_delays(run: RunData) -> dict[str, Any]:
    """Kafka timestamp (set when the detector or the replayer produced the record) minus capture time."""
    published_at = [
        (record.timestamp_ms / 1000 - events.seconds(e.capture_time), len(e.groups))
        for e, record in zip(run.events, run.topics["detection-results"], strict=True)
        if run.in_window(events.seconds(e.capture_time))
    ]
    return {
        "event_publish_delay": measure.summary([d for d, _ in published_at]),
        "event_publish_delay_with_groups": measure.summary([d for d, g in published_at if g]),
    }


def detector_frames(run: RunData, unaccounted: Counter[str]) -> dict[str, Any]:
    """Detector run: frames pushed → events, the detector's counters, detections at the WebSocket client."""
    load, span = run.load, run.span
    topic_event_ids = {e.event_id for e in run.events}
    outcomes: Counter[str] = Counter(o.outcome for o in load)
    errors = Counter(o.detail.split(":")[0] for o in load if o.outcome in ("error", "no_response"))
    in_w = [o for o in load if run.in_window(o.capture)]
    detected = [o for o in in_w if o.outcome == "event"]
    out: dict[str, Any] = {
        "frames": {
            "pushed": len(load),
            **{k: outcomes.get(k, 0) for k in ("event", "dropped", "error", "no_response")},
            "error_kinds": dict(errors),
            "pushed_per_s": round(len(in_w) / span, 2),
            "detected_per_s": round(len(detected) / span, 2),
            "dropped_per_s": round(sum(o.outcome == "dropped" for o in in_w) / span, 2),
            "drop_share": round(sum(o.outcome == "dropped" for o in in_w) / max(1, len(in_w)), 3),
        }
    }
    out["events_per_s"] = out["frames"]["detected_per_s"]
    unaccounted["frames_without_answer"] = outcomes.get("no_response", 0)
    unaccounted["events_missing_from_topic"] = sum(
        1 for o in load if o.outcome == "event" and o.event_id not in topic_event_ids
    )
    out["push_reply_latency"] = measure.summary([o.answered - o.capture for o in detected])
    batches = run.delta("detector", "detector_batch_size_count")
    out["detector"] = {
        "processed_per_s": round(run.delta("detector", "detector_frames_total", outcome="processed") / span, 2),
        "dropped_per_s": round(run.delta("detector", "detector_frames_total", outcome="dropped") / span, 2),
        "mean_batch": round(run.delta("detector", "detector_batch_size_sum") / max(1.0, batches), 2),
        "inference_busy_share": round(run.delta("detector", "detector_inference_seconds_sum") / span, 3),
        "mean_detector_latency_s": round(
            run.delta("detector", "detector_latency_seconds_sum")
            / max(1.0, run.delta("detector", "detector_latency_seconds_count")),
            3,
        ),
    }
    by_frame = {(c, f): (t, cap) for t, c, f, cap in run.seen["detections"]}
    out["detection_push"] = measure.summary([t - cap for (t, cap) in by_frame.values() if run.in_window(cap)])
    out["detections_at_ws"] = len(by_frame)
    out["detections_at_ws_missing"] = sum(
        1 for o in load if o.outcome == "event" and (o.camera_id, o.frame_id) not in by_frame
    )
    return out


def replayed_events(run: RunData, unaccounted: Counter[str]) -> dict[str, Any]:
    """Replay run: events published → topic, and what the task generator consumed of them."""
    topic_event_ids = {e.event_id for e in run.events}
    acked = [p for p in run.load if p.acked]
    in_w = [p for p in acked if run.in_window(p.capture)]
    unaccounted["events_not_acked"] = len(run.load) - len(acked)
    unaccounted["events_missing_from_topic"] = sum(1 for p in acked if p.event_id not in topic_event_ids)
    # Consumed by the task generator = published in the window less the growth of its lag on the topic.
    lag_growth = run.delta("task-generator", "kafka_consumer_lag", topic=run.topic_names["detection-results"])
    return {
        "published": {
            "events": len(run.load),
            "acked": len(acked),
            "failed": sum(1 for p in run.load if p.error),
            "published_per_s": round(len(in_w) / run.span, 2),
        },
        "events_per_s": round((len(in_w) - lag_growth) / run.span, 2),
        "task_generator_lag_growth": lag_growth,
    }


def groups_decided(run: RunData, unaccounted: Counter[str]) -> dict[str, Any]:
    """Events → groups → tasks or skipped (the task generator's own counters, read after the drain), and item by
    item: every group of every event has a decision on task-decisions (or its task is on the wire)."""
    tg = run.final["task-generator"]
    groups = sum(len(e.groups) for e in run.events)
    topic_event_ids = Counter(e.event_id for e in run.events)
    decided: dict[str, events_pb2.GroupDecision] = {}
    for record in run.topics["task-decisions"]:
        decided.update((d.task_id, d) for d in events_pb2.TaskDecisions.FromString(record.value).groups)
    group_task_ids = {events.task_id(e.event_id, g.group_id) for e in run.events for g in e.groups}
    task_ids = {t.task_id for t in run.tasks}
    unaccounted["groups_undecided"] = sum(1 for t in group_task_ids if t not in decided and t not in task_ids)
    return {
        "events_in_topic": len(run.events),
        "groups_per_event": round(groups / max(1, len(run.events)), 3),
        "duplicate_events_in_topic": sum(n - 1 for n in topic_event_ids.values() if n > 1),
        "groups": {
            "in_events": groups,
            "tasks_generated": int(measure.total(tg, "riskwatch_tasks_generated_total")),
            "skipped": int(measure.total(tg, "riskwatch_groups_skipped_total")),
            "pending_at_end": int(measure.total(tg, "riskwatch_taskgen_pending_tasks")),
            "skipped_by_reason": {
                k: int(v) for k, v in measure.by_label(tg, "riskwatch_groups_skipped_total", "reason").items()
            },
            "generated_by_reason": {
                k: int(v) for k, v in measure.by_label(tg, "riskwatch_tasks_generated_total", "reason").items()
            },
            "decisions": dict(
                Counter(
                    f"{events_pb2.Decision.Name(d.decision).removeprefix('DECISION_').lower()}:{d.reason}"
                    for t, d in decided.items()
                    if t in group_task_ids
                ).most_common()
            ),
        },
    }


def tasks_and_results(run: RunData, unaccounted: Counter[str]) -> dict[str, Any]:
    """Tasks → exactly one result each."""
    generated = measure.total(run.final["task-generator"], "riskwatch_tasks_generated_total")
    task_ids = Counter(t.task_id for t in run.tasks)
    result_ids = Counter(r.task_id for r in run.results)
    unaccounted["tasks_generated_vs_topic"] = abs(int(generated) - len(task_ids))
    unaccounted["duplicate_tasks"] = sum(n - 1 for n in task_ids.values() if n > 1)
    unaccounted["tasks_without_result"] = sum(1 for t in task_ids if result_ids.get(t, 0) == 0)
    unaccounted["duplicate_results"] = sum(n - 1 for n in result_ids.values() if n > 1)
    unaccounted["results_without_task"] = sum(1 for r in result_ids if r not in task_ids)
    return {
        "tasks": {
            "in_topic": len(run.tasks),
            "unique": len(task_ids),
            "results": len(run.results),
            "outcomes": dict(
                Counter(
                    "verdict" if r.WhichOneof("outcome") == "verdict" else events_pb2.FailureKind.Name(r.failure.kind)
                    for r in run.results
                )
            ),
            "tasks_per_s": round(run.delta("task-generator", "riskwatch_tasks_generated_total") / run.span, 2),
        }
    }


def verdicts_at_websocket(run: RunData) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """(arrival, capture) per task id: of the risk_state pushed because of its verdict (its last_task_id: several
    changes of one camera may coalesce into one push), and of the first state listing it in any group (includes
    verdicts held back by de-escalation hysteresis until a later change of the camera pushes the state)."""
    captured = {r.task_id: events.seconds(r.capture_time) for r in run.results}
    pushed_for: dict[str, tuple[float, float]] = {}
    listed: dict[str, tuple[float, float]] = {}
    for state in run.seen["states"]:
        task_id = state["last_task_id"]
        if task_id in captured and task_id not in pushed_for:
            pushed_for[task_id] = (state["t"], captured[task_id])
        for group_task_id, capture, _level in state["groups"]:
            if group_task_id and group_task_id not in listed:
                listed[group_task_id] = (state["t"], capture)
    return pushed_for, listed


def latencies(run: RunData) -> dict[str, Any]:
    """Capture → verdict at the WebSocket client, → alert, → result; and where the time goes per task."""
    start = run.window[0]
    pushed_for, listed = verdicts_at_websocket(run)
    alerts = {task_id: (t, cap) for t, task_id, cap in run.seen["alerts"]}
    in_window = [r for r in run.results if run.in_window(events.seconds(r.capture_time))]
    out: dict[str, Any] = {
        "risk": measure.summary([t - cap for t, cap in pushed_for.values() if run.in_window(cap)]),
        "risk_series": sorted((round(cap - start, 3), round(t - cap, 4)) for t, cap in pushed_for.values()),
        "risk_alerts": measure.summary([t - cap for t, cap in alerts.values() if run.in_window(cap)]),
        "risk_any_group": measure.summary([t - cap for t, cap in listed.values() if run.in_window(cap)]),
        "result_latency": measure.summary(
            [events.seconds(r.completed_time) - events.seconds(r.capture_time) for r in in_window]
        ),
        "result_minus_llm_latency": measure.summary(
            [
                events.seconds(r.completed_time) - events.seconds(r.capture_time) - r.llm_latency_ms / 1000
                for r in in_window
                if r.WhichOneof("outcome") == "verdict"
            ]
        ),
    }
    # Per task captured in the window: task generator (capture → task released, policy waits included), scheduler
    # (released → result published, less the LLM call), LLM call, then aggregator + Redis + gateway (result
    # published → risk_state at the WebSocket client).
    by_task = {t.task_id: t for t in run.tasks}
    parts: dict[str, list[float]] = {"task_generator": [], "scheduler_queue": [], "llm_call": [], "to_websocket": []}
    for r in in_window:
        task = by_task.get(r.task_id)
        if task is None or r.WhichOneof("outcome") != "verdict":
            continue
        capture = events.seconds(r.capture_time)
        created, completed = events.seconds(task.created_time), events.seconds(r.completed_time)
        parts["task_generator"].append(created - capture)
        parts["scheduler_queue"].append(completed - created - r.llm_latency_ms / 1000)
        parts["llm_call"].append(r.llm_latency_ms / 1000)
        if r.task_id in pushed_for:
            parts["to_websocket"].append(pushed_for[r.task_id][0] - completed)
    out["breakdown"] = {k: measure.summary(v) for k, v in parts.items()}
    out["verdicts_visible_at_ws"] = len(listed)
    return out


def state_and_websocket(run: RunData) -> dict[str, Any]:
    """The aggregator's state changes and what the gateway pushed, dropped, and the client saw."""
    aggregator, gateway = run.final["aggregator"], run.final["gateway"]
    out: dict[str, Any] = {
        "state_pushes_at_ws": len(run.seen["states"]),
        "state_changes": int(measure.total(aggregator, "riskwatch_risk_state_changes_total")),
        "results_ignored_by_aggregator": {
            k: int(v) for k, v in measure.by_label(aggregator, "riskwatch_results_ignored_total", "reason").items()
        },
        "ws_messages": run.seen["kinds"],
        "ws_closed": run.seen["closed"],
        "ws_dropped": {k: int(v) for k, v in measure.by_label(gateway, "riskwatch_ws_dropped_total", "reason").items()},
    }
    if run.mode == "detector":
        out["detection_series"] = sorted(
            (round(cap - run.window[0], 3), round(t - cap, 4)) for t, _c, _f, cap in run.seen["detections"]
        )
    return out


def llm_usage(run: RunData) -> dict[str, Any]:
    """LLM calls per second and per-key utilisation over the window."""
    s0, s1 = run.sim
    span = run.span
    ok = s1["totals"]["ok"] - s0["totals"]["ok"]
    return {
        "llm": {
            "calls_per_s": round(ok / span, 2),
            "requests_per_s": round((s1["totals"]["calls"] - s0["totals"]["calls"]) / span, 2),
            "http_429_per_s": round((s1["totals"]["http_429"] - s0["totals"]["http_429"]) / span, 3),
            "quota_per_s": KEYS * QPS,
            "utilisation": round(ok / span / (KEYS * QPS), 3),
            "key_utilisation": {
                key: round((v["ok"] - s0["keys"].get(key, {}).get("ok", 0)) / span / QPS, 3)
                for key, v in sorted(s1["keys"].items())
            },
            "peak_concurrent": s1.get("peak_concurrent"),
        },
        "llm_latency_s": round(
            run.delta("llm-scheduler", "llm_latency_seconds_sum")
            / max(1.0, run.delta("llm-scheduler", "llm_latency_seconds_count")),
            3,
        ),
    }


def headline(r: dict[str, Any]) -> str:
    parts = [f"events/s {r['events_per_s']}"]
    if r["mode"] == "detector":
        parts.append(f"dropped/s {r['frames']['dropped_per_s']}")
        parts.append(f"detection p95 {r['detection_push']['p95_s']}")
    parts += [
        f"risk p95 {r['risk']['p95_s']}",
        f"LLM calls/s {r['llm']['calls_per_s']}",
        f"unaccounted {r['unaccounted']} { ({k: v for k, v in r['unaccounted_detail'].items() if v}) }",
    ]
    return ", ".join(parts)
