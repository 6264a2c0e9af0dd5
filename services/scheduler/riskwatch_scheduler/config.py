"""Settings of the task generator and the LLM scheduler (one class, two entry points)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field
from riskwatch.config import CommonSettings


class TaskGeneratorConfig(BaseModel):
    """config/taskgen.yaml: which groups are worth an LLM call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Groups smaller than this are never sent.
    min_group_size: int = Field(default=1, ge=1)


class SchedulerSettings(CommonSettings):
    yaml_sections: ClassVar[dict[str, str]] = {**CommonSettings.yaml_sections, "taskgen": "taskgen.yaml"}

    taskgen: TaskGeneratorConfig = TaskGeneratorConfig()
    api_keys_file: Path = Path("config/api_keys.yaml")
    # Per-camera prompt overrides and the global default live in this file (optional).
    prompts_file: Path = Path("config/prompts.yaml")
