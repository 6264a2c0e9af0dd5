"""Failure kinds: why an assessment produced no verdict, as the scheduler names them and the proto FailureKind."""

from __future__ import annotations

from enum import StrEnum

from riskwatch.v1 import events_pb2


class FailureKind(StrEnum):
    """The kind of a typed failure; the value is the name on metrics, in logs and in the gateway's alert JSON."""

    # A failure whose producer gave no kind; the scheduler never sends it.
    UNSPECIFIED = "unspecified"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INVALID_REPLY = "invalid_reply"
    NO_USABLE_KEYS = "no_usable_keys"
    LLM_ERROR = "llm_error"

    @property
    def proto(self) -> events_pb2.FailureKind.ValueType:
        return _TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> FailureKind:
        """The kind of a proto FailureKind; ValueError for a number this build does not know."""
        try:
            return _FROM_PROTO[value]
        except KeyError:
            raise ValueError(f"unknown FailureKind {value}") from None


_TO_PROTO: dict[FailureKind, events_pb2.FailureKind.ValueType] = {
    FailureKind.UNSPECIFIED: events_pb2.FAILURE_KIND_UNSPECIFIED,
    FailureKind.DEADLINE_EXCEEDED: events_pb2.FAILURE_KIND_DEADLINE_EXCEEDED,
    FailureKind.INVALID_REPLY: events_pb2.FAILURE_KIND_INVALID_REPLY,
    FailureKind.NO_USABLE_KEYS: events_pb2.FAILURE_KIND_NO_USABLE_KEYS,
    FailureKind.LLM_ERROR: events_pb2.FAILURE_KIND_LLM_ERROR,
}
_FROM_PROTO: dict[int, FailureKind] = {int(proto): kind for kind, proto in _TO_PROTO.items()}
