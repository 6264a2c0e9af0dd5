"""The task generator's and the LLM scheduler's Prometheus metrics (the key pool's are per pool, in keypool.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

# Task generator.
TASKS_GENERATED = Counter(
    "riskwatch_tasks_generated_total", "Assessment tasks sent to the LLM scheduler", ["camera_id", "reason"]
)
GROUPS_SKIPPED = Counter(
    "riskwatch_groups_skipped_total", "Groups not sent for assessment, by reason", ["camera_id", "reason"]
)
PROVISIONAL_ALERTS = Counter(
    "riskwatch_provisional_alerts_total",
    "Provisional results from measured danger (a conflict past taskgen.yaml provisional bounds), by level",
    ["camera_id", "level"],
)
PENDING_TASKS = Gauge("riskwatch_taskgen_pending_tasks", "Triggered groups waiting for budget or an interval")

# LLM scheduler.
TASKS_IN_FLIGHT = Gauge("riskwatch_tasks_in_flight", "Assessment tasks the scheduler is working on")
TASK_OUTCOMES = Counter("riskwatch_task_outcomes_total", "Assessment tasks by outcome", ["outcome"])
UNKNOWN_RISK_TYPES = Counter(
    "riskwatch_llm_unknown_risk_types_total", "Risk types in LLM verdicts that are not known ones (dropped)"
)
