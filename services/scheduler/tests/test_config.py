"""Scheduler settings: scheduler.yaml's tuning (and its old place in kafka.yaml), files beside --config-dir."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from riskwatch.config import CommonSettings, load_settings
from riskwatch.errors import ConfigError
from riskwatch_scheduler.config import LlmSchedulerSettings, SchedulerSettings

REPO_CONFIG = Path(__file__).resolve().parents[3] / "config"


def test_the_shipped_files_load_without_deprecation_warnings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        settings = load_settings(LlmSchedulerSettings, REPO_CONFIG)
    assert settings.scheduler.max_records_in_flight == 200
    assert settings.api_keys_file == REPO_CONFIG / "api_keys.yaml"
    assert "deprecated" not in caplog.text


def test_kafka_yaml_scheduler_section_is_still_read_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "kafka.yaml").write_text("scheduler:\n  max_concurrent_tasks: 10\n  task_deadline_s: 12\n")
    with caplog.at_level(logging.WARNING):
        settings = load_settings(SchedulerSettings, tmp_path)
    assert (settings.scheduler.max_records_in_flight, settings.scheduler.task_deadline_s) == (10, 12)
    assert (
        "scheduler.max_concurrent_tasks in kafka.yaml is deprecated: set max_records_in_flight in scheduler.yaml"
    ) in caplog.text
    # The earlier variable still overrides the file, as it did.
    monkeypatch.setenv("ALGO_KAFKA__SCHEDULER__MAX_CONCURRENT_TASKS", "77")
    (tmp_path / "kafka.yaml").write_text("bootstrap_servers: [b:9092]\n")
    with caplog.at_level(logging.WARNING):
        settings = load_settings(SchedulerSettings, tmp_path)
    assert settings.scheduler.max_records_in_flight == 77
    assert "ALGO_KAFKA__SCHEDULER__MAX_CONCURRENT_TASKS is deprecated" in caplog.text


def test_other_services_ignore_the_old_scheduler_section(tmp_path: Path) -> None:
    (tmp_path / "kafka.yaml").write_text("scheduler:\n  max_concurrent_tasks: 10\n")
    assert load_settings(CommonSettings, tmp_path).kafka.bootstrap_servers == ["127.0.0.1:9092"]


def test_the_llm_scheduler_validates_its_key_file_and_prompts_at_load(tmp_path: Path) -> None:
    (tmp_path / "api_keys.yaml").write_text(
        "keys:\n  - id: k1\n    api_key: ${RW_TEST_UNSET_KEY}\n    qps_limit: 0\n    rpm_limit: 60\n"
    )
    # The task generator reads neither file.
    assert load_settings(SchedulerSettings, tmp_path).taskgen.max_records_in_flight == 2000
    with pytest.raises(ConfigError) as err:
        load_settings(LlmSchedulerSettings, tmp_path)
    message = str(err.value)
    assert str(tmp_path / "api_keys.yaml") in message
    assert "keys[0].api_key (line 3): key 'k1': environment variable RW_TEST_UNSET_KEY is not set" in message
    assert "keys[0].qps_limit (line 4): Input should be greater than 0" in message
    (tmp_path / "api_keys.yaml").write_text(
        "keys:\n  - {id: k1, api_key: literal-secret, qps_limit: 1, rpm_limit: 60}\n"
    )
    (tmp_path / "prompts.yaml").write_text("defualt: look closely\n")
    with pytest.raises(ConfigError, match=r"prompts.yaml: defualt: Extra inputs are not permitted") as err:
        load_settings(LlmSchedulerSettings, tmp_path)
    assert "literal-secret" not in str(err.value)
