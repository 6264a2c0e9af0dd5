"""`python -m riskwatch_aggregator --validate-config`: the shipped files, a bad file, and the earlier field names."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.entry import run_entry

REPO = Path(__file__).resolve().parents[3]


def _validate(config_dir: Path) -> subprocess.CompletedProcess[str]:
    return run_entry("riskwatch_aggregator", "--validate-config", "--config-dir", str(config_dir))


def test_the_shipped_files_are_ok() -> None:
    result = _validate(REPO / "config")
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
    assert "deprecated" not in result.stderr


def test_earlier_names_still_load_with_a_warning_naming_the_new_place(tmp_path: Path) -> None:
    (tmp_path / "aggregator.yaml").write_text("max_unpersisted: 50\ndrain_timeout_s: 3\n")
    result = _validate(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "max_unpersisted in aggregator.yaml is deprecated: set max_records_in_flight in aggregator.yaml" in (
        result.stderr
    )
    assert "drain_timeout_s in aggregator.yaml is deprecated: set ALGO_SHUTDOWN_GRACE_S" in result.stderr


def test_a_bad_value_exits_2_naming_file_field_and_reason(tmp_path: Path) -> None:
    (tmp_path / "aggregator.yaml").write_text("max_records_in_flight: 0\n")
    result = _validate(tmp_path)
    assert result.returncode == 2
    assert f"{tmp_path / 'aggregator.yaml'}: max_records_in_flight: Input should be greater than or equal to 1" in (
        result.stderr
    )
