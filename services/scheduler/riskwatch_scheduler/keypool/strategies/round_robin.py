"""`round_robin`: each usable key in turn, in configuration order."""

from __future__ import annotations

from collections.abc import Sequence

from riskwatch_scheduler.keypool.strategies.base import K
from riskwatch_scheduler.keys_config import SelectionStrategyName


class RoundRobin:
    """True rotation: the next usable key after the one chosen last, in configuration order."""

    name = SelectionStrategyName.ROUND_ROBIN.value

    def __init__(self) -> None:
        self._next_index = 0

    def choose(self, candidates: Sequence[K], now: float) -> K:
        chosen = next((k for k in candidates if k.index >= self._next_index), candidates[0])
        self._next_index = chosen.index + 1
        return chosen
