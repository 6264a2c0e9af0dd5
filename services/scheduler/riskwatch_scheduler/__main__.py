"""`python -m riskwatch_scheduler task-generator|llm-scheduler`: one of the two stages as its own process."""

from __future__ import annotations

from typing import Any

from riskwatch.cli import Command, main_commands
from riskwatch_scheduler.app import run_llm_scheduler, run_task_generator
from riskwatch_scheduler.config import LlmSchedulerSettings, SchedulerSettings

COMMANDS: dict[str, Command[Any]] = {
    "task-generator": Command.from_settings(
        SchedulerSettings, run_task_generator, "decide which detected groups get an LLM look, and when"
    ),
    "llm-scheduler": Command.from_settings(
        LlmSchedulerSettings, run_llm_scheduler, "assess tasks with the vision LLM through the API key pool"
    ),
}

if __name__ == "__main__":
    raise SystemExit(main_commands("riskwatch_scheduler", COMMANDS))
