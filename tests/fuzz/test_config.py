"""Config loading: any file gives a valid configuration or a ConfigError naming the file, never the secret.

The services' settings modules are imported inside the tests: they are being edited by others.
"""

# Service modules are imported inside tests on purpose (see the docstring).
# ruff: noqa: PLC0415

from __future__ import annotations

import copy
import datetime
import importlib
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from riskwatch.config.loader import load_settings
from riskwatch.config.settings import CommonSettings
from riskwatch.errors import ConfigError
from tests.fuzz.support import fuzz_settings, mutate

# (module, class): imported inside the tests, since the services' settings are being edited by others.
SETTINGS = [
    ("riskwatch.config.settings", "CommonSettings"),
    ("riskwatch_detector.config", "DetectorSettings"),
    ("riskwatch_scheduler.config", "SchedulerSettings"),
    ("riskwatch_aggregator.config", "AggregatorSettings"),
    ("riskwatch_gateway.config", "GatewaySettings"),
]
REPO = Path(__file__).resolve().parents[2]


def settings_class(module: str, name: str) -> type[CommonSettings]:
    cls: type[CommonSettings] = getattr(importlib.import_module(module), name)
    return cls


def sections() -> list[tuple[str, str, str, str]]:
    return [
        (module, name, field, filename)
        for module, name in SETTINGS
        for field, filename in settings_class(module, name).yaml_sections.items()
    ]


yaml_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.dates()
    | st.datetimes()
    | st.binary(max_size=16)
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12) | st.integers(), children, max_size=4)
    ),
    max_leaves=15,
)
# Fragments that exercise the YAML constructors: tags, anchors, merge keys, odd numbers, dates, complex keys.
yaml_tokens = st.sampled_from(
    [
        "a: 1\n",
        "- x\n",
        "? [a, b]\n: c\n",
        "&a {x: 1}\n",
        "*a\n",
        "b: *a\n",
        "<<: *a\n",
        "!!binary aGk=\n",
        "!!python/object:os.system {}\n",
        "!custom 3\n",
        "x: !!int '12'\n",
        "x: !!float nan\n",
        "x: .inf\n",
        "x: 0o17\n",
        "x: 0x1F\n",
        "x: 1_000\n",
        "x: 2001-12-14t21:59:43.10-05:00\n",
        "x: 2001-12-14\n",
        "x: ~\n",
        "x: yes\n",
        "x: 'unterminated\n",
        '"\\xZZ"\n',
        "\t- tab\n",
        "---\n",
        "...\n",
        "%YAML 1.1\n---\n",
        "x: |\n  block\n",
        "x: >-\n  folded\n",
        "{",
        "}",
        "[",
        "]",
        ": ",
        "- ",
        "  ",
        "\n",
        "#c\n",
        "\x00",
        "\ufeff",
    ]
)
yaml_texts = st.lists(yaml_tokens | st.text(max_size=10), max_size=12).map("".join)


def leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in leaf_paths(v, (*prefix, k))] or [prefix]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in leaf_paths(v, (*prefix, i))] or [prefix]
    return [prefix]


@st.composite
def wrong_types(draw: st.DrawFn, defaults: dict[str, Any]) -> Any:
    """The section's defaults with some fields (at any depth) replaced by any value, or removed."""
    data = copy.deepcopy(defaults)
    paths = [p for p in leaf_paths(data) if p]
    for path in draw(st.lists(st.sampled_from(paths), max_size=4)) if paths else []:
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.integers(0, 4)) == 0 and isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(yaml_values | st.sampled_from([-1, 0, 10**30, math.inf, "", "x" * 300]))
    if draw(st.booleans()):
        data[draw(st.text(max_size=10))] = draw(yaml_values)
    return data


def section_defaults(cls: type[CommonSettings], field: str) -> dict[str, Any]:
    value = getattr(cls(), field)
    dumped: dict[str, Any] = value.model_dump(mode="json")
    return dumped


