"""Key selection strategies, one per module, named as `selection_strategy` in api_keys.yaml.

A new strategy is a class with a `name` and `choose(candidates, now)` (see `base.SelectionStrategy`), added to
`make_strategy` and to `SelectionStrategyName`; or pass an instance straight to `KeyPool(strategy=...)`.
"""

from __future__ import annotations

from collections.abc import Callable

from riskwatch_scheduler.keypool.strategies.base import CandidateKey, SelectionStrategy
from riskwatch_scheduler.keypool.strategies.least_loaded import LeastLoaded
from riskwatch_scheduler.keypool.strategies.round_robin import RoundRobin
from riskwatch_scheduler.keypool.strategies.weighted import Weighted
from riskwatch_scheduler.keys_config import SelectionStrategyName

__all__ = ["CandidateKey", "LeastLoaded", "RoundRobin", "SelectionStrategy", "Weighted", "make_strategy"]

_STRATEGIES: dict[SelectionStrategyName, Callable[[], SelectionStrategy]] = {
    SelectionStrategyName.LEAST_LOADED: LeastLoaded,
    SelectionStrategyName.ROUND_ROBIN: RoundRobin,
    SelectionStrategyName.WEIGHTED: Weighted,
}


def make_strategy(name: SelectionStrategyName | str) -> SelectionStrategy:
    """A fresh strategy (strategies keep state, so one per pool)."""
    return _STRATEGIES[SelectionStrategyName(name)]()
