"""Simulator configuration: keys, rate limits, latency and fault injection, plus runtime patches; and the settings of
`python -m riskwatch_llmsim` (its flags layered over --config)."""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import Field, SecretStr, ValidationError, model_validator

from riskwatch.config import FrozenModel
from riskwatch.errors import ConfigError

UNKNOWN_LABEL_PREFIX = "unknown-"
ANONYMOUS_LABEL = "anonymous"

Probability = float


class InvalidJsonMode(StrEnum):
    """How a reply with the invalid-JSON fault is spoiled."""

    PROSE = "prose"  # an answer in words, no JSON at all
    TRUNCATED = "truncated"  # the verdict JSON cut off half-way
    MISSING_FIELDS = "missing_fields"  # valid JSON lacking one required field
    BAD_VALUES = "bad_values"  # valid JSON with values outside the schema (opt-in)
    FENCED = "fenced"  # the verdict wrapped in a ```json fence, as chat models often do (opt-in)
    # The verdict after a <think> block that holds braces and a draft verdict, as reasoning VLMs (Qwen3-VL) answer
    # (opt-in); a careful client takes the verdict after the block.
    THINK = "think"
    PROSE_AROUND = "prose_around"  # the verdict between a sentence before and one after it (opt-in)


DEFAULT_INVALID_JSON_MODES = (
    InvalidJsonMode.PROSE,
    InvalidJsonMode.TRUNCATED,
    InvalidJsonMode.MISSING_FIELDS,
)


class KeyPolicy(FrozenModel):
    """Per-key overrides; a field left as None inherits the global setting."""

    qps: float | None = Field(default=None, gt=0)
    rpm: float | None = Field(default=None, gt=0)
    revoked: bool | None = None
    fault_5xx: Probability | None = Field(default=None, ge=0, le=1)
    fault_timeout: Probability | None = Field(default=None, ge=0, le=1)
    fault_invalid_json: Probability | None = Field(default=None, ge=0, le=1)
    latency_median_s: float | None = Field(default=None, ge=0)
    latency_sigma: float | None = Field(default=None, ge=0)


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """What actually applies to one key: the global settings with its overrides laid on top."""

    qps: float | None
    rpm: float | None
    revoked: bool
    fault_5xx: float
    fault_timeout: float
    fault_invalid_json: float
    latency_median_s: float
    latency_sigma: float


class SimulatorConfig(FrozenModel):
    """Everything the simulator does, validated once; change it at runtime with `apply_patch`."""

    # label -> bearer token; stats, logs and errors only ever show the label
    keys: dict[str, SecretStr] = Field(default_factory=dict)
    # reject tokens not in `keys` with 401 instead of serving them under an `unknown-…` label
    strict_keys: bool = False
    # default limits for every key; None = unlimited
    qps: float | None = Field(default=10.0, gt=0)
    rpm: float | None = Field(default=600.0, gt=0)
    # a request arriving this much early is still admitted (capped at half a token's refill time),
    # so network and event-loop jitter does not turn a client pacing exactly at the limit into 429s
    rate_limit_grace_s: float = Field(default=0.05, ge=0, le=1)
    latency_median_s: float = Field(default=1.0, ge=0)
    latency_sigma: float = Field(default=0.35, ge=0)
    latency_max_s: float = Field(default=30.0, gt=0)
    seed: int | None = None
    fault_5xx: Probability = Field(default=0.0, ge=0, le=1)
    fault_timeout: Probability = Field(default=0.0, ge=0, le=1)
    fault_invalid_json: Probability = Field(default=0.0, ge=0, le=1)
    invalid_json_modes: tuple[InvalidJsonMode, ...] = Field(default=DEFAULT_INVALID_JSON_MODES, min_length=1)
    server_error_statuses: tuple[int, ...] = Field(default=(500, 503), min_length=1)
    # how long a "timeout" request hangs; it ends sooner if the client hangs up or the server stops
    timeout_hang_s: float = Field(default=120.0, gt=0)
    # accepted model names; None accepts any model
    models: tuple[str, ...] | None = None
    per_key: dict[str, KeyPolicy] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        tokens: set[str] = set()
        for label, token in self.keys.items():
            secret = token.get_secret_value()
            if not label or not secret:
                raise ValueError("keys: labels and tokens must be non-empty")
            if label.startswith(UNKNOWN_LABEL_PREFIX) or label == ANONYMOUS_LABEL:
                raise ValueError(f"keys: label {label!r} is reserved")
            if secret in tokens:
                raise ValueError(f"keys: label {label!r} reuses another key's token")
            tokens.add(secret)
        for status in self.server_error_statuses:
            if not 500 <= status <= 599:
                raise ValueError(f"server_error_statuses: {status} is not a 5xx status")
        scopes: list[str | None] = [None, *self.per_key]
        for scope in scopes:
            policy = self.policy_for(scope)
            total = policy.fault_5xx + policy.fault_timeout + policy.fault_invalid_json
            if total > 1.0 + 1e-9:
                where = "global" if scope is None else f"per_key[{scope!r}]"
                raise ValueError(f"{where}: fault probabilities add up to {total:.3f} > 1")
        return self

    def policy_for(self, label: str | None) -> EffectivePolicy:
        """The policy in force for `label` (None: the global defaults)."""
        override = self.per_key.get(label) if label is not None else None
        if override is None:
            override = _NO_OVERRIDE
        return EffectivePolicy(
            qps=override.qps if override.qps is not None else self.qps,
            rpm=override.rpm if override.rpm is not None else self.rpm,
            revoked=bool(override.revoked),
            fault_5xx=_pick(override.fault_5xx, self.fault_5xx),
            fault_timeout=_pick(override.fault_timeout, self.fault_timeout),
            fault_invalid_json=_pick(override.fault_invalid_json, self.fault_invalid_json),
            latency_median_s=_pick(override.latency_median_s, self.latency_median_s),
            latency_sigma=_pick(override.latency_sigma, self.latency_sigma),
        )

    def public_view(self) -> dict[str, Any]:
        """The configuration as JSON-ready data, with key labels but never their tokens."""
        data = self.model_dump(mode="json", exclude={"keys"})
        data["keys"] = sorted(self.keys)
        return data


