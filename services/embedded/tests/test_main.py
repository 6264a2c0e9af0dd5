"""`python -m riskwatch_embedded`: the shipped configuration validates, streaming settings are refused, and the
simulator is started where the configured API keys point."""

from __future__ import annotations

import subprocess
from pathlib import Path

from riskwatch_embedded.app import simulator_for
from riskwatch_embedded.config import EmbeddedSettings
from tests.support.entry import run_entry

REPO = Path(__file__).resolve().parents[3]


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_entry("riskwatch_embedded", *args, **env)


def test_validate_config_accepts_the_shipped_files() -> None:
    result = _run("--validate-config")
    assert result.returncode == 0, result.stderr
    assert "riskwatch_embedded: configuration OK" in result.stdout


def test_validate_config_checks_every_stage_file_and_names_a_bad_one(tmp_path: Path) -> None:
    for path in (REPO / "config").glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "api_keys.yaml").write_text("keys:\n  - {id: k1, api_key: secret-value-123, qps_limit: 0}\n")
    result = _run("--validate-config", "--config-dir", str(tmp_path))
    assert result.returncode == 2
    assert "api_keys.yaml" in result.stderr and "qps_limit" in result.stderr
    assert "secret-value-123" not in result.stderr
    ok = _run("--validate-config")
    for name in ("gateway.yaml", "detector.yaml", "taskgen.yaml", "aggregator.yaml", "api_keys.yaml", "prompts.yaml"):
        assert name in ok.stdout


def test_with_streaming_enabled_it_exits_2_and_points_to_the_streaming_services() -> None:
    result = _run(ALGO_ENABLE_KAFKA_STREAMING="true")
    assert result.returncode == 2, result.stderr
    assert "start_streaming_services.sh" in result.stderr


def test_the_simulator_knows_every_configured_key_and_listens_where_they_point() -> None:
    api_keys = EmbeddedSettings.load(REPO / "config").scheduler.api_keys
    simulator, port = simulator_for(api_keys)
    assert set(simulator.keys) == {key.id for key in api_keys.keys}
    assert f":{port}" in api_keys.default_base_url
