"""Fixtures: real simulators on port 0 and real openai clients pointed at them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from openai import AsyncOpenAI

from riskwatch_llmsim import RunningSimulator, SimulatorConfig, start_simulator

KEYS = {"key-001": "sim-key-001-SECRET", "key-002": "sim-key-002-SECRET", "key-003": "sim-key-003-SECRET"}

StartSimulator = Callable[..., Awaitable[RunningSimulator]]
MakeClient = Callable[..., AsyncOpenAI]


@pytest.fixture
def keys() -> dict[str, str]:
    """Label -> token of the keys every simulator here knows; tokens are marked to spot leaks."""
    return dict(KEYS)


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSimulator]:
    """Start simulators with fast defaults (no latency, no limits) overridable per test."""
    running: list[RunningSimulator] = []

    async def start(**fields: Any) -> RunningSimulator:
        settings: dict[str, Any] = {
            "keys": KEYS,
            "qps": None,
            "rpm": None,
            "latency_median_s": 0.0,
            **fields,
        }
        simulator = await start_simulator(SimulatorConfig.model_validate(settings), shutdown_timeout_s=1.0)
        running.append(simulator)
        return simulator

    yield start
    for simulator in running:
        await simulator.stop()


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[AsyncOpenAI] = []

    def make(
        simulator: RunningSimulator, label: str = "key-001", *, token: str | None = None, timeout: float = 5.0
    ) -> AsyncOpenAI:
        client = AsyncOpenAI(
            api_key=token if token is not None else KEYS[label],
            base_url=simulator.base_url,
            max_retries=0,
            timeout=timeout,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
