"""`least_loaded` (the default): the key with the fewest calls in flight."""

from __future__ import annotations

from collections.abc import Sequence

from riskwatch_scheduler.keypool.strategies.base import K
from riskwatch_scheduler.keys_config import SelectionStrategyName


class LeastLoaded:
    """Fewest calls in flight, then fewest calls in the last minute, then the higher priority, then order."""

    name = SelectionStrategyName.LEAST_LOADED.value

    def choose(self, candidates: Sequence[K], now: float) -> K:
        return min(candidates, key=lambda k: (k.in_flight, k.calls_last_minute(now), -k.priority, k.index))
