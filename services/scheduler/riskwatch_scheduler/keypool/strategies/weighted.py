"""`weighted`: choices shared out in proportion to each key's priority."""

from __future__ import annotations

import math
from collections.abc import Sequence

from riskwatch_scheduler.keypool.strategies.base import K
from riskwatch_scheduler.keys_config import SelectionStrategyName


class Weighted:
    """Smooth weighted round-robin (as nginx): each key's share of choices is proportional to its priority."""

    name = SelectionStrategyName.WEIGHTED.value

    def __init__(self) -> None:
        self._current: dict[int, int] = {}

    def choose(self, candidates: Sequence[K], now: float) -> K:
        current = self._current
        total = 0
        chosen = candidates[0]
        best = -math.inf
        for k in candidates:
            weight = current.get(k.index, 0) + k.priority
            current[k.index] = weight
            total += k.priority
            if weight > best:
                chosen, best = k, weight
        current[chosen.index] -= total
        return chosen
