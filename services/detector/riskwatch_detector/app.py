"""The detector as one object owning start and stop: model and batcher, then the gRPC server; stop in reverse."""

from __future__ import annotations

import logging

import grpc

from riskwatch.bus import EventBus
from riskwatch.lifecycle import run_until_signalled
from riskwatch.runtime import connect_bus
from riskwatch_detector.config import DetectorSettings
from riskwatch_detector.server import create_server, set_serving
from riskwatch_detector.service import Detector

log = logging.getLogger("riskwatch_detector")


class DetectorApp:
    """Owns start and stop: model and batcher first, then the server; stop runs in reverse."""

    def __init__(self, settings: DetectorSettings, bus: EventBus) -> None:
        self._settings = settings
        self.detector = Detector.from_settings(settings, bus)
        self.server: grpc.aio.Server
        self.server, self.port = create_server(settings, self.detector)

    async def start(self) -> None:
        await self.detector.start()
        await self.server.start()
        await set_serving(self.server, True)
        log.info("detector serving gRPC on %s:%d", self._settings.grpc_host, self.port)

    async def stop(self) -> None:
        await set_serving(self.server, False)
        await self.server.stop(self._settings.shutdown_grace_s)
        await self.detector.stop()
        log.info("detector stopped: accepted frames answered and their events published")


async def run(settings: DetectorSettings) -> None:
    bus = await connect_bus(settings)
    try:
        await run_until_signalled(DetectorApp(settings, bus))  # a ConfigError (model file, ...) ends in status 2
    finally:
        await bus.close()
