"""`python -m riskwatch_scheduler <stage>`: sub-commands, and --validate-config covering the key file and prompts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.entry import run_entry

REPO = Path(__file__).resolve().parents[3]
SECRET = "sk-must-never-be-printed"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_entry("riskwatch_scheduler", *args, **env)


def test_validate_config_accepts_the_shipped_files_and_names_every_file_read() -> None:
    result = _run("llm-scheduler", "--validate-config")
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
    for name in ("kafka.yaml", "taskgen.yaml", "scheduler.yaml", "api_keys.yaml", "prompts.yaml"):
        assert name in result.stdout
    assert _run("task-generator", "--validate-config").returncode == 0


def test_a_bad_key_file_in_the_config_dir_exits_2_naming_file_field_and_reason(tmp_path: Path) -> None:
    shutil.copy(REPO / "config" / "kafka.yaml", tmp_path / "kafka.yaml")
    (tmp_path / "api_keys.yaml").write_text(
        "keys:\n"
        '  - {id: k1, api_key: "${RW_UNSET_FOR_TEST}", qps_limit: 1, rpm_limit: 60}\n'
        f"  - {{id: k2, api_key: {SECRET}, qps_limit: 0, rpm_limit: 60}}\n"
    )
    result = _run("llm-scheduler", "--validate-config", "--config-dir", str(tmp_path))
    assert result.returncode == 2, result.stdout
    assert str(tmp_path / "api_keys.yaml") in result.stderr
    assert "keys[0].api_key (line 2): key 'k1': environment variable RW_UNSET_FOR_TEST is not set" in result.stderr
    assert "keys[1].qps_limit (line 3): Input should be greater than 0" in result.stderr
    assert SECRET not in result.stderr + result.stdout
    # The task generator does not read the key file.
    assert _run("task-generator", "--validate-config", "--config-dir", str(tmp_path)).returncode == 0


def test_a_missing_or_unknown_stage_is_a_usage_error() -> None:
    for args in ((), ("--validate-config",), ("summarizer",)):
        result = _run(*args)
        assert result.returncode == 2, args
        assert "task-generator|llm-scheduler" in result.stderr
