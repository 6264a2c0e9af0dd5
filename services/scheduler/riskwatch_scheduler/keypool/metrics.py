"""The key pool's Prometheus metrics: per-key state, cooldown and success rate, calls by outcome, call latency."""

from __future__ import annotations

import math
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from riskwatch.clock import Clock
from riskwatch_scheduler.keypool.key import PooledKey
from riskwatch_scheduler.keypool.lease import KeyState, OutcomeKind

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)


class PoolMetrics:
    """One set per pool, on `registry` (None: unregistered), unregistered again when the pool closes."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.registry = registry
        self.success_rate = Gauge(
            "api_key_success_rate",
            "Share of an API key's calls that succeeded over the last minute (NaN when idle)",
            ["key_id"],
            registry=registry,
        )
        self.state = Gauge(
            "api_key_state",
            "1 for the state an API key is in, 0 for the others",
            ["key_id", "state"],
            registry=registry,
        )
        self.cooldown = Gauge(
            "api_key_cooldown_seconds",
            "Seconds until a cooling API key may be used again",
            ["key_id"],
            registry=registry,
        )
        self.calls = Counter("llm_calls", "LLM calls by API key and outcome", ["key_id", "outcome"], registry=registry)
        self.latency = Histogram(
            "llm_latency_seconds", "Duration of one LLM call", buckets=LATENCY_BUCKETS, registry=registry
        )
        self._calls_children: dict[tuple[str, OutcomeKind], Counter] = {}

    def count_call(self, key_id: str, kind: OutcomeKind) -> None:
        child = self._calls_children.get((key_id, kind))
        if child is None:
            child = self._calls_children[(key_id, kind)] = self.calls.labels(key_id, kind.value)
        child.inc()

    def watch(self, key: PooledKey, clock: Clock) -> None:
        """Bind `key`'s gauges, computed at scrape time: nothing to update on the hot path, and cooldowns count
        down by themselves."""

        def success_rate() -> float:
            rate = key.success_rate(clock.now())
            return math.nan if rate is None else rate

        self.success_rate.labels(key.id).set_function(success_rate)
        self.cooldown.labels(key.id).set_function(
            lambda: 0.0 if key.disabled else max(0.0, key.cooldown_until - clock.now())
        )
        for state in KeyState:
            self.state.labels(key.id, state.value).set_function(_state_indicator(key, state, clock))

    def unregister(self) -> None:
        if self.registry is not None:
            for collector in (self.success_rate, self.state, self.cooldown, self.calls, self.latency):
                self.registry.unregister(collector)


def _state_indicator(key: PooledKey, state: KeyState, clock: Clock) -> Callable[[], float]:
    return lambda: 1.0 if key.state(clock.now()) is state else 0.0
