"""`python -m riskwatch_embedded`: the shipped configuration validates, streaming settings are refused, and the
simulator is started where the configured API keys point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from riskwatch.config import load_settings
from riskwatch_embedded.app import simulator_for
from riskwatch_scheduler.config import SchedulerSettings
from riskwatch_scheduler.keys_config import load_api_keys

REPO = Path(__file__).resolve().parents[3]


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ALGO_")}
    environ.update({"ALGO_METRICS_PORT": "0", **env})
    return subprocess.run(
        [sys.executable, "-m", "riskwatch_embedded", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_validate_config_accepts_the_shipped_files() -> None:
    result = _run("--validate-config")
    assert result.returncode == 0, result.stderr
    assert "riskwatch_embedded: configuration OK" in result.stdout


def test_with_streaming_enabled_it_exits_2_and_points_to_the_streaming_services() -> None:
    result = _run(ALGO_ENABLE_KAFKA_STREAMING="true")
    assert result.returncode == 2, result.stderr
    assert "start_streaming_services.sh" in result.stderr


def test_the_simulator_knows_every_configured_key_and_listens_where_they_point() -> None:
    settings = load_settings(SchedulerSettings, REPO / "config")
    api_keys = load_api_keys(settings.api_keys_file)
    simulator, port = simulator_for(api_keys)
    assert set(simulator.keys) == {key.id for key in api_keys.keys}
    assert f":{port}" in api_keys.default_base_url
