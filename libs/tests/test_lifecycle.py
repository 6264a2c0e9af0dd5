"""run_until_signalled: a stop signal stops the service gracefully, on event loops with and without signal support."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from riskwatch.lifecycle import run_until_signalled


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")


async def _signal_once_started(service: Recorder, sig: int) -> None:
    while service.calls != ["start"]:
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), sig)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_stop_signal_stops_the_service(sig: int) -> None:
    service = Recorder()
    async with asyncio.timeout(10):
        await asyncio.gather(run_until_signalled(service), _signal_once_started(service, sig))
    assert service.calls == ["start", "stop"]


async def test_without_loop_signal_handlers_as_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    def unsupported(*_args: object) -> None:
        raise NotImplementedError

    monkeypatch.setattr(loop, "add_signal_handler", unsupported)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    service = Recorder()
    async with asyncio.timeout(10):
        await asyncio.gather(run_until_signalled(service), _signal_once_started(service, signal.SIGINT))
    assert service.calls == ["start", "stop"]
    # Its handlers are gone once it returns: a later Ctrl+C must not reach a closed loop.
    assert {sig: signal.getsignal(sig) for sig in before} == before
