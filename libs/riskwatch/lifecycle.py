"""Run a service until SIGTERM/SIGINT, then stop it gracefully (in reverse order of start)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any, Protocol

log = logging.getLogger(__name__)

# SIGBREAK is Ctrl+Break on Windows, where SIGTERM is never delivered.
STOP_SIGNALS = tuple(
    sig for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGBREAK", None)) if sig is not None
)


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def run_until_signalled(service: Service, stop_event: asyncio.Event | None = None) -> None:
    """start(); wait for SIGTERM/SIGINT (or `stop_event`); stop(). A second signal during stop is ignored."""
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    replaced: dict[int, Any] = {}  # plain handlers installed here, to put back once stopped
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, _request_stop, stop, sig)
        except NotImplementedError:  # Windows event loops: a plain handler that hands over to the loop
            replaced[sig] = signal.signal(
                sig, lambda signum, _frame: loop.call_soon_threadsafe(_request_stop, stop, signum)
            )
    try:
        await service.start()
        await stop.wait()
        log.info("stopping gracefully")
        await service.stop()
    finally:
        for sig, previous in replaced.items():
            signal.signal(sig, previous)


def _request_stop(stop: asyncio.Event, sig: int) -> None:
    log.info("received %s", signal.Signals(sig).name)
    stop.set()
