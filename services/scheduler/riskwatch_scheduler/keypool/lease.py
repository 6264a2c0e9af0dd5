"""What callers hold and report: a lease on a key, how its call ended, and each key's state as dashboards see it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class KeyLease:
    """Permission to make one call with one key; give it back with `KeyPool.release`. Holds no secret."""

    key_id: str
    lease_id: int
    acquired_at: float


class OutcomeKind(StrEnum):
    SUCCESS = "success"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    AUTH_ERROR = "auth_error"
    OTHER_ERROR = "other_error"
    # the key answered, but not with the verdict asked for: a failure of the call that neither cools nor disables it
    INVALID_REPLY = "invalid_reply"
    # the call was given up by us (cancelled, or cut short by the task's deadline): says nothing about the key
    ABANDONED = "abandoned"


# Failures that say "not now" (the key cools down); an auth error says "never" (the key is disabled).
COOLING_OUTCOMES = frozenset({OutcomeKind.RATE_LIMITED, OutcomeKind.SERVER_ERROR, OutcomeKind.TIMEOUT})


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a call made under a lease ended."""

    kind: OutcomeKind
    retry_after: float | None = None

    @classmethod
    def success(cls) -> Outcome:
        return _SUCCESS

    @classmethod
    def rate_limited(cls, retry_after: float | None = None) -> Outcome:
        return cls(OutcomeKind.RATE_LIMITED, retry_after)

    @classmethod
    def server_error(cls) -> Outcome:
        return _SERVER_ERROR

    @classmethod
    def timeout(cls) -> Outcome:
        return _TIMEOUT

    @classmethod
    def auth_error(cls) -> Outcome:
        return _AUTH_ERROR

    @classmethod
    def other_error(cls) -> Outcome:
        return _OTHER_ERROR

    @classmethod
    def invalid_reply(cls) -> Outcome:
        return _INVALID_REPLY

    @classmethod
    def abandoned(cls) -> Outcome:
        return _ABANDONED


_SUCCESS = Outcome(OutcomeKind.SUCCESS)
_SERVER_ERROR = Outcome(OutcomeKind.SERVER_ERROR)
_TIMEOUT = Outcome(OutcomeKind.TIMEOUT)
_AUTH_ERROR = Outcome(OutcomeKind.AUTH_ERROR)
_OTHER_ERROR = Outcome(OutcomeKind.OTHER_ERROR)
_INVALID_REPLY = Outcome(OutcomeKind.INVALID_REPLY)
_ABANDONED = Outcome(OutcomeKind.ABANDONED)


class KeyState(StrEnum):
    ENABLED = "enabled"
    COOLING = "cooling"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """One key's state for dashboards and metrics (never its secret)."""

    key_id: str
    state: KeyState
    priority: int
    cooldown_remaining: float
    in_flight: int
    calls_last_minute: int
    successes: int
    failures: int
    consecutive_failures: int
    success_rate: float | None  # over the last minute; None when there were no completed calls
