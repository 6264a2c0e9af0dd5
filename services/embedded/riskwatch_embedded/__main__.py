"""`python -m riskwatch_embedded`: the whole system in one process on the sample video (no Kafka, no Redis)."""

from __future__ import annotations

from riskwatch.cli import Command, add_config_dir, run_command
from riskwatch_embedded.app import run
from riskwatch_embedded.config import EmbeddedSettings

if __name__ == "__main__":
    raise SystemExit(run_command("riskwatch_embedded", Command(run, EmbeddedSettings.from_args, add_config_dir)))