def check_load(cls: type[CommonSettings], directory: Path, path: Path) -> None:
    try:
        load_settings(cls, directory)
    except ConfigError as exc:
        message = str(exc)
        assert str(path) in message, f"the error does not name {path}: {message}"


def _dump(value: Any) -> str:
    return yaml.safe_dump(value, allow_unicode=True)


@pytest.mark.parametrize(("module", "name", "field", "filename"), sections(), ids=lambda v: str(v).split(".")[-1])
def test_any_yaml_document_loads_or_is_a_config_error_naming_the_file(
    tmp_path: Path, module: str, name: str, field: str, filename: str
) -> None:
    cls = settings_class(module, name)
    path = tmp_path / filename
    defaults = section_defaults(cls, field)

    @fuzz_settings(examples=40)
    @given(document=yaml_values.map(_dump) | wrong_types(defaults).map(_dump) | yaml_texts)
    def check(document: str) -> None:
        path.write_text(document, encoding="utf-8")
        check_load(cls, tmp_path, path)

    check()


@pytest.mark.parametrize(("module", "name"), SETTINGS[1:2] + SETTINGS[4:5], ids=lambda v: str(v).split(".")[-1])
def test_corrupted_shipped_files_load_or_are_config_errors_naming_the_file(
    tmp_path: Path, module: str, name: str
) -> None:
    cls = settings_class(module, name)

    @fuzz_settings(examples=40)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        for filename in cls.yaml_sections.values():
            shipped = REPO / "config" / filename
            if shipped.exists():
                (tmp_path / filename).write_bytes(mutate(shipped.read_bytes(), data.draw))
        try:
            load_settings(cls, tmp_path)
        except ConfigError as exc:
            assert any(str(tmp_path / f) in str(exc) for f in cls.yaml_sections.values()), str(exc)

    check()


# PyYAML raises ValueError for an impossible date and RecursionError for deep nesting; both must become
# configuration errors that name the file (found by this suite).
YAML_BUG_REPRODUCERS = ["x: 2001-02-30\n", "[" * 5000 + "]" * 5000 + "\n"]


@pytest.mark.parametrize("document", YAML_BUG_REPRODUCERS, ids=["impossible-date", "deep-nesting"])
def test_load_settings_values_yaml_cannot_build_name_the_file(tmp_path: Path, document: str) -> None:
    path = tmp_path / "kafka.yaml"
    path.write_text(document, encoding="utf-8")
    with pytest.raises(ConfigError, match=str(path)):
        load_settings(CommonSettings, tmp_path)


