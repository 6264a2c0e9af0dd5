"""The API key pool: per-key QPS/RPM pacing, selection strategies, cooldowns, failover and fair waiting.

Read in this order: `lease` (what callers hold and report), `errors`, `key` (one key's buckets, cooldown and
recent calls), `strategies/` (which usable key to choose: the extension point), `pool` (leases, the FIFO
queue, one wake-up timer, cooldowns) and `metrics`. Time comes from `riskwatch.clock`, pacing from
`riskwatch.ratelimit`.
"""

from __future__ import annotations

from riskwatch_scheduler.keypool.errors import DeadlineExceeded, KeyPoolClosed, KeyPoolError, NoUsableKeys
from riskwatch_scheduler.keypool.lease import KeyLease, KeySnapshot, KeyState, Outcome, OutcomeKind
from riskwatch_scheduler.keypool.pool import KeyPool
from riskwatch_scheduler.keypool.strategies import (
    CandidateKey,
    LeastLoaded,
    RoundRobin,
    SelectionStrategy,
    Weighted,
    make_strategy,
)

__all__ = [
    "CandidateKey",
    "DeadlineExceeded",
    "KeyLease",
    "KeyPool",
    "KeyPoolClosed",
    "KeyPoolError",
    "KeySnapshot",
    "KeyState",
    "LeastLoaded",
    "NoUsableKeys",
    "Outcome",
    "OutcomeKind",
    "RoundRobin",
    "SelectionStrategy",
    "Weighted",
    "make_strategy",
]
