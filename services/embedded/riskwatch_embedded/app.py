"""The composition root of embedded mode: every stage in this one process over the in-memory bus and cache —
no Kafka, no Redis."""

from __future__ import annotations

import logging
from urllib.parse import urlparse

from riskwatch.cache import InMemoryCache
from riskwatch.errors import ConfigError
from riskwatch.lifecycle import Service, run_until_signalled
from riskwatch.runtime import memory_bus
from riskwatch_aggregator.app import AggregatorApp
from riskwatch_detector.backends import Backend
from riskwatch_detector.service import Detector
from riskwatch_embedded.config import EmbeddedSettings
from riskwatch_gateway.app import GatewayApp
from riskwatch_llmsim import SimulatorConfig, start_simulator
from riskwatch_llmsim.server import RunningSimulator
from riskwatch_scheduler.app import LlmSchedulerApp, TaskGeneratorApp, build_llm_client
from riskwatch_scheduler.keys_config import ApiKeysConfig

log = logging.getLogger(__name__)

# The simulator listens where the scheduler calls it, so the one setting that moves it is the LLM's URL.
SIMULATOR_PORT_SETTING = (
    "set RW_LLM_BASE_URL to move it (e.g. http://127.0.0.1:8401/v1; api_keys.yaml default_base_url)"
)


class EmbeddedSystem:
    """The same stage objects as streaming mode, sharing one in-memory bus and cache."""

    def __init__(self, settings: EmbeddedSettings, *, backend: Backend | None = None) -> None:
        """`backend` stands in for the configured model (the scenario bench's scripted detector); None loads it."""
        self.settings = settings.gateway
        self.bus = memory_bus(settings.gateway)
        self.cache = InMemoryCache()
        self.simulator_config, self.simulator_port = simulator_for(settings.scheduler.api_keys)
        self.simulator: RunningSimulator | None = None
        self.aggregator = AggregatorApp(settings.aggregator, self.bus, self.cache)
        scheduler = settings.scheduler
        self.scheduler = LlmSchedulerApp(scheduler, self.bus, build_llm_client(scheduler), self.cache)
        self.task_generator = TaskGeneratorApp(scheduler, self.bus, self.cache)
        if backend is None:
            self.detector = Detector.from_settings(settings.detector, self.bus)
        else:
            topic = settings.detector.kafka.topics.detection_results.name
            self.detector = Detector(settings.detector.detector, backend, self.bus, topic)
        self.gateway = GatewayApp(settings.gateway, self.detector, self.cache)
        # Started in this order, stopped in reverse: consumers are ready before anything produces.
        self._services: list[Service] = [
            self.aggregator,
            self.scheduler,
            self.task_generator,
            self.detector,
            self.gateway,
        ]

    async def start(self) -> None:
        if self.settings.gateway.embedded_llm_simulator:
            self.simulator = await start_simulator(
                self.simulator_config, port=self.simulator_port, port_setting=SIMULATOR_PORT_SETTING
            )
            log.info(
                "LLM simulator at %s (moved by RW_LLM_BASE_URL; set gateway.embedded_llm_simulator: false to use "
                "a real LLM)",
                self.simulator.base_url,
            )
        started: list[Service] = []
        try:
            for service in self._services:
                started.append(service)  # stopped too if its start fails halfway: stop() copes with either
                await service.start()
        except BaseException:
            # e.g. the gateway's port is taken: stop what runs (capture threads included) so the process can exit
            for service in reversed(started):
                await service.stop()
            await self._close_shared()
            raise
        where = self.gateway.where_to_watch()
        if self.simulator is not None:
            where += f"\n  LLM simulator: {self.simulator.base_url}   (RW_LLM_BASE_URL moves it)"
        print(f"riskwatch is running (embedded mode).\n{where}\nStop with Ctrl+C.", flush=True)

    async def stop(self) -> None:
        for service in reversed(self._services):
            await service.stop()
        await self._close_shared()

    async def _close_shared(self) -> None:
        # The LLM client built here owns its key pool (its close leaves the pool alone, as a pool may be shared):
        # closing it unregisters the pool's metrics, so another system can start in this process.
        self.scheduler.llm.pool.close()
        if self.simulator is not None:
            await self.simulator.stop()
        await self.bus.close()
        await self.cache.close()


def simulator_for(api_keys: ApiKeysConfig) -> tuple[SimulatorConfig, int]:
    """A simulator that knows the configured keys and listens where `default_base_url` points."""
    url = urlparse(api_keys.default_base_url)
    keys = {key.id: key.api_key for key in api_keys.keys}
    return SimulatorConfig(keys=keys), url.port or 80


async def run(settings: EmbeddedSettings) -> None:
    """`python -m riskwatch_embedded` until SIGTERM/SIGINT."""
    if settings.gateway.enable_kafka_streaming:
        raise ConfigError(
            "python -m riskwatch_embedded runs every stage in one process without Kafka; unset "
            "ALGO_ENABLE_KAFKA_STREAMING, or start the streaming services (scripts/start_streaming_services.sh)"
        )
    await run_until_signalled(EmbeddedSystem(settings))
