"""`python -m riskwatch_scheduler task-generator|llm-scheduler`: one of the two stages as its own process."""

from __future__ import annotations

import sys

from riskwatch.cli import main
from riskwatch.lifecycle import run_until_signalled
from riskwatch.runtime import connect_bus, make_cache
from riskwatch_scheduler.app import LlmSchedulerApp, TaskGeneratorApp, build_llm_client
from riskwatch_scheduler.config import SchedulerSettings


async def run_task_generator(settings: SchedulerSettings) -> None:
    bus = await connect_bus(settings)
    cache = make_cache(settings)
    try:
        await run_until_signalled(TaskGeneratorApp(settings, bus, cache))
    finally:
        await bus.close()
        await cache.close()


async def run_llm_scheduler(settings: SchedulerSettings) -> None:
    llm = build_llm_client(settings)
    bus = await connect_bus(settings)
    cache = make_cache(settings)
    try:
        await run_until_signalled(LlmSchedulerApp(settings, bus, llm, cache))
    finally:
        await bus.close()
        await cache.close()


ENTRY_POINTS = {"task-generator": run_task_generator, "llm-scheduler": run_llm_scheduler}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ENTRY_POINTS:
        print(f"usage: python -m riskwatch_scheduler {{{'|'.join(ENTRY_POINTS)}}} [--config-dir DIR]", file=sys.stderr)
        raise SystemExit(2)
    stage = sys.argv[1]
    raise SystemExit(main(SchedulerSettings, ENTRY_POINTS[stage], f"riskwatch_scheduler {stage}", sys.argv[2:]))
