"""Failed assessments are logged once per kind per interval, with a count, not once per task."""

from __future__ import annotations

import logging

import pytest

from riskwatch.domain import FailureKind
from riskwatch_scheduler.scheduler import FailureLog


def test_each_kind_is_logged_when_first_seen_then_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    failures = FailureLog(interval_s=60, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, "riskwatch_scheduler.scheduler")
    for i in range(100):
        now[0] = i * 0.5  # 100 failing tasks within 50 s
        failures.failed(FailureKind.INVALID_REPLY, f"key-1: the reply is empty ({i})", "cam-1")
    failures.failed(FailureKind.NO_USABLE_KEYS, "all keys cooling", "cam-2")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "assessment failed (invalid_reply): 1 task(s); latest, camera cam-1: key-1: the reply is empty (0)",
        "assessment failed (no_usable_keys): 1 task(s); latest, camera cam-2: all keys cooling",
    ]
    now[0] = 61.0
    failures.failed(FailureKind.INVALID_REPLY, "key-2: the reply is not a JSON object", "cam-3")
    assert caplog.records[-1].getMessage() == (
        "assessment failed (invalid_reply): 100 task(s) in the last 61 s; latest, camera cam-3: "
        "key-2: the reply is not a JSON object"
    )