_NO_OVERRIDE = KeyPolicy()


def _pick(override: float | None, default: float) -> float:
    return override if override is not None else default


def label_for_unknown_token(token: str) -> str:
    """A stable, non-reversible label for a token the configuration does not name."""
    return UNKNOWN_LABEL_PREFIX + hashlib.sha256(token.encode()).hexdigest()[:8]


class ConfigPatchError(ValueError):
    """A runtime patch was malformed or would produce an invalid configuration."""


def apply_patch(config: SimulatorConfig, patch: Mapping[str, Any]) -> SimulatorConfig:
    """Return `config` with `patch` applied.

    Top-level fields are replaced. `per_key` is merged label by label and field by field, so
    `{"per_key": {"key-003": {"revoked": true}}}` leaves key-003's other overrides alone; a
    label mapped to null drops all of its overrides. `keys` is merged the same way (null removes
    a key).
    """
    if not isinstance(patch, Mapping):
        raise ConfigPatchError("the patch must be a JSON object")
    unknown = set(patch) - set(SimulatorConfig.model_fields)
    if unknown:
        raise ConfigPatchError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    merged: dict[str, Any] = {name: getattr(config, name) for name in SimulatorConfig.model_fields}
    for name, value in patch.items():
        if name == "per_key":
            merged["per_key"] = _merge_per_key(config.per_key, value)
        elif name == "keys":
            merged["keys"] = _merge_keys(config.keys, value)
        else:
            merged[name] = value
    try:
        return SimulatorConfig.model_validate(merged)
    except ValidationError as error:
        raise ConfigPatchError(_describe_validation_error(error)) from None


