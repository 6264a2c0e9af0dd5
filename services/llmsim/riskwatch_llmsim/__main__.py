"""`python -m riskwatch_llmsim --port 8400 --keys key-001=sim-key-001` serves the simulator until a signal."""

from __future__ import annotations

from collections.abc import Sequence

from riskwatch.cli import Command, run_command

from .app import run
from .config import add_arguments, settings_from_args

COMMAND = Command(run, settings_from_args, add_arguments, "OpenAI-compatible vision-LLM simulator")


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 after a signal, 2 for an invalid configuration (the message never shows a token)."""
    return run_command("riskwatch_llmsim", COMMAND, argv)


if __name__ == "__main__":
    raise SystemExit(main())
