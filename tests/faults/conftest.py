"""Fixtures of the fault suite: a private Kafka and Redis (so restarting them disturbs no other run) and one stack."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest

from tests.faults.infra import PrivateInfra
from tests.faults.stack import FaultStack
from tests.support.stack import REPO

# One directory per run (logs, the ledger of each case as JSON, the private broker's data while it runs),
# so two runs on one machine never share a broker directory or a log.
ARTIFACTS = REPO / "test-artifacts" / "faults" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def pytest_configure(config: pytest.Config) -> None:
    # Also registered in the root pyproject; repeated here so `pytest tests/faults` works on its own.
    config.addinivalue_line("markers", "faults: fault injection under load (kills, broker/cache restarts, LLM faults)")


@pytest.fixture(scope="session")
def infra() -> Iterator[PrivateInfra]:
    infra = PrivateInfra(ARTIFACTS / "infra")
    try:
        infra.start()
        yield infra
    finally:
        infra.stop()
        shutil.rmtree(infra.directory / "kafka" / "data", ignore_errors=True)


@pytest.fixture(scope="session")
def stack(infra: PrivateInfra) -> Iterator[FaultStack]:
    stack = FaultStack(log_dir=ARTIFACTS / "logs", infra=infra)
    try:
        stack.start_services()
        yield stack
    except Exception:
        print(stack.logs())
        raise
    finally:
        stack.stop_all()
        stack.close()
