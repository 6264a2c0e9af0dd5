"""The API key file (`config/api_keys.yaml`): validated, frozen models and a loader with clear errors."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from riskwatch.config.base import FrozenModel
from riskwatch.errors import ConfigError

# `${VAR}` or `${VAR:-default}` as the whole value (as in a shell, the default also replaces an empty value).
_ENV_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_ENVIRON_CONTEXT = "environ"


class SelectionStrategyName(StrEnum):
    """How the key pool picks among the keys that may be used right now."""

    LEAST_LOADED = "least_loaded"
    ROUND_ROBIN = "round_robin"
    WEIGHTED = "weighted"


def _environ(info: ValidationInfo) -> Mapping[str, str]:
    context = info.context
    if isinstance(context, Mapping):
        environ = context.get(_ENVIRON_CONTEXT)
        if isinstance(environ, Mapping):
            return environ
    return os.environ


def _resolve_env(value: object, info: ValidationInfo, owner: str) -> object:
    """Replace a whole-value `${VAR}` / `${VAR:-default}` reference by its value from the environment."""
    if not isinstance(value, str):
        return value
    match = _ENV_REFERENCE.fullmatch(value.strip())
    if match is None:
        return value
    name, default = match.group("name"), match.group("default")
    resolved = _environ(info).get(name)
    if resolved:
        return resolved
    if default is not None:
        return default
    # Raised as ValueError so pydantic reports it with the field path; the message names no secret.
    raise ValueError(f"{owner}: environment variable {name} is not set (or empty)")


class CoolingConfig(FrozenModel):
    """Bounds, in seconds, of the exponential backoff applied to a key after 429/5xx/timeouts."""

    min_cooldown: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    max_cooldown: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Self:
        if self.min_cooldown > self.max_cooldown:
            raise ValueError(f"min_cooldown ({self.min_cooldown}) must not exceed max_cooldown ({self.max_cooldown})")
        return self


class ApiKeyConfig(FrozenModel):
    """One API key and the limits its provider grants it."""

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    api_key: SecretStr
    priority: Annotated[int, Field(ge=1)] = 1
    qps_limit: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    rpm_limit: Annotated[int, Field(gt=0)]
    enabled: bool = True
    base_url: str | None = None
    model: str | None = None

    @field_validator("api_key", mode="before")
    @classmethod
    def _resolve_api_key(cls, value: object, info: ValidationInfo) -> object:
        resolved = _resolve_env(value, info, f"key {info.data.get('id', '?')!r}")
        if isinstance(resolved, str) and not resolved.strip():
            raise ValueError("must not be empty")
        return resolved

    @field_validator("base_url", "model", mode="before")
    @classmethod
    def _resolve_optional(cls, value: object, info: ValidationInfo) -> object:
        return _resolve_env(value, info, f"key {info.data.get('id', '?')!r}")


class ApiKeysConfig(FrozenModel):
    """The whole key file: the keys, how to pick among them, and how long failing keys rest."""

    keys: Annotated[tuple[ApiKeyConfig, ...], Field(min_length=1)]
    selection_strategy: SelectionStrategyName = SelectionStrategyName.LEAST_LOADED
    cooling: CoolingConfig = CoolingConfig()
    default_base_url: str = "http://127.0.0.1:8400/v1"
    default_model: str = "riskwatch-sim-vl"
    request_timeout_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 30.0

    @field_validator("default_base_url", "default_model", mode="before")
    @classmethod
    def _resolve_defaults(cls, value: object, info: ValidationInfo) -> object:
        return _resolve_env(value, info, str(info.field_name))

    @field_validator("keys")
    @classmethod
    def _unique_ids(cls, keys: tuple[ApiKeyConfig, ...]) -> tuple[ApiKeyConfig, ...]:
        first_index: dict[str, int] = {}
        for index, key in enumerate(keys):
            if key.id in first_index:
                first = first_index[key.id]
                raise ValueError(f"duplicate key id {key.id!r} (keys[{first}] and keys[{index}])")
            first_index[key.id] = index
        return keys

    def base_url_for(self, key: ApiKeyConfig) -> str:
        return key.base_url or self.default_base_url

    def model_for(self, key: ApiKeyConfig) -> str:
        return key.model or self.default_model

    @classmethod
    def from_mapping(cls, data: object, environ: Mapping[str, str] | None = None) -> ApiKeysConfig:
        """Validate already-parsed data; `environ` replaces `os.environ` for `${VAR}` references."""
        context = {_ENVIRON_CONTEXT: os.environ if environ is None else environ}
        return cls.model_validate(data, context=context)


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in the key file: where it is and what is wrong (never the offending value)."""

    field: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.field} (line {self.line})" if self.line is not None else self.field
        return f"{where}: {self.reason}"


class ApiKeysConfigError(ConfigError):
    """The key file cannot be used; the message names the file, each field path and the reason."""

    def __init__(self, path: Path, issues: Sequence[ConfigIssue]) -> None:
        self.path = path
        self.issues = tuple(issues)
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"{path}: invalid API key configuration:\n{lines}")


def field_path(loc: Sequence[int | str]) -> str:
    """`('keys', 2, 'qps_limit')` -> `keys[2].qps_limit`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


def _line_of(root: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """1-based line of the YAML node at `loc`, or of its nearest existing ancestor."""
    node = root
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            child = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def _reason(error: Mapping[str, Any]) -> str:
    message = str(error.get("msg", "invalid"))
    # pydantic prefixes messages raised from validators; the prefix says nothing to a user.
    return message.removeprefix("Value error, ")


def load_api_keys(path: str | Path, environ: Mapping[str, str] | None = None) -> ApiKeysConfig:
    """Read and validate the key file, or raise ApiKeysConfigError naming file, field and reason."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = f"cannot read: {exc.strerror or exc}"
        raise ApiKeysConfigError(path, [ConfigIssue("(file)", reason)]) from None
    except UnicodeDecodeError as exc:
        raise ApiKeysConfigError(path, [ConfigIssue("(file)", f"not UTF-8 text (byte {exc.start})")]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # Only the problem and position: the YAML library's snippet of the line could show a literal key.
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        line = mark.line + 1 if mark is not None else None
        raise ApiKeysConfigError(path, [ConfigIssue("(file)", f"YAML syntax: {problem}", line)]) from None
    except (ValueError, RecursionError) as exc:
        # Values PyYAML cannot build (the date 2001-02-30) or absurd nesting; the type only, never the text.
        raise ApiKeysConfigError(path, [ConfigIssue("(file)", f"YAML value error ({type(exc).__name__})")]) from None
    if data is None:
        raise ApiKeysConfigError(path, [ConfigIssue("(file)", "the file is empty")])
    try:
        return ApiKeysConfig.from_mapping(data, environ)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False, include_context=False)
        locs = [tuple(err["loc"]) for err in errors]
        issues = [
            ConfigIssue(field_path(err["loc"]), _reason(err), _line_of(root, err["loc"]))
            for err, loc in zip(errors, locs, strict=True)
            # a container's own complaint ("should have at least 1 item") is noise next to its items' errors
            if not any(len(other) > len(loc) and other[: len(loc)] == loc for other in locs)
        ]
        # `from None`: the pydantic error's own text includes input values, which may be secrets.
        raise ApiKeysConfigError(path, issues) from None
