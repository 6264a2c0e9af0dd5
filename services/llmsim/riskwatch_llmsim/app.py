"""The simulator as one object owning start and stop, run by the shared entry until SIGTERM/SIGINT."""

from __future__ import annotations

import logging

from riskwatch.lifecycle import run_until_signalled

from .config import SimulatorSettings
from .server import RunningSimulator, start_simulator

log = logging.getLogger("riskwatch_llmsim")


class SimulatorApp:
    def __init__(self, settings: SimulatorSettings) -> None:
        self._settings = settings
        self.running: RunningSimulator | None = None

    async def start(self) -> None:
        settings, config = self._settings, self._settings.simulator
        self.running = await start_simulator(
            config, settings.host, settings.port, shutdown_timeout_s=settings.shutdown_grace_s
        )
        log.info(
            "llmsim listening on %s (keys: %s; qps %s, rpm %s per key; latency median %.3fs sigma %.2f; "
            "faults 5xx %.3f timeout %.3f invalid_json %.3f)",
            self.running.base_url,
            ", ".join(sorted(config.keys)) or "none, any token accepted",
            "unlimited" if config.qps is None else f"{config.qps:g}",
            "unlimited" if config.rpm is None else f"{config.rpm:g}",
            config.latency_median_s,
            config.latency_sigma,
            config.fault_5xx,
            config.fault_timeout,
            config.fault_invalid_json,
        )

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.stop()
        log.info("llmsim stopped")


async def run(settings: SimulatorSettings) -> None:
    await run_until_signalled(SimulatorApp(settings))
