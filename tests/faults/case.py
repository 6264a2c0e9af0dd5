"""One fault case: steady load while a fault runs, then the ledger, Redis and a WebSocket client checked, and the
case's report written as JSON beside the run's logs."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.ledger import Ledger, account, redis_states, state_mismatches
from tests.faults.load import Load
from tests.faults.stack import FaultStack
from tests.support.clients import WsRecorder


@dataclass
class CaseReport:
    name: str
    ledger: Ledger
    state_problems: list[str]
    ws_problems: list[str]
    ws_behind: list[str]
    timings: dict[str, float]
    notes: dict[str, Any] = field(default_factory=dict)

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{self.name}.json").write_text(json.dumps(self.to_json(), indent=2))

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.name,
            "ledger": self.ledger.summary(),
            "state_problems": self.state_problems[:10],
            "ws_problems": self.ws_problems[:10],
            "ws_behind": self.ws_behind[:10],
            "timings_s": {k: round(v, 1) for k, v in self.timings.items()},
            "notes": self.notes,
        }


Fault = Callable[[], Awaitable[None]]


async def run_case(
    stack: FaultStack,
    name: str,
    fault: Fault,
    *,
    duration: float = 12.0,
    cameras: int = 6,
    fps: float = 2.0,
    settle_timeout: float = 90.0,
) -> CaseReport:
    """Steady load for `duration` s while `fault()` runs; then wait until everything is accounted for (or timeout)."""
    began = time.monotonic()
    restarted = stack.ensure_running()
    case_cameras = [f"{name}-{stack.run_id}-c{i}" for i in range(cameras)]
    assert stack.infra is not None
    load = Load(stack.infra.bootstrap, stack.topics["detection-results"], case_cameras, fps)
    timings: dict[str, float] = {}
    async with WsRecorder(stack.ports["gateway_http"], detections=False, reconnect=True) as ws:
        load_task = asyncio.create_task(load.run(duration))
        try:
            await fault()
            timings["fault_done"] = time.monotonic() - began
            await load_task
        finally:
            if not load_task.done():
                load_task.cancel()
        undelivered = await asyncio.to_thread(load.flush)
        timings["load_done"] = time.monotonic() - began
        assert undelivered == 0 and not load.errors, (undelivered, load.errors[:5])

        deadline = time.monotonic() + settle_timeout
        progress = []
        while True:
            polled = time.monotonic()
            ledger = await asyncio.to_thread(account, stack, load)
            progress.append(
                [
                    round(polled - began, 1),
                    round(time.monotonic() - polled, 1),
                    len(ledger.events_missing),
                    len(ledger.tasks_missing),
                    len(ledger.tasks_without_result),
                ]
            )
            state_problems: list[str] = []
            ws_behind: list[str] = []
            if ledger.complete:
                timings.setdefault("ledger_complete", time.monotonic() - began)
                states, repeated_alerts = await redis_states(stack, case_cameras)
                state_problems = state_mismatches(ledger, states) + repeated_alerts
                ws_behind = [
                    f"{c}: ws saw version {ws.last_version(c)}, redis has {s.version}"
                    for c, s in states.items()
                    if ws.last_version(c) != s.version
                ]
                if not state_problems:
                    timings.setdefault("state_ok", time.monotonic() - began)
                if not state_problems and not ws_behind:
                    break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        timings["settled"] = time.monotonic() - began
    report = CaseReport(name, ledger, state_problems, ws.violations(case_cameras), ws_behind, timings)
    report.notes["restarted_before_case"] = restarted
    # [s since start, s to read the topics, events missing, tasks missing, tasks without result] per poll
    report.notes["settle_progress"] = progress[:3] + progress[-3:] if len(progress) > 6 else progress
    report.notes["died_unexpectedly"] = stack.died_unexpectedly()
    report.notes["ws_connections"] = ws.connections
    # The ledger of each case lands beside the run's logs.
    await asyncio.to_thread(report.write, stack.log_dir.parent)
    print(json.dumps(report.to_json(), indent=2))
    return report


def assert_case(report: CaseReport, *, allow_failures: Iterable[str] = ()) -> None:
    """What every case must hold: nothing unaccounted or dead-lettered, no WS duplicate, the right final state."""
    ledger = report.ledger
    summary = json.dumps(report.to_json(), indent=1)
    assert not report.notes.get("died_unexpectedly"), f"a service exited during the case unasked: {summary}"
    assert ledger.unaccounted == 0, summary
    assert not ledger.groups_never_sent, summary
    assert not ledger.disagreements, summary
    assert not ledger.unexpected_results, summary
    assert sum(ledger.dead_letters.values()) == 0, summary
    assert not report.ws_problems, summary
    assert not report.state_problems, summary
    assert not report.ws_behind, summary
    allowed = {"verdict", *allow_failures}
    assert set(ledger.outcomes) <= allowed, summary


async def after(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def kill_and_restart(stack: FaultStack, name: str, sig: int = signal.SIGKILL, at: float = 4.0) -> dict[str, Any]:
    """At `at` s into the load, signal `name`, wait for it to exit, restart it; what its log said on the way out."""
    await after(at)
    mark = stack.log_size(name)
    started = time.monotonic()
    code = await asyncio.to_thread(stack.signal, name, sig)
    exited = time.monotonic() - started
    log = stack.log_since(name, mark)
    await asyncio.to_thread(stack.restart, name)
    return {"exit_code": code, "exit_s": round(exited, 2), "log": log}
