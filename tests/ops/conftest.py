"""The streaming stack started by the operator scripts, shared by the tests that need it running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ops.support import ScriptStack


@pytest.fixture(scope="session")
def script_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptStack]:
    """Created, not started: each test starts it with the script (idempotent) so test order does not matter."""
    stack = ScriptStack(log_dir=tmp_path_factory.mktemp("ops") / "streaming")
    stack.create_topics()
    try:
        yield stack
    finally:
        stack.stop("--all", "--timeout", "10")
        stack.delete_topics()
