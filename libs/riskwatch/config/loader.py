"""Load settings from config/*.yaml plus the environment, turning every failure into one clear ConfigError."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from riskwatch.config.settings import CommonSettings, apply_renames
from riskwatch.errors import ConfigError

S = TypeVar("S", bound=CommonSettings)
log = logging.getLogger(__name__)


def load_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a YAML file ({} when the file is absent or empty)."""
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from exc
    except (ValueError, RecursionError) as exc:
        # PyYAML raises these for values it cannot build (e.g. the date 2001-02-30) and for absurd nesting.
        raise ConfigError(f"{path}: not valid YAML ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def format_errors(error: ValidationError, source: str, prefix: tuple[str | int, ...] = ()) -> str:
    """One line per problem: `source: field.path: reason`."""
    lines = []
    for item in error.errors():
        loc = ".".join(_loc_part(p) for p in (*prefix, *item["loc"])).replace(".[", "[") or "(top level)"
        lines.append(f"{source}: {loc}: {item['msg']}")
    return "\n".join(lines)


def _loc_part(part: str | int) -> str:
    return f"[{part}]" if isinstance(part, int) else str(part)


def load_settings(settings_cls: type[S], config_dir: Path | str | None = None) -> S:
    """Validate each YAML section against its model (naming the file), apply the environment on top, then read the
    service's other files (`CommonSettings.load_files`)."""
    return _load(settings_cls, _directory(config_dir), _Reads())


class SettingsBook:
    """The settings of several services, loaded together by `load_all`; `book[DetectorSettings]` is typed."""

    def __init__(self, by_class: Mapping[type[CommonSettings], CommonSettings]) -> None:
        self._by_class = dict(by_class)

    def __getitem__(self, settings_cls: type[S]) -> S:
        settings = self._by_class.get(settings_cls)
        if not isinstance(settings, settings_cls):
            raise KeyError(f"{settings_cls.__name__} was not loaded (pass it to load_all)")
        return settings


def load_all(config_dir: Path | str | None, *settings_classes: type[CommonSettings]) -> SettingsBook:
    """Every given service's settings from one config dir, each file read once (embedded mode runs them all in one
    process); one ConfigError lists the problems of all of them."""
    directory, reads = _directory(config_dir), _Reads()
    loaded: dict[type[CommonSettings], CommonSettings] = {}
    problems: list[str] = []
    for settings_cls in settings_classes:
        try:
            loaded[settings_cls] = _load(settings_cls, directory, reads)
        except ConfigError as exc:
            problems.extend(line for line in str(exc).splitlines() if line not in problems)
    if problems:
        raise ConfigError("\n".join(problems))
    return SettingsBook(loaded)


@dataclass
class _Reads:
    """What one load has read so far: each file is parsed once, each deprecation said once."""

    files: dict[Path, dict[str, Any]] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)

    def yaml(self, path: Path) -> dict[str, Any]:
        if path not in self.files:
            self.files[path] = load_yaml(path)
        return copy.deepcopy(self.files[path])

    def warn(self, message: str) -> None:
        if message not in self.warned:
            self.warned.add(message)
            log.warning("%s", message)


def _directory(config_dir: Path | str | None) -> Path:
    return Path(config_dir or os.environ.get("ALGO_CONFIG_DIR", "config"))


def _load(settings_cls: type[S], directory: Path, reads: _Reads) -> S:
    sections: dict[str, Any] = {"config_dir": directory}
    for field_name, filename in settings_cls.yaml_sections.items():
        sections[field_name] = reads.yaml(directory / filename)
    for message in apply_renames(settings_cls, sections):
        reads.warn(message)
    for field_name, filename in settings_cls.yaml_sections.items():
        model = settings_cls.model_fields[field_name].annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            try:
                model.model_validate(sections[field_name])
            except ValidationError as exc:
                raise ConfigError(format_errors(exc, str(directory / filename))) from exc
    try:
        settings = settings_cls(**sections)
    except ValidationError as exc:
        # The files were valid on their own, so the environment (ALGO_*) or .env caused this.
        lines = []
        for item in exc.errors():
            env_name = "ALGO_" + "__".join(str(p) for p in item["loc"]).upper()
            lines.append(f"environment {env_name}: {item['msg']}")
        raise ConfigError("\n".join(lines)) from exc
    settings.load_files()
    return settings
