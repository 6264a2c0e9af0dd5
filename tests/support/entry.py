"""Run a service's `python -m` entry as a user would, in a clean environment (no ALGO_/RW_ variables of the caller),
and return what it printed and its exit status."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.stack import REPO


def entry_env(**extra: str) -> dict[str, str]:
    """The caller's environment without riskwatch settings, metrics off, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALGO_", "RW_"))}
    env.update({"ALGO_METRICS_PORT": "0", **extra})
    return env


def run_entry(module: str, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m <module> <args>` from the repository root until it exits."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=entry_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
