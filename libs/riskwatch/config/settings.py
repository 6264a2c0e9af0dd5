"""Settings every service shares; each service subclasses CommonSettings with its own fields."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from riskwatch.config.kafka import KafkaConfig


class RedisConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "riskwatch:"
    state_ttl_s: int = Field(default=24 * 3600, ge=1)
    alert_history_len: int = Field(default=1000, ge=10)


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

    enable_kafka_streaming: bool = False
    kafka_bootstrap_servers: str | None = None
    kafka: KafkaConfig = KafkaConfig()
    redis: RedisConfig = RedisConfig()
    config_dir: Path = Path("config")
    log_level: str = "INFO"
    log_json: bool = False
    log_file: Path | None = None
    # 0 disables the Prometheus endpoint.
    metrics_port: int = Field(default=0, ge=0, le=65535)

    @property
    def bootstrap_servers(self) -> str:
        """ALGO_KAFKA_BOOTSTRAP_SERVERS when set, else the list from kafka.yaml."""
        return self.kafka_bootstrap_servers or ",".join(self.kafka.bootstrap_servers)

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
