"""Settings of the task generator and the LLM scheduler (one class per entry point, the LLM scheduler's reading more
files)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field, StringConstraints, ValidationError

from riskwatch.config import CommonSettings, ConfigFile, FrozenModel, load_yaml
from riskwatch.config.loader import format_errors
from riskwatch.domain import RISK_TYPES
from riskwatch.errors import ConfigError
from riskwatch_scheduler.keys_config import ApiKeysConfig, load_api_keys
from riskwatch_scheduler.policy.settings import (
    DEFAULT_THRESHOLDS,
    NO_CAMERA_OVERRIDES,
    CameraPolicy,
    PriorityWeights,
    ProvisionalPolicy,
    RefreshIntervals,
    SendNewGroups,
    ThresholdRule,
)
from riskwatch_scheduler.prompt import DEFAULT_PROMPT, PromptBook


class TaskGeneratorConfig(FrozenModel):
    """config/taskgen.yaml: which groups are worth an LLM call, and how the LLM budget is shared.

    Every field is documented in config/taskgen.yaml; the nested models are in policy/settings.py.
    """

    min_group_size: int = Field(default=1, ge=1)
    membership_min_jaccard: float = Field(default=0.3, ge=0, le=1)
    thresholds: tuple[ThresholdRule, ...] = DEFAULT_THRESHOLDS
    send_new_groups: SendNewGroups = SendNewGroups.ON_TRIGGER
    trigger_on_recovery: bool = True
    refresh_s: RefreshIntervals = RefreshIntervals()
    min_group_interval_s: float = Field(default=1.0, ge=0)
    camera_min_interval_s: float = Field(default=0.0, ge=0)
    llm_budget_per_s: float = Field(default=50.0, ge=0)
    budget_burst: float = Field(default=10.0, ge=1)
    max_task_age_s: float = Field(default=2.0, gt=0)
    group_idle_s: float = Field(default=60.0, gt=0)
    camera_idle_s: float | None = Field(default=None, gt=0)
    max_records_in_flight: int = Field(default=2000, ge=1)
    priority: PriorityWeights = PriorityWeights()
    provisional: ProvisionalPolicy = ProvisionalPolicy()
    cameras: dict[str, CameraPolicy] = Field(default_factory=dict)

    def camera(self, camera_id: str) -> CameraPolicy:
        return self.cameras.get(camera_id, NO_CAMERA_OVERRIDES)


class LlmSchedulerConfig(FrozenModel):
    """config/scheduler.yaml: how hard the LLM scheduler works (every field is documented there)."""

    max_records_in_flight: int = Field(default=200, ge=1, le=10_000)
    task_deadline_s: float = Field(default=30.0, gt=0)


class PromptsConfig(FrozenModel):
    """config/prompts.yaml (optional): the global prompt and per-camera overrides."""

    default: str | None = None
    per_camera: dict[str, str] = Field(default_factory=dict)
    # Risk types a custom prompt asks for beyond the built-in ones (riskwatch.domain.RISK_TYPES); a reply's other
    # types are dropped.
    risk_types: tuple[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")], ...] = ()

    def book(self) -> PromptBook:
        return PromptBook(
            default=self.default or DEFAULT_PROMPT,
            per_camera=self.per_camera,
            risk_types=frozenset(RISK_TYPES) | frozenset(self.risk_types),
        )


class SchedulerSettings(CommonSettings):
    """What both stages read; `api_keys` and `prompts` are read on first use (see LlmSchedulerSettings)."""

    yaml_sections: ClassVar[dict[str, str]] = {
        **CommonSettings.yaml_sections,
        "taskgen": "taskgen.yaml",
        "scheduler": "scheduler.yaml",
    }

    taskgen: TaskGeneratorConfig = TaskGeneratorConfig()
    scheduler: LlmSchedulerConfig = LlmSchedulerConfig()
    api_keys_file: ConfigFile = Path("api_keys.yaml")
    prompts_file: ConfigFile = Path("prompts.yaml")

    @cached_property
    def api_keys(self) -> ApiKeysConfig:
        return load_api_keys(self.api_keys_file)

    @cached_property
    def prompts(self) -> PromptsConfig:
        try:
            return PromptsConfig.model_validate(load_yaml(self.prompts_file))
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, str(self.prompts_file))) from None


class LlmSchedulerSettings(SchedulerSettings):
    """The LLM scheduler's: the key file and the prompts are validated with the rest, before anything starts."""

    def load_files(self) -> None:
        _ = self.api_keys, self.prompts

    def config_files(self) -> list[Path]:
        return [*super().config_files(), self.api_keys_file, self.prompts_file]
