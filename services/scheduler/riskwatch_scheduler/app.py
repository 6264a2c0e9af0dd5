"""The two stages of this package, each owning its start and stop: the task generator and the LLM scheduler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from riskwatch.bus import EventBus, Outgoing, Record, Stage
from riskwatch.cache import Cache
from riskwatch.lifecycle import run_until_signalled
from riskwatch.runtime import connect_bus, make_cache
from riskwatch.telemetry.health import HealthPublisher
from riskwatch_scheduler.config import LlmSchedulerSettings, SchedulerSettings
from riskwatch_scheduler.keypool import KeyState
from riskwatch_scheduler.llm_client import LlmClient
from riskwatch_scheduler.scheduler import LlmScheduler
from riskwatch_scheduler.taskgen import TaskGenerator

log = logging.getLogger(__name__)


def build_llm_client(settings: SchedulerSettings) -> LlmClient:
    """The LLM client over the key pool of `api_keys_file`, with the prompts of `prompts_file` (optional)."""
    return LlmClient.from_config(settings.api_keys, prompts=settings.prompts.book())


class TaskGeneratorApp:
    def __init__(self, settings: SchedulerSettings, bus: EventBus, cache: Cache) -> None:
        topics = settings.kafka.topics
        group = settings.kafka.consumer_groups.task_generator
        self.generator = TaskGenerator(settings, publish=self._publish)
        self.stage = Stage(
            "task-generator",
            bus,
            # Results too: the policy refreshes a group at an interval that depends on its last verdict.
            bus.consumer(group, [topics.detection_results.name, topics.risk_assessment_results.name]),
            self.generator.handle,
            dead_letter_topic=topics.dead_letter,
            group=group,
            # Records wait until their groups are resolved; started in order, so the policy sees them in order.
            concurrency=settings.taskgen.max_records_in_flight,
            drain_timeout_s=settings.shutdown_grace_s,
        )
        self.health = HealthPublisher(cache, "task-generator", self.stage.health)

    async def _publish(self, outputs: Sequence[Outgoing], record: Record) -> None:
        """Provisional results go out through the stage's publishing path at once (see TaskGenerator)."""
        await self.stage.publish(outputs, record)

    async def start(self) -> None:
        await self.generator.start()
        await self.stage.start()
        await self.health.start()

    async def stop(self) -> None:
        await self.health.stop()
        await self.stage.stop()  # drains: the ticker is still releasing what the records wait for
        await self.generator.stop()


class LlmSchedulerApp:
    """Consumes tasks, up to scheduler.yaml's `max_records_in_flight` at once; results are published before commit."""

    def __init__(self, settings: SchedulerSettings, bus: EventBus, llm: LlmClient, cache: Cache) -> None:
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
            concurrency=settings.scheduler.max_records_in_flight,
            drain_timeout_s=settings.shutdown_grace_s,
        )
        self.health = HealthPublisher(cache, "llm-scheduler", self._health)

    def _health(self) -> dict[str, object]:
        keys = self.llm.pool.snapshot()
        by_state: dict[str, list[str]] = {}
        for key in keys:
            by_state.setdefault(key.state.value, []).append(key.key_id)
        return {
            **self.stage.health(),
            "API keys": {state: len(ids) for state, ids in by_state.items()},
            "keys cooling": by_state.get(KeyState.COOLING.value, []),
            "keys disabled": by_state.get(KeyState.DISABLED.value, []),
            "LLM calls last minute": sum(k.calls_last_minute for k in keys),
        }

    async def start(self) -> None:
        await self.stage.start()
        await self.health.start()

    async def stop(self) -> None:
        """Hand back the tasks waiting for a key at once (an LLM endpoint that is gone makes them wait until their
        deadline), drain the calls in flight (bounded by `shutdown_grace_s`), commit, close the clients."""
        await self.health.stop()
        handed_back = self.llm.stop_assessing()
        if handed_back:
            log.info("llm-scheduler: %d task(s) waiting for an API key handed back (redelivered later)", handed_back)
        try:
            await self.stage.stop()
        except asyncio.CancelledError:
            # With concurrency 1 the stage runs its handler itself, so handing the task back ends the stage's loop
            # cancelled; only a cancellation of this stop itself goes on.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        await self.llm.close()


async def run_task_generator(settings: SchedulerSettings) -> None:
    bus = await connect_bus(settings)
    cache = make_cache(settings)
    try:
        await run_until_signalled(TaskGeneratorApp(settings, bus, cache))
    finally:
        await bus.close()
        await cache.close()


async def run_llm_scheduler(settings: LlmSchedulerSettings) -> None:
    llm = build_llm_client(settings)
    bus = await connect_bus(settings)
    cache = make_cache(settings)
    try:
        await run_until_signalled(LlmSchedulerApp(settings, bus, llm, cache))
    finally:
        await bus.close()
        await cache.close()
