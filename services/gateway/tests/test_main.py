"""`python -m riskwatch_gateway` is the streaming gateway alone: it refuses embedded mode and needs no other service."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
OTHER_SERVICES = ("riskwatch_detector", "riskwatch_scheduler", "riskwatch_aggregator", "riskwatch_llmsim")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALGO_")}
    env.update({"ALGO_METRICS_PORT": "0", **extra})
    return env


def test_without_streaming_it_exits_2_and_points_to_the_embedded_system() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "riskwatch_gateway"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "ALGO_ENABLE_KAFKA_STREAMING=true" in result.stderr
    assert "python -m riskwatch_embedded" in result.stderr and "make up" in result.stderr


def test_the_gateway_loads_and_installs_no_other_service() -> None:
    probe = (
        "import sys, riskwatch_gateway.__main__, riskwatch_gateway.app, riskwatch_gateway.testing; "
        f"print(sorted(m for m in sys.modules if m.startswith({OTHER_SERVICES!r})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60, check=True
    )
    assert loaded.stdout.strip() == "[]"
    needs = {r.split(";")[0].split("[")[0].split(">")[0].strip() for r in requires("riskwatch-gateway") or []}
    assert needs == {"riskwatch-libs", "starlette", "uvicorn", "opencv-python-headless"}
