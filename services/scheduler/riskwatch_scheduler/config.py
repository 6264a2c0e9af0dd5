"""Settings of the task generator and the LLM scheduler (one class, two entry points)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from riskwatch.config import CommonSettings
from riskwatch_scheduler.policy.settings import (
    DEFAULT_THRESHOLDS,
    NO_CAMERA_OVERRIDES,
    CameraPolicy,
    PriorityWeights,
    RefreshIntervals,
    ThresholdRule,
)


class TaskGeneratorConfig(BaseModel):
    """config/taskgen.yaml: which groups are worth an LLM call, and how the LLM budget is shared.

    Every field is documented in config/taskgen.yaml; the nested models are in policy/settings.py.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_group_size: int = Field(default=1, ge=1)
    membership_min_jaccard: float = Field(default=0.3, ge=0, le=1)
    thresholds: tuple[ThresholdRule, ...] = DEFAULT_THRESHOLDS
    trigger_on_recovery: bool = True
    refresh_s: RefreshIntervals = RefreshIntervals()
    min_group_interval_s: float = Field(default=1.0, ge=0)
    camera_min_interval_s: float = Field(default=0.0, ge=0)
    llm_budget_per_s: float = Field(default=50.0, ge=0)
    budget_burst: float = Field(default=10.0, ge=1)
    max_task_age_s: float = Field(default=2.0, gt=0)
    group_idle_s: float = Field(default=60.0, gt=0)
    max_records_in_flight: int = Field(default=2000, ge=1)
    priority: PriorityWeights = PriorityWeights()
    cameras: dict[str, CameraPolicy] = {}

    def camera(self, camera_id: str) -> CameraPolicy:
        return self.cameras.get(camera_id, NO_CAMERA_OVERRIDES)


class SchedulerSettings(CommonSettings):
    yaml_sections: ClassVar[dict[str, str]] = {**CommonSettings.yaml_sections, "taskgen": "taskgen.yaml"}

    taskgen: TaskGeneratorConfig = TaskGeneratorConfig()
    api_keys_file: Path = Path("config/api_keys.yaml")
    # Per-camera prompt overrides and the global default live in this file (optional).
    prompts_file: Path = Path("config/prompts.yaml")
