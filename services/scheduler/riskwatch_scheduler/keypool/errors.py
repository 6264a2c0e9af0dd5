"""Why the key pool could not hand out a lease: the errors `KeyPool.acquire` raises."""

from __future__ import annotations

from riskwatch.errors import RiskwatchError


class KeyPoolError(RiskwatchError):
    """Root of the key pool's errors."""


class DeadlineExceeded(KeyPoolError):
    """No key could be used before the caller's deadline."""


class NoUsableKeys(KeyPoolError):
    """Every key is disabled, or cooling down until after the caller's deadline."""


class KeyPoolClosed(KeyPoolError):
    """The pool was closed while waiting, or before the call."""
