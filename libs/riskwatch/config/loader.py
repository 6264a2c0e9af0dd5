"""Load settings from config/*.yaml plus the environment, turning every failure into one clear ConfigError."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from riskwatch.config.settings import CommonSettings
from riskwatch.errors import ConfigError

S = TypeVar("S", bound=CommonSettings)


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
    """Validate each YAML section against its model (naming the file), then apply the environment on top."""
    directory = Path(config_dir or os.environ.get("ALGO_CONFIG_DIR", "config"))
    sections: dict[str, Any] = {"config_dir": directory}
    for field, filename in settings_cls.yaml_sections.items():
        path = directory / filename
        raw = load_yaml(path)
        model = settings_cls.model_fields[field].annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            try:
                model.model_validate(raw)
            except ValidationError as exc:
                raise ConfigError(format_errors(exc, str(path))) from exc
        sections[field] = raw
    try:
        return settings_cls(**sections)
    except ValidationError as exc:
        # The files were valid on their own, so the environment (ALGO_*) or .env caused this.
        lines = []
        for item in exc.errors():
            env_name = "ALGO_" + "__".join(str(p) for p in item["loc"]).upper()
            lines.append(f"environment {env_name}: {item['msg']}")
        raise ConfigError("\n".join(lines)) from exc
