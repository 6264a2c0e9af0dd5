"""Under steady load, the LLM misbehaves: a 429 storm on every key, 5xx and timeouts, a revoked key. Nothing is lost.

The simulator is reconfigured at runtime (POST /_control); every case restores it in `finally`. Results may be
typed failures where the fault makes a verdict impossible in time, but every task ends in exactly one outcome.
"""

from __future__ import annotations

import pytest

from tests.faults.case import after, assert_case, run_case
from tests.faults.stack import FaultStack

pytestmark = [pytest.mark.infra, pytest.mark.faults]

HEALTHY = {"qps": 10.0, "rpm": 600.0, "fault_5xx": 0.0, "fault_timeout": 0.0, "fault_invalid_json": 0.0}


async def test_5xx_and_timeouts_on_10_percent_of_calls(stack: FaultStack) -> None:
    before = await stack.llm_stats()

    async def fault() -> None:
        try:
            await stack.control_llm({"fault_5xx": 0.05, "fault_timeout": 0.05})
            await after(12)
        finally:
            await stack.control_llm(HEALTHY)

    report = await run_case(stack, "llm-5xx-timeouts", fault)
    stats = await stack.llm_stats()
    report.notes["llm_stats_delta"] = _delta(before, stats)
    print(report.notes)
    assert _total(stats, "http_5xx") > _total(before, "http_5xx")
    assert _total(stats, "timeouts") > _total(before, "timeouts")
    # A failed call is retried on another key; a task fails only when its retries are exhausted.
    assert_case(report, allow_failures=("llm_error",))
    assert report.ledger.outcomes["verdict"] >= 0.95 * report.ledger.tasks_sent


async def test_429_storm_on_every_key(stack: FaultStack) -> None:
    before = await stack.llm_stats()

    async def fault() -> None:
        await after(3)
        try:
            await stack.control_llm({"qps": 0.5})
            await after(6)
        finally:
            await stack.control_llm(HEALTHY)

    report = await run_case(stack, "llm-429-storm", fault)
    stats = await stack.llm_stats()
    report.notes["llm_stats_delta"] = _delta(before, stats)
    print(report.notes)
    assert _total(stats, "http_429") > _total(before, "http_429") + 10, "no storm happened"
    # Tasks wait for a key (bounded by their 30 s deadline) rather than fail: the storm lasts 8 s.
    assert_case(report)


async def test_one_key_revoked(stack: FaultStack) -> None:
    mark = stack.log_size("llm-scheduler")

    async def fault() -> None:
        await stack.control_llm({"per_key": {"key-003": {"revoked": True}}})
        await after(12)

    try:
        report = await run_case(stack, "llm-key-revoked", fault)
    finally:
        await stack.control_llm({"per_key": {"key-003": None}})
    stats = await stack.llm_stats()
    log = stack.log_since("llm-scheduler", mark)
    revoked = stats["keys"].get("key-003", {}) if isinstance(stats.get("keys"), dict) else {}
    report.notes["key-003"] = revoked
    print(report.notes)
    assert "key-003" in log and "disabled" in log.lower(), log[-3000:]
    # Traffic moves to the other nine keys; no task fails because one key is gone.
    assert_case(report)
    late = [r for r in report.ledger.results if r.key_id == "key-003"]
    assert not late, [r.task_id for r in late[:5]]


def _total(stats: dict[str, object], field: str) -> int:
    keys = stats.get("keys")
    if isinstance(keys, dict):
        return sum(int(v.get(field, 0)) for v in keys.values() if isinstance(v, dict))
    value = stats.get(field, 0)
    return int(value) if isinstance(value, int | float) else 0


def _delta(before: dict[str, object], after_: dict[str, object]) -> dict[str, int]:
    fields = ("ok", "http_429", "http_5xx", "timeouts", "http_401", "invalid_json", "disconnected")
    return {f: _total(after_, f) - _total(before, f) for f in fields}
