"""Settings: YAML layered under the environment; every failure names the file or variable, the field and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from riskwatch.config import CommonSettings, load_settings
from riskwatch.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"


def test_repository_defaults_load() -> None:
    settings = load_settings(CommonSettings, REPO_CONFIG)
    assert settings.kafka.topics.detection_results.name == "detection-results"
    assert settings.kafka.topics.detection_results.partitions == 16
    assert not settings.enable_kafka_streaming


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kafka.yaml").write_text("scheduler:\n  max_concurrent_tasks: 10\n")
    monkeypatch.setenv("ALGO_KAFKA_BOOTSTRAP_SERVERS", "broker-a:9092")
    monkeypatch.setenv("ALGO_ENABLE_KAFKA_STREAMING", "true")
    monkeypatch.setenv("ALGO_KAFKA__SCHEDULER__MAX_CONCURRENT_TASKS", "77")
    settings = load_settings(CommonSettings, tmp_path)
    assert settings.bootstrap_servers == "broker-a:9092"
    assert settings.enable_kafka_streaming
    assert settings.kafka.scheduler.max_concurrent_tasks == 77


def test_invalid_field_names_file_field_and_reason(tmp_path: Path) -> None:
    (tmp_path / "kafka.yaml").write_text("topics:\n  assessment_tasks:\n    name: t\n    partitions: 0\n")
    with pytest.raises(ConfigError) as err:
        load_settings(CommonSettings, tmp_path)
    message = str(err.value)
    assert str(tmp_path / "kafka.yaml") in message
    assert "topics.assessment_tasks.partitions" in message
    assert "greater than or equal to 1" in message


def test_unknown_field_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "kafka.yaml").write_text("bootstrap_server: x\n")
    with pytest.raises(ConfigError, match=r"kafka.yaml: bootstrap_server: Extra inputs are not permitted"):
        load_settings(CommonSettings, tmp_path)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "kafka.yaml").write_text("topics:\n  - a\n b: [\n")
    with pytest.raises(ConfigError, match=r"kafka.yaml line \d+: not valid YAML"):
        load_settings(CommonSettings, tmp_path)


def test_bad_environment_value_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALGO_METRICS_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="environment ALGO_METRICS_PORT"):
        load_settings(CommonSettings, tmp_path)
