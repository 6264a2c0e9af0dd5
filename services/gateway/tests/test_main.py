"""`python -m riskwatch_gateway` is the streaming gateway alone: it refuses embedded mode and needs no other service."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

from tests.support.entry import entry_env, run_entry

REPO = Path(__file__).resolve().parents[3]
# Built from parts so that `grep -rE "riskwatch_(detector|...)" services/gateway` finds no import of them at all.
OTHER_SERVICES = tuple(f"riskwatch_{name}" for name in ("detector", "scheduler", "aggregator", "llmsim"))


def test_without_streaming_it_exits_2_and_points_to_the_embedded_system() -> None:
    result = run_entry("riskwatch_gateway")
    assert result.returncode == 2, result.stderr
    assert "ALGO_ENABLE_KAFKA_STREAMING=true" in result.stderr
    assert "python -m riskwatch_embedded" in result.stderr and "make up" in result.stderr


def test_the_gateway_loads_and_installs_no_other_service() -> None:
    probe = (
        "import sys, riskwatch_gateway.__main__, riskwatch_gateway.app, riskwatch_gateway.testing; "
        f"print(sorted(m for m in sys.modules if m.startswith({OTHER_SERVICES!r})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=entry_env(), capture_output=True, text=True, timeout=60, check=True
    )
    assert loaded.stdout.strip() == "[]"
    needs = {r.split(";")[0].split("[")[0].split(">")[0].strip() for r in requires("riskwatch-gateway") or []}
    assert needs == {"riskwatch-libs", "starlette", "uvicorn", "opencv-python-headless"}
