"""The extension point: a selection strategy chooses one of the keys usable right now, seeing only `CandidateKey`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar


class CandidateKey(Protocol):
    """What a strategy may look at when choosing a key."""

    @property
    def index(self) -> int: ...
    @property
    def id(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    def calls_last_minute(self, now: float) -> int: ...


K = TypeVar("K", bound=CandidateKey)


class SelectionStrategy(Protocol):
    """Chooses one of the keys usable right now; `candidates` is non-empty and in configuration order."""

    name: str

    def choose(self, candidates: Sequence[K], now: float) -> K: ...
