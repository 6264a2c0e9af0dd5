"""Wire the two stages of this package from settings: the task generator and the LLM scheduler."""

from __future__ import annotations

from riskwatch.bus import EventBus, Stage
from riskwatch.config import load_yaml
from riskwatch.errors import ConfigError
from riskwatch_scheduler.config import SchedulerSettings
from riskwatch_scheduler.keys_config import ApiKeysConfigError, load_api_keys
from riskwatch_scheduler.llm_client import LlmClient
from riskwatch_scheduler.prompt import DEFAULT_PROMPT, PromptBook
from riskwatch_scheduler.scheduler import LlmScheduler
from riskwatch_scheduler.taskgen import TaskGenerator


def build_llm_client(settings: SchedulerSettings) -> LlmClient:
    """The LLM client over the key pool of `api_keys_file`, with the prompts of `prompts_file` (optional)."""
    try:
        api_keys = load_api_keys(settings.api_keys_file)
    except ApiKeysConfigError as exc:
        raise ConfigError(str(exc)) from exc
    prompts = load_yaml(settings.prompts_file)
    unknown = set(prompts) - {"default", "per_camera"}
    if unknown:
        raise ConfigError(f"{settings.prompts_file}: {', '.join(sorted(unknown))}: unknown field (default, per_camera)")
    book = PromptBook(default=prompts.get("default") or DEFAULT_PROMPT, per_camera=prompts.get("per_camera") or {})
    return LlmClient.from_config(api_keys, prompts=book)


class TaskGeneratorApp:
    def __init__(self, settings: SchedulerSettings, bus: EventBus) -> None:
        topics = settings.kafka.topics
        group = settings.kafka.consumer_groups.task_generator
        self.generator = TaskGenerator(settings)
        self.stage = Stage(
            "task-generator",
            bus,
            bus.consumer(group, [topics.detection_results.name]),
            self.generator.handle,
            dead_letter_topic=topics.dead_letter,
            group=group,
        )

    async def start(self) -> None:
        await self.stage.start()

    async def stop(self) -> None:
        await self.stage.stop()


class LlmSchedulerApp:
    """Consumes tasks with up to `scheduler.max_concurrent_tasks` in flight; results are published before commit."""

    def __init__(self, settings: SchedulerSettings, bus: EventBus, llm: LlmClient) -> None:
        topics = settings.kafka.topics
        group = settings.kafka.consumer_groups.scheduler
        self.llm = llm
        self.scheduler = LlmScheduler(llm, topics.risk_assessment_results.name)
        self.stage = Stage(
            "llm-scheduler",
            bus,
            bus.consumer(group, [topics.assessment_tasks.name]),
            self.scheduler.handle,
            dead_letter_topic=topics.dead_letter,
            group=group,
            concurrency=settings.kafka.scheduler.max_concurrent_tasks,
        )

    async def start(self) -> None:
        await self.stage.start()

    async def stop(self) -> None:
        await self.stage.stop()
        await self.llm.close()
