"""The gRPC-web parsers and the bearer parser: any input decodes or ends in ValueError, never another exception,
and well-formed input (padded base64 chunks, whitespace anywhere) decodes to exactly what was encoded."""

from __future__ import annotations

import base64

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from riskwatch_gateway.access import bearer_token
from riskwatch_gateway.grpcweb import decode_text, parse_timeout
from tests.fuzz.support import fuzz_settings

chunks = st.lists(st.binary(max_size=64), max_size=12)
whitespace = st.sampled_from([b"", b"", b"\n", b"\r\n", b" ", b"\t"])


@fuzz_settings()
@given(chunks, st.data())
def test_concatenated_padded_chunks_decode_to_what_was_encoded(parts: list[bytes], data: st.DataObject) -> None:
    body = b"".join(base64.b64encode(part) + data.draw(whitespace) for part in parts)
    assert decode_text(body) == b"".join(parts)


@fuzz_settings(examples=200)
@given(st.binary(max_size=256) | st.text(alphabet="AQgw=+/ \n", max_size=64).map(str.encode))
@example(b"AAA=" * 64)
@example(b"====")
def test_any_body_decodes_or_is_a_value_error(body: bytes) -> None:
    try:
        decoded = decode_text(body)
    except ValueError:
        return
    assert len(decoded) <= len(body) * 3 // 4


@fuzz_settings(examples=200)
@given(st.text(max_size=40) | st.from_regex(r"[0-9]{0,12}[HMSmunx]?", fullmatch=True))
@example("9" * 400 + "S")
def test_any_grpc_timeout_is_seconds_or_a_value_error(value: str) -> None:
    try:
        seconds = parse_timeout(value)
    except ValueError:
        return
    assert seconds is not None and 0 <= seconds <= 99_999_999 * 3600


@fuzz_settings(examples=200)
@given(st.none() | st.text(max_size=60))
def test_the_bearer_parser_takes_any_header(header: str | None) -> None:
    token = bearer_token(header)
    if token is not None:
        assert header is not None and header.lower().startswith("bearer")


@pytest.mark.parametrize("header", ["Bearer abc", "bearer  abc ", "BEARER abc"])
def test_bearer_is_case_insensitive_and_trimmed(header: str) -> None:
    assert bearer_token(header) == "abc"