def _merge_per_key(current: Mapping[str, KeyPolicy], value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigPatchError("per_key must be an object of label -> overrides")
    merged: dict[str, Any] = {label: policy.model_dump() for label, policy in current.items()}
    for label, fields in value.items():
        if fields is None:
            merged.pop(label, None)
        elif isinstance(fields, Mapping):
            merged[label] = {**merged.get(label, {}), **fields}
        else:
            raise ConfigPatchError(f"per_key[{label!r}] must be an object or null")
    return merged


def _merge_keys(current: Mapping[str, SecretStr], value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigPatchError("keys must be an object of label -> token")
    merged: dict[str, Any] = dict(current)
    for label, token in value.items():
        if token is None:
            merged.pop(label, None)
        else:
            merged[label] = token
    return merged


def _describe_validation_error(error: ValidationError, source: Path | None = None, separator: str = "; ") -> str:
    # pydantic's own message echoes input values, which for `keys` would be tokens
    parts = []
    prefix = f"{source} or its flags: " if source is not None else ""
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "config"
        parts.append(f"{prefix}{where}: {item['msg']}")
    return separator.join(parts)


class SimulatorSettings(FrozenModel):
    """The process: where it listens, how it logs, and the simulator's configuration (no ALGO_* variables)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8400, ge=0, le=65535)
    config_file: Path | None = None
    simulator: SimulatorConfig = SimulatorConfig()
    log_level: str = "INFO"
    log_json: bool = False
    log_file: Path | None = None
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # How long open requests (a hanging "timeout" fault included) may take after SIGTERM.
    shutdown_grace_s: float = Field(default=5.0, ge=0, le=3600)

    def config_files(self) -> list[Path]:
        return [] if self.config_file is None else [self.config_file]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's flags; each overrides --config, and an unset flag keeps the file's (or the built-in) value."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8400, help="0 picks a free port (default 8400)")
    parser.add_argument("--config", type=Path, help="YAML or JSON file holding SimulatorConfig fields")
    parser.add_argument("--keys", help="label=token pairs, comma-separated: key-001=sim-key-001,key-002=...")
    parser.add_argument("--strict-keys", action="store_true", default=None, help="401 for unlisted tokens")
    parser.add_argument("--qps", type=float, help="default per-key requests per second (0 = unlimited)")
    parser.add_argument("--rpm", type=float, help="default per-key requests per minute (0 = unlimited)")
    parser.add_argument("--grace", type=float, dest="rate_limit_grace_s", help="rate-limit grace in seconds")
    parser.add_argument("--latency-median", type=float, dest="latency_median_s", help="seconds (default 1.0)")
    parser.add_argument("--latency-sigma", type=float, dest="latency_sigma", help="lognormal sigma (0.35)")
    parser.add_argument("--latency-max", type=float, dest="latency_max_s", help="latency cap in seconds (30)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--fault-5xx", type=float, dest="fault_5xx", help="probability of a 500/503")
    parser.add_argument("--fault-timeout", type=float, dest="fault_timeout", help="probability of a hang")
    parser.add_argument("--fault-invalid-json", type=float, dest="fault_invalid_json", help="probability")
    parser.add_argument(
        "--invalid-json-modes",
        help=f"comma-separated subset of {','.join(mode.value for mode in InvalidJsonMode)}",
    )
    parser.add_argument("--timeout-hang", type=float, dest="timeout_hang_s", help="hang length in seconds")
    parser.add_argument("--revoked", help="comma-separated key labels answering 401")
    parser.add_argument("--models", help="comma-separated accepted model names (default: any)")
    parser.add_argument("--log-level", default="INFO")


def settings_from_args(args: argparse.Namespace) -> SimulatorSettings:
    """The flags layered over the --config file; ConfigError (naming the file or flag, never a token) if invalid."""
    try:
        return SimulatorSettings(
            host=args.host,
            port=args.port,
            config_file=args.config,
            simulator=config_from_args(args),
            log_level=args.log_level,
        )
    except ValidationError as error:
        raise ConfigError(_describe_validation_error(error, args.config, "\n")) from None
    except OSError as error:
        raise ConfigError(f"{args.config}: cannot be read ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        # The problem and its line only: PyYAML's snippet of the line could show a token.
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{args.config}{where}: not valid YAML ({getattr(error, 'problem', None)})") from None
    except ValueError as error:
        raise ConfigError(str(error)) from None


_FLAG_FIELDS = (
    "strict_keys",
    "rate_limit_grace_s",
    "latency_median_s",
    "latency_sigma",
    "latency_max_s",
    "seed",
    "fault_5xx",
    "fault_timeout",
    "fault_invalid_json",
    "timeout_hang_s",
)


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Layer the flags over the --config file; raises ValueError/ValidationError if invalid."""
    data: dict[str, Any] = {}
    if args.config is not None:
        loaded = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of SimulatorConfig fields")
        data.update(loaded)
    for name in _FLAG_FIELDS:
        value = getattr(args, name)
        if value is not None:
            data[name] = value
    for name in ("qps", "rpm"):
        value = getattr(args, name)
        if value is not None:
            data[name] = value if value > 0 else None
    if args.keys:
        keys = dict(data.get("keys") or {})
        for pair in _split(args.keys):
            label, sep, token = pair.partition("=")
            if not sep:
                raise ValueError(f"--keys: expected label=token, got an entry without '=' (label {label!r})")
            keys[label.strip()] = token.strip()
        data["keys"] = keys
    if args.invalid_json_modes:
        data["invalid_json_modes"] = _split(args.invalid_json_modes)
    if args.models:
        data["models"] = _split(args.models)
    if args.revoked:
        per_key = dict(data.get("per_key") or {})
        for label in _split(args.revoked):
            per_key[label] = {**per_key.get(label, {}), "revoked": True}
        data["per_key"] = per_key
    return SimulatorConfig.model_validate(data)


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]
