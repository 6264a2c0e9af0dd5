"""The API key file: defaults, `${VAR}` references, and errors naming file, field and reason, never a secret."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from riskwatch.errors import ConfigError
from riskwatch_scheduler.keys_config import ApiKeysConfigError, SelectionStrategyName, load_api_keys

REPO_CONFIG = Path(__file__).resolve().parents[3] / "config" / "api_keys.yaml"
SECRET = "sk-live-DO-NOT-LEAK-4f2a9c"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "api_keys.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(path: Path, environ: dict[str, str] | None = None) -> ApiKeysConfigError:
    with pytest.raises(ApiKeysConfigError) as caught:
        load_api_keys(path, environ=environ or {})
    return caught.value


def test_the_shipped_file_points_ten_keys_at_the_simulator() -> None:
    config = load_api_keys(REPO_CONFIG, environ={})
    assert [k.id for k in config.keys] == [f"key-{i:03d}" for i in range(1, 11)]
    assert config.default_base_url == "http://127.0.0.1:8400/v1"
    assert config.default_model == "riskwatch-sim-vl"
    assert config.selection_strategy is SelectionStrategyName.LEAST_LOADED
    first = config.keys[0]
    assert first.api_key.get_secret_value() == "sim-key-001"
    assert (first.qps_limit, first.rpm_limit, first.priority, first.enabled) == (10, 600, 1, True)
    assert config.base_url_for(first) == "http://127.0.0.1:8400/v1"
    assert config.model_for(first) == "riskwatch-sim-vl"
    assert config.cooling.min_cooldown <= config.cooling.max_cooldown


def test_environment_references_are_resolved() -> None:
    environ = {"RW_SIM_KEY_003": SECRET, "RW_LLM_BASE_URL": "http://llmsim:8400/v1"}
    config = load_api_keys(REPO_CONFIG, environ=environ)
    assert config.keys[2].api_key.get_secret_value() == SECRET
    assert config.keys[3].api_key.get_secret_value() == "sim-key-004"
    assert config.default_base_url == "http://llmsim:8400/v1"
    # an empty variable falls back to the default, as in a shell
    assert load_api_keys(REPO_CONFIG, environ={"RW_SIM_KEY_001": ""}).keys[0].api_key.get_secret_value() == (
        "sim-key-001"
    )


def test_per_key_endpoint_and_model_override_the_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        selection_strategy: weighted
        keys:
          - {id: qwen, api_key: "${DASHSCOPE_API_KEY}", qps_limit: 2, rpm_limit: 120, priority: 3,
             base_url: "https://dashscope-intl.aliyuncs.com/compatible-mode/v1", model: qwen-vl-max}
          - {id: sim, api_key: literal-key, qps_limit: 0.5, rpm_limit: 30, enabled: false}
        """,
    )
    config = load_api_keys(path, environ={"DASHSCOPE_API_KEY": SECRET})
    qwen, sim = config.keys
    assert config.base_url_for(qwen).startswith("https://dashscope-intl")
    assert config.model_for(qwen) == "qwen-vl-max"
    assert config.model_for(sim) == config.default_model
    assert sim.api_key.get_secret_value() == "literal-key"
    assert not sim.enabled
    assert config.selection_strategy is SelectionStrategyName.WEIGHTED


