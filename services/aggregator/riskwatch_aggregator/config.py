"""Settings of the result aggregator."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field
from riskwatch.config import CommonSettings


class AggregatorConfig(BaseModel):
    """config/aggregator.yaml: how risk state is kept."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A group that has had no verdict for this long has left the scene and is dropped from the state.
    group_ttl_s: float = Field(default=120.0, gt=0)
    # De-escalation waits this long at the higher level, unless `deescalate_after` lower verdicts arrive first.
    deescalate_hold_s: float = Field(default=10.0, ge=0)
    deescalate_after: int = Field(default=3, ge=1)
    # How often state that could not be written to Redis is retried.
    cache_retry_s: float = Field(default=2.0, gt=0)


class AggregatorSettings(CommonSettings):
    yaml_sections: ClassVar[dict[str, str]] = {**CommonSettings.yaml_sections, "aggregator": "aggregator.yaml"}

    aggregator: AggregatorConfig = AggregatorConfig()
