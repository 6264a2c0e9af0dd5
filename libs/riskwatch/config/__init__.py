"""Settings: pydantic-settings with the ALGO_ env prefix, layered over config/*.yaml, failing fast with clear errors."""

from riskwatch.config.base import ConfigFile, FrozenModel
from riskwatch.config.kafka import ConsumerGroups, KafkaConfig, TopicConfig, Topics
from riskwatch.config.loader import SettingsBook, load_all, load_settings, load_yaml
from riskwatch.config.settings import CommonSettings, RedisConfig, Renamed

__all__ = [
    "CommonSettings",
    "ConfigFile",
    "ConsumerGroups",
    "FrozenModel",
    "KafkaConfig",
    "RedisConfig",
    "Renamed",
    "SettingsBook",
    "TopicConfig",
    "Topics",
    "load_all",
    "load_settings",
    "load_yaml",
]
