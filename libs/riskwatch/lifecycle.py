"""Run a service until SIGTERM/SIGINT, then stop it gracefully (in reverse order of start)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

log = logging.getLogger(__name__)


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def run_until_signalled(service: Service, stop_event: asyncio.Event | None = None) -> None:
    """start(); wait for SIGTERM/SIGINT (or `stop_event`); stop(). A second signal during stop is ignored."""
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request_stop, stop, sig)
    await service.start()
    await stop.wait()
    log.info("stopping gracefully")
    await service.stop()


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("received %s", sig.name)
    stop.set()
