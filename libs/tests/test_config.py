"""Settings: YAML layered under the environment; every failure names the file or variable, the field and why."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import Field

from riskwatch.config import CommonSettings, ConfigFile, FrozenModel, Renamed, load_all, load_settings
from riskwatch.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"


def test_repository_defaults_load() -> None:
    settings = load_settings(CommonSettings, REPO_CONFIG)
    assert settings.kafka.topics.detection_results.name == "detection-results"
    assert settings.kafka.topics.detection_results.partitions == 16
    assert not settings.enable_kafka_streaming


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # (kafka.yaml's `scheduler:` tuning moved to scheduler.yaml: services/scheduler/tests/test_config.py)
    (tmp_path / "kafka.yaml").write_text("topics:\n  detection_results:\n    name: d\n    partitions: 10\n")
    monkeypatch.setenv("ALGO_KAFKA_BOOTSTRAP_SERVERS", "broker-a:9092")
    monkeypatch.setenv("ALGO_ENABLE_KAFKA_STREAMING", "true")
    monkeypatch.setenv("ALGO_KAFKA__TOPICS__DETECTION_RESULTS__PARTITIONS", "77")
    settings = load_settings(CommonSettings, tmp_path)
    assert settings.bootstrap_servers == "broker-a:9092"
    assert settings.enable_kafka_streaming
    assert settings.kafka.topics.detection_results.partitions == 77
    assert settings.kafka.topics.detection_results.name == "d"


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


class _Section(FrozenModel):
    max_records_in_flight: int = Field(default=5, ge=1)


class _Service(CommonSettings):
    yaml_sections: ClassVar[dict[str, str]] = {**CommonSettings.yaml_sections, "stage": "stage.yaml"}
    renamed: ClassVar[tuple[Renamed, ...]] = (Renamed("stage.max_unpersisted", "stage.max_records_in_flight"),)

    stage: _Section = _Section()
    extra_file: ConfigFile = Path("extra.yaml")


def test_an_earlier_name_in_yaml_still_works_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "stage.yaml").write_text("max_unpersisted: 9\n")
    with caplog.at_level(logging.WARNING):
        settings = load_settings(_Service, tmp_path)
    assert settings.stage.max_records_in_flight == 9
    assert "max_unpersisted in stage.yaml is deprecated: set max_records_in_flight in stage.yaml" in caplog.text


def test_an_earlier_name_in_the_environment_still_works_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ALGO_STAGE__MAX_UNPERSISTED", "11")
    with caplog.at_level(logging.WARNING):
        settings = load_settings(_Service, tmp_path)
    assert settings.stage.max_records_in_flight == 11
    assert "ALGO_STAGE__MAX_UNPERSISTED is deprecated: set ALGO_STAGE__MAX_RECORDS_IN_FLIGHT" in caplog.text


def test_the_new_name_wins_over_the_earlier_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "stage.yaml").write_text("max_unpersisted: 9\nmax_records_in_flight: 3\n")
    with caplog.at_level(logging.WARNING):
        assert load_settings(_Service, tmp_path).stage.max_records_in_flight == 3
    assert "deprecated and ignored" in caplog.text


def test_an_invalid_value_under_an_earlier_name_is_still_an_error(tmp_path: Path) -> None:
    (tmp_path / "stage.yaml").write_text("max_unpersisted: 0\n")
    with pytest.raises(ConfigError, match=r"stage.yaml: max_records_in_flight: Input should be greater than"):
        load_settings(_Service, tmp_path)


def test_a_relative_file_is_relative_to_the_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(_Service, tmp_path).extra_file == tmp_path / "extra.yaml"
    monkeypatch.setenv("ALGO_EXTRA_FILE", "sub/keys.yaml")
    assert load_settings(_Service, tmp_path).extra_file == tmp_path / "sub" / "keys.yaml"
    monkeypatch.setenv("ALGO_EXTRA_FILE", str(tmp_path / "elsewhere.yaml"))
    assert load_settings(_Service, "config").extra_file == tmp_path / "elsewhere.yaml"


def test_load_all_reads_each_service_once_and_reports_every_problem(tmp_path: Path) -> None:
    book = load_all(tmp_path, CommonSettings, _Service)
    assert book[_Service].stage.max_records_in_flight == 5
    assert book[CommonSettings].config_dir == tmp_path
    with pytest.raises(KeyError, match="_Service was not loaded"):
        load_all(tmp_path, CommonSettings)[_Service]
    (tmp_path / "kafka.yaml").write_text("bootstrap_server: x\n")
    (tmp_path / "stage.yaml").write_text("max_records_in_flight: 0\n")
    with pytest.raises(ConfigError) as err:
        load_all(tmp_path, CommonSettings, _Service)
    message = str(err.value)
    assert message.count("kafka.yaml: bootstrap_server: Extra inputs are not permitted") == 1
