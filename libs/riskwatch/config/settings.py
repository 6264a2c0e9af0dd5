"""Settings every service shares; each service subclasses CommonSettings with its own fields."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from riskwatch.config.base import FrozenModel
from riskwatch.config.kafka import KafkaConfig

log = logging.getLogger(__name__)


class RedisConfig(FrozenModel):
    # May hold a password (redis://:password@host:6379/0, as compose sets it): secret, so a dump never shows it.
    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    key_prefix: str = "riskwatch:"
    state_ttl_s: int = Field(default=24 * 3600, ge=1)
    alert_history_len: int = Field(default=1000, ge=10)

    @property
    def display_url(self) -> str:
        """The URL with its password (if any) replaced by ***, for logs and messages."""
        parts = urlsplit(self.url.get_secret_value())
        if parts.password is None:
            return parts.geturl()
        netloc = parts.netloc.rpartition("@")[2]
        user = f"{parts.username}:" if parts.username else ":"
        return urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))


@dataclass(frozen=True, slots=True)
class Renamed:
    """A setting's earlier name, still accepted (from its YAML file or ALGO_ variable) with a deprecation warning.

    Both are dotted paths from the settings' top level, e.g. "kafka.scheduler.max_concurrent_tasks" (kafka.yaml's
    `scheduler.max_concurrent_tasks`, ALGO_KAFKA__SCHEDULER__MAX_CONCURRENT_TASKS). When both names are set the new
    one wins.
    """

    old: str
    new: str


class CommonSettings(BaseSettings):
    """ALGO_* environment variables and `.env` override the YAML files, which override these defaults."""

    model_config = SettingsConfigDict(
        env_prefix="ALGO_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )
    # Field name → the YAML file (in config_dir) that supplies it.
    yaml_sections: ClassVar[dict[str, str]] = {"kafka": "kafka.yaml"}
    # Earlier names of settings. The LLM scheduler's tuning moved from kafka.yaml to scheduler.yaml; every service
    # reads kafka.yaml, so every service must accept (and, without a `scheduler` section, ignore) the old place.
    renamed: ClassVar[tuple[Renamed, ...]] = (
        Renamed("kafka.scheduler.max_concurrent_tasks", "scheduler.max_records_in_flight"),
        Renamed("kafka.scheduler.task_deadline_s", "scheduler.task_deadline_s"),
    )

    enable_kafka_streaming: bool = False
    kafka_bootstrap_servers: str | None = None
    kafka: KafkaConfig = KafkaConfig()
    redis: RedisConfig = RedisConfig()
    # Declared before any ConfigFile field: those are resolved against it.
    config_dir: Path = Path("config")
    log_level: str = "INFO"
    log_json: bool = False
    log_file: Path | None = None
    # 0 disables the Prometheus endpoint. It binds loopback unless told otherwise: compose sets 0.0.0.0 inside
    # containers, where Prometheus scrapes over the compose network (the published ports stay on 127.0.0.1).
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = Field(default="127.0.0.1", min_length=1)
    # After SIGTERM: how long in-flight work (RPCs, records being handled) may take to finish before it is cut off
    # (and, for records, handed back uncommitted). Compose's stop_grace_period must exceed the largest.
    shutdown_grace_s: float = Field(default=30.0, ge=0, le=3600)

    @property
    def bootstrap_servers(self) -> str:
        """ALGO_KAFKA_BOOTSTRAP_SERVERS when set, else the list from kafka.yaml."""
        return self.kafka_bootstrap_servers or ",".join(self.kafka.bootstrap_servers)

    def load_files(self) -> None:
        """Read and validate the files this service reads besides its YAML sections (raise ConfigError).

        `load_settings` calls it once, so start-up and --validate-config fail on them as on the YAML sections.
        """

    def config_files(self) -> list[Path]:
        """Every file this service's configuration comes from (absent YAML files mean defaults)."""
        return [self.config_dir / filename for filename in self.yaml_sections.values()]

    @model_validator(mode="before")
    @classmethod
    def _accept_earlier_names(cls, data: Any) -> Any:
        # The loader already moved what the files said; what is left came from the environment.
        if isinstance(data, dict):
            data = copy.deepcopy(data)
            for message in apply_renames(cls, data, describe=env_name):
                log.warning("%s", message)
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The loader passes the YAML contents as init arguments; the environment must win over them.
        return env_settings, dotenv_settings, init_settings, file_secret_settings


def env_name(cls: type[CommonSettings], path: str) -> str:
    """How a dotted settings path is spelt as an environment variable."""
    return "ALGO_" + path.replace(".", "__").upper()


def yaml_name(cls: type[CommonSettings], path: str) -> str:
    """Where a dotted settings path is written: `field in file.yaml`, or its variable when no file holds it."""
    top, _, rest = path.partition(".")
    if top in cls.yaml_sections and rest:
        return f"{rest} in {cls.yaml_sections[top]}"
    return env_name(cls, path)


def apply_renames(
    cls: type[CommonSettings], data: dict[str, Any], describe: Callable[[type[CommonSettings], str], str] = yaml_name
) -> list[str]:
    """Move each earlier name found in `data` to its current name; returns one deprecation message for each.

    A setting whose current home is not a field of `cls` belongs to another service: it is dropped silently.
    """
    messages = []
    for renamed in cls.renamed:
        old, new = renamed.old.split("."), renamed.new.split(".")
        found, value = _pop(data, old)
        if not found or new[0] not in cls.model_fields:
            continue
        if _has(data, new) or not _put(data, new, value):
            messages.append(
                f"{describe(cls, renamed.old)} is deprecated and ignored: {describe(cls, renamed.new)} is set"
            )
            continue
        messages.append(f"{describe(cls, renamed.old)} is deprecated: set {describe(cls, renamed.new)} instead")
    return messages


def _pop(data: dict[str, Any], path: list[str]) -> tuple[bool, Any]:
    parents = [data]
    for part in path[:-1]:
        child = parents[-1].get(part)
        if not isinstance(child, dict):
            return False, None
        parents.append(child)
    if path[-1] not in parents[-1]:
        return False, None
    value = parents[-1].pop(path[-1])
    # An emptied parent (kafka.yaml's `scheduler:` section) would otherwise be an unknown field of its model; the
    # top-level section itself stays (an empty file is a valid one).
    for parent, part in zip(reversed(parents[1:-1]), reversed(path[1:-1]), strict=True):
        if parent[part]:
            break
        del parent[part]
    return True, value


def _has(data: dict[str, Any], path: list[str]) -> bool:
    node: Any = data
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _put(data: dict[str, Any], path: list[str], value: Any) -> bool:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):  # already given as a model: the new name is set
            return False
        node = child
    node[path[-1]] = value
    return True
