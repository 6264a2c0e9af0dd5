"""Fixtures shared by the cross-service tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def grpcurl() -> Path:
    """grpcurl as `make install` builds it (from the Go module proxy)."""
    found = shutil.which("grpcurl") or str(Path.home() / ".cache" / "riskwatch" / "bin" / "grpcurl")
    path = Path(found)
    if not path.exists():
        pytest.fail("grpcurl is missing: run `make install` (it builds grpcurl from the Go module proxy)")
    return path
