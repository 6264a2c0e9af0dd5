"""What the simulator did, per key label and in total; labels only, never tokens."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

COUNTERS = (
    "calls",
    "ok",
    "http_429",
    "http_5xx",
    "timeouts",
    "invalid_json",
    "http_401",
    "http_400",
    "http_404",
    "disconnected",
)


@dataclass(slots=True)
class KeyStats:
    """Counters for one key label.

    `calls` counts every request; each ends in exactly one of the other counters except for
    a request still in flight. `ok` counts well-formed verdicts, `invalid_json` spoiled 200s,
    `timeouts` requests picked to hang (whether or not the client then gave up).
    """

    calls: int = 0
    ok: int = 0
    http_429: int = 0
    http_5xx: int = 0
    timeouts: int = 0
    invalid_json: int = 0
    http_401: int = 0
    http_400: int = 0
    http_404: int = 0  # unknown model
    disconnected: int = 0  # client hung up before the simulated latency was over
    in_flight: int = 0
    peak_concurrent: int = 0

    def as_dict(self) -> dict[str, int]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


class SimulatorStats:
    """Counts every chat-completions call by key label, plus concurrency peaks."""

    def __init__(self) -> None:
        self._keys: dict[str, KeyStats] = {}
        self._in_flight = 0
        self._peak_concurrent = 0
        self._since = time.time()

    def key(self, label: str) -> KeyStats:
        stats = self._keys.get(label)
        if stats is None:
            stats = self._keys[label] = KeyStats()
        return stats

    def enter(self, stats: KeyStats) -> None:
        stats.calls += 1
        stats.in_flight += 1
        stats.peak_concurrent = max(stats.peak_concurrent, stats.in_flight)
        self._in_flight += 1
        self._peak_concurrent = max(self._peak_concurrent, self._in_flight)

    def leave(self, stats: KeyStats) -> None:
        stats.in_flight -= 1
        self._in_flight -= 1

    def reset(self) -> None:
        """Zero the counters; requests still in flight keep counting toward in_flight and the new peaks."""
        for label, stats in list(self._keys.items()):
            if stats.in_flight:
                self._keys[label] = KeyStats(in_flight=stats.in_flight, peak_concurrent=stats.in_flight)
            else:
                del self._keys[label]
        self._peak_concurrent = self._in_flight
        self._since = time.time()

    def snapshot(self) -> dict[str, Any]:
        totals = {name: sum(getattr(stats, name) for stats in self._keys.values()) for name in COUNTERS}
        totals["in_flight"] = self._in_flight
        totals["peak_concurrent"] = self._peak_concurrent
        return {
            "since": self._since,
            "elapsed_s": round(time.time() - self._since, 3),
            "keys": {label: stats.as_dict() for label, stats in sorted(self._keys.items())},
            "totals": totals,
            "peak_concurrent": self._peak_concurrent,
        }
