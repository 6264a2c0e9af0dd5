"""Settings: pydantic-settings with the ALGO_ env prefix, layered over config/*.yaml, failing fast with clear errors."""

from riskwatch.config.kafka import ConsumerGroups, KafkaConfig, SchedulerTuning, TopicConfig, Topics
from riskwatch.config.loader import load_settings, load_yaml
from riskwatch.config.settings import CommonSettings, RedisConfig

__all__ = [
    "CommonSettings",
    "ConsumerGroups",
    "KafkaConfig",
    "RedisConfig",
    "SchedulerTuning",
    "TopicConfig",
    "Topics",
    "load_settings",
    "load_yaml",
]