def test_a_file_that_is_not_utf8_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "kafka.yaml"
    path.write_bytes(b"topics: \xff\xfe\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_settings(CommonSettings, tmp_path)


# --- config/api_keys.yaml ---------------------------------------------------------------------------

SECRET = "sk-fuzz-S3CR3T-7f3a9c0e5b1d"
ENVIRON = {"RW_FUZZ_KEY": SECRET, "RW_FUZZ_EMPTY": ""}


def _key(draw: st.DrawFn, index: int) -> dict[str, Any]:
    key: dict[str, Any] = {
        "id": f"key-{index}",
        "api_key": draw(st.sampled_from([SECRET, f" {SECRET} ", "${RW_FUZZ_KEY}", "${RW_FUZZ_UNSET:-" + SECRET + "}"])),
        "qps_limit": 10,
        "rpm_limit": 600,
    }
    for name in draw(
        st.lists(
            st.sampled_from(
                ["id", "api_key", "priority", "qps_limit", "rpm_limit", "enabled", "base_url", "model", "extra"]
            ),
            max_size=3,
            unique=True,
        )
    ):
        if name == "api_key":
            # The secret in the wrong shape: in a list, as a mapping key or value, as a number-like string.
            key[name] = draw(
                st.sampled_from(
                    [
                        [SECRET],
                        {SECRET: 1},
                        {"k": SECRET},
                        f"{SECRET}: x",
                        None,
                        42,
                        "",
                        "${RW_FUZZ_UNSET}",
                        "${RW_FUZZ_EMPTY}",
                        "${",
                    ]
                )
            )
        elif draw(st.booleans()):
            key.pop(name, None)
        else:
            key[name] = draw(yaml_values | st.sampled_from([-1, 0, 10**30, math.inf, math.nan, "", "${RW_FUZZ_UNSET}"]))
    return key


@st.composite
def api_key_files(draw: st.DrawFn) -> str:
    data: dict[str, Any] = {"keys": [_key(draw, i) for i in range(draw(st.integers(0, 3)))]}
    if draw(st.booleans()) and data["keys"]:
        data["keys"].append(copy.deepcopy(data["keys"][0]))  # a duplicate id
    for name in draw(
        st.lists(
            st.sampled_from(
                [
                    "selection_strategy",
                    "cooling",
                    "default_base_url",
                    "default_model",
                    "request_timeout_s",
                    "keys",
                    "other",
                ]
            ),
            max_size=2,
            unique=True,
        )
    ):
        data[name] = draw(yaml_values | st.sampled_from([{"min_cooldown": 5, "max_cooldown": 1}, "weighted", None]))
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    how = draw(st.sampled_from(["as-is", "as-is", "mutated", "truncated", "tokens"]))
    if how == "mutated":
        text = mutate(text.encode(), draw).decode("utf-8", errors="replace")
    elif how == "truncated":
        text = text[: draw(st.integers(0, len(text)))]
    elif how == "tokens":
        text += draw(yaml_texts)
    return text


def check_api_keys(path: Path) -> None:
    from riskwatch_scheduler.keys_config import ApiKeysConfigError, load_api_keys

    try:
        config = load_api_keys(path, environ=ENVIRON)
    except ApiKeysConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: "), message
        for text in (message, repr(exc), *(str(issue) for issue in exc.issues)):
            assert "S3CR3T" not in text, f"the secret leaked: {text}"
    else:
        assert "S3CR3T" not in repr(config) and "S3CR3T" not in str(config.model_dump())


@fuzz_settings(examples=300)
@given(text=api_key_files())
@example(text="keys:\n  - id: a\n    api_key: " + SECRET + "\n    qps_limit: x\n    rpm_limit: 1\n")
@example(text="keys:\n  - {id: a, api_key: '" + SECRET + "\n")
@example(text="keys:\n  - id: a\n    api_key: " + SECRET + ": 1\n")
@example(text="keys:\n  - id: a\n\tapi_key: " + SECRET + "\n")
@example(text="keys: [{id: a, api_key: [" + SECRET + "], qps_limit: 1, rpm_limit: 1}]\n")
@example(text="keys: [{id: a, api_key: {" + SECRET + ": 1}, qps_limit: 1, rpm_limit: 1}]\n")
def test_api_keys_file_loads_or_is_an_api_keys_error_without_the_secret(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.mktemp("keys") / "api_keys.yaml"
    path.write_text(text, encoding="utf-8")
    check_api_keys(path)


@pytest.mark.parametrize("document", YAML_BUG_REPRODUCERS, ids=["impossible-date", "deep-nesting"])
def test_load_api_keys_values_yaml_cannot_build_name_the_file(tmp_path: Path, document: str) -> None:
    path = tmp_path / "api_keys.yaml"
    path.write_text(document.replace("x:", "api_key:"), encoding="utf-8")
    check_api_keys(path)


def test_the_yaml_date_bug_is_what_we_think_it_is() -> None:
    """Guards the reproducers above: PyYAML builds a date for this scalar and the date is impossible."""
    with pytest.raises(ValueError, match="day is out of range"):
        datetime.date(2001, 2, 30)
    with pytest.raises(ValueError):
        yaml.safe_load(YAML_BUG_REPRODUCERS[0])


def test_an_api_keys_file_that_is_not_utf8_is_an_api_keys_error(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.yaml"
    path.write_bytes(b"keys: \xd5\n")
    check_api_keys(path)