def test_a_missing_variable_names_the_key_and_the_variable(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        keys:
          - {id: first, api_key: "abc", qps_limit: 1, rpm_limit: 60}
          - {id: openai-main, api_key: "${OPENAI_API_KEY}", qps_limit: 1, rpm_limit: 60}
        """,
    )
    error = load_error(path)
    message = str(error)
    assert str(path) in message
    assert "keys[1].api_key" in message
    assert "openai-main" in message and "OPENAI_API_KEY" in message
    assert isinstance(error, ConfigError)


def test_a_bad_value_names_file_field_line_and_reason(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        keys:
          - {{id: a, api_key: {SECRET}, qps_limit: 1, rpm_limit: 60}}
          - {{id: b, api_key: {SECRET}x, qps_limit: 1, rpm_limit: 60}}
          - id: c
            api_key: {SECRET}y
            qps_limit: 0
            rpm_limit: 60
        """,
    )
    error = load_error(path)
    (issue,) = error.issues
    assert issue.field == "keys[2].qps_limit"
    assert issue.line == 7
    assert "greater than 0" in issue.reason
    assert f"{path}: invalid API key configuration" in str(error)
    assert "keys[2].qps_limit (line 7): Input should be greater than 0" in str(error)
    assert SECRET not in str(error)


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (
            "keys:\n  - {id: a, api_key: K, qps_limit: 1, rpm_limit: 60}\n"
            "  - {id: a, api_key: K, qps_limit: 1, rpm_limit: 60}\n",
            "keys",
            "duplicate key id 'a' (keys[0] and keys[1])",
        ),
        (
            "cooling: {min_cooldown: 10, max_cooldown: 5}\n"
            "keys:\n  - {id: a, api_key: K, qps_limit: 1, rpm_limit: 60}\n",
            "cooling",
            "min_cooldown (10.0) must not exceed max_cooldown (5.0)",
        ),
        (
            "selection_strategy: fastest\nkeys:\n  - {id: a, api_key: K, qps_limit: 1, rpm_limit: 60}\n",
            "selection_strategy",
            "Input should be 'least_loaded', 'round_robin' or 'weighted'",
        ),
        ("keys:\n  - {id: a, api_key: K, qps_limit: 1, rpm_limit: 60, qps: 3}\n", "keys[0].qps", "Extra inputs"),
        ("keys:\n  - {id: a, api_key: K, qps_limit: 1}\n", "keys[0].rpm_limit", "Field required"),
        (
            "keys:\n  - {id: a, api_key: K, qps_limit: 1, rpm_limit: 60, priority: 0}\n",
            "keys[0].priority",
            "greater than or equal to 1",
        ),
        ("keys:\n  - {id: a, api_key: '', qps_limit: 1, rpm_limit: 60}\n", "keys[0].api_key", "must not be empty"),
        ("keys:\n  - {id: 'a b', api_key: K, qps_limit: 1, rpm_limit: 60}\n", "keys[0].id", "should match"),
        ("keys: []\n", "keys", "at least 1 item"),
        (
            "request_timeout_s: -1\nkeys:\n  - {id: a, api_key: K, qps_limit: 1, rpm_limit: 60}\n",
            "request_timeout_s",
            "greater than 0",
        ),
    ],
)
def test_each_kind_of_mistake_is_reported_by_field(tmp_path: Path, body: str, field: str, reason: str) -> None:
    error = load_error(write(tmp_path, body))
    assert any(issue.field == field and reason in issue.reason for issue in error.issues), str(error)


def test_secrets_never_appear_in_errors_even_when_a_whole_entry_is_wrong(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        keys:
          - {{id: a, api_key: {SECRET}, qps_limit: 1, rpm_limit: 60}}
          - {{id: a, api_key: {SECRET}, qps_limit: 1, rpm_limit: 60}}
          - [{SECRET}]
        """,
    )
    error = load_error(path)
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    assert error.__cause__ is None and error.__suppress_context__


def test_a_yaml_syntax_error_gives_the_line_but_not_the_lines_text(tmp_path: Path) -> None:
    path = write(tmp_path, f"keys:\n  - {{id: a, api_key: {SECRET}, qps_limit: 1, rpm_limit: 60\n  - oops: [\n")
    error = load_error(path)
    assert str(path) in str(error) and "YAML syntax" in str(error)
    assert error.issues[0].line is not None
    assert SECRET not in str(error)


def test_a_missing_or_empty_file_is_named(tmp_path: Path) -> None:
    assert "cannot read" in str(load_error(tmp_path / "absent.yaml"))
    assert "empty" in str(load_error(write(tmp_path, "# nothing\n")))


def test_repr_and_dump_hide_the_secrets() -> None:
    config = load_api_keys(REPO_CONFIG, environ={"RW_SIM_KEY_001": SECRET})
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    assert SECRET not in config.model_dump_json()
