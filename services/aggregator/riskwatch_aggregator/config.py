"""Settings of the result aggregator."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from riskwatch.config import CommonSettings, FrozenModel, Renamed


class AggregatorConfig(FrozenModel):
    """config/aggregator.yaml: how risk state is kept (every field is documented there)."""

    group_ttl_s: float = Field(default=120.0, gt=0)
    deescalate_hold_s: float = Field(default=10.0, ge=0)
    deescalate_after: int = Field(default=0, ge=0)
    provisional_ttl_s: float = Field(default=10.0, gt=0, le=3600)
    recent_task_ids: int = Field(default=4096, ge=16)
    cache_retry_s: float = Field(default=0.5, gt=0)
    cache_retry_max_s: float = Field(default=10.0, gt=0)
    max_records_in_flight: int = Field(default=1000, ge=1)
    # A camera with no result for this long is forgotten in memory (None = redis.state_ttl_s).
    camera_idle_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _retry_order(self) -> AggregatorConfig:
        if self.cache_retry_max_s < self.cache_retry_s:
            raise ValueError("cache_retry_max_s must be at least cache_retry_s")
        return self


class AggregatorSettings(CommonSettings):
    yaml_sections: ClassVar[dict[str, str]] = {**CommonSettings.yaml_sections, "aggregator": "aggregator.yaml"}
    renamed: ClassVar[tuple[Renamed, ...]] = (
        *CommonSettings.renamed,
        Renamed("aggregator.max_unpersisted", "aggregator.max_records_in_flight"),
        Renamed("aggregator.drain_timeout_s", "shutdown_grace_s"),
    )

    aggregator: AggregatorConfig = AggregatorConfig()
    shutdown_grace_s: float = Field(default=10.0, ge=0, le=3600)
