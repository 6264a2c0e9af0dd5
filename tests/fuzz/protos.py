"""Strategies for protobuf records: well-formed messages with random contents, and records that are not."""

from __future__ import annotations

from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from riskwatch.v1 import detector_pb2, events_pb2, gateway_pb2
from tests.fuzz.support import mutate

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),  # proto3 enums are open: unknown values decode
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        small = st.integers(-5, 5) if low < 0 else st.integers(0, 5)
        if kind == FieldDescriptor.TYPE_ENUM:
            small = st.sampled_from([v.number for v in field.enum_type.values])
        return small | st.integers(low, high)
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=20)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    raise AssertionError(f"unhandled field type {kind} of {field.full_name}")


@st.composite
def message_contents(draw: st.DrawFn, descriptor: Descriptor, required: tuple[str, ...] = (), depth: int = 0) -> bytes:
    """A serialized `descriptor` message with random values in a random subset of its fields."""
    message: Message = _message_class(descriptor)()
    _fill(draw, message, depth)
    for name in required:
        if not getattr(message, name):
            setattr(message, name, draw(st.text(min_size=1, max_size=12)))
    return message.SerializeToString()


def _fill(draw: st.DrawFn, message: Message, depth: int) -> None:
    for field in message.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            for _ in range(draw(st.integers(0, 3)) if repeated else 1):
                child = getattr(message, field.name).add() if repeated else getattr(message, field.name)
                _fill(draw, child, depth + 1)
                if not repeated:
                    child.SetInParent()
        elif repeated:
            getattr(message, field.name).extend(draw(st.lists(_scalar(field), max_size=4)))
        else:
            setattr(message, field.name, draw(_scalar(field)))


def _message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


OTHER_MESSAGES = [
    events_pb2.DetectionEvent.DESCRIPTOR,
    events_pb2.AssessmentTask.DESCRIPTOR,
    events_pb2.AssessmentResult.DESCRIPTOR,
    events_pb2.CameraRiskState.DESCRIPTOR,
    detector_pb2.Frame.DESCRIPTOR,
    gateway_pb2.DESCRIPTOR.message_types_by_name[next(iter(gateway_pb2.DESCRIPTOR.message_types_by_name))],
]


@st.composite
def bad_records(draw: st.DrawFn, valid: st.SearchStrategy[bytes], descriptor: Descriptor) -> bytes:
    """Bytes from outside: random, truncated or mutated valid messages, other message types, deep nesting."""
    kind = draw(st.sampled_from(["random", "truncated", "mutated", "other-type", "nested", "empty"]))
    if kind == "random":
        return draw(st.binary(max_size=256))
    if kind == "truncated":
        data = draw(valid)
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "mutated":
        return mutate(draw(valid), draw)
    if kind == "other-type":
        other = draw(st.sampled_from([d for d in OTHER_MESSAGES if d is not descriptor]))
        return draw(message_contents(other))
    if kind == "nested":
        # A length-delimited field inside itself, deeper than any decoder's recursion limit.
        depth = draw(st.integers(50, 2000))
        data = b""
        for _ in range(depth):
            data = b"\x0a" + _varint(len(data)) + data
        return b"\x3a" + _varint(len(data)) + data
    return b""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
