"""Access control units: token hashing and constant-time lookup, the role table, the Host and Origin allow-lists,
the safe-bind check, and the gRPC-web codec's linear decoding and grpc-timeout parsing."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from riskwatch.errors import ConfigError, Forbidden
from riskwatch_gateway.access import (
    Access,
    grpc_method_role,
    is_loopback,
    main,
    mint_token,
    require,
    token_hash,
)
from riskwatch_gateway.app import access_summary, check_exposure
from riskwatch_gateway.config import GatewayConfig, Role
from riskwatch_gateway.grpcweb import decode_text, parse_timeout

VIEWER, OPERATOR, ADMIN = "viewer-token", "operator-token", "admin-token"


def config(**fields: Any) -> GatewayConfig:
    tokens = [
        {"role": "viewer", "sha256": token_hash(VIEWER), "name": "wall screen"},
        {"role": "operator", "sha256": token_hash(OPERATOR)},
        {"role": "admin", "sha256": token_hash(ADMIN).upper()},  # hex case does not matter
    ]
    return GatewayConfig.model_validate({"access": {"tokens": tokens, **fields.pop("access", {})}, **fields})


def test_a_token_maps_to_its_role_and_anything_else_is_refused() -> None:
    access = Access(config())
    assert access.role_of(f"Bearer {VIEWER}") is Role.VIEWER
    assert access.role_of(f"bearer {OPERATOR}") is Role.OPERATOR
    assert access.role_of(None, query_token=ADMIN) is Role.ADMIN
    # the header wins over the query, and a wrong or empty token is refused
    assert access.role_of("Bearer nope", query_token=ADMIN) is None
    assert access.role_of(None) is None
    assert access.role_of("Bearer ") is None
    assert access.role_of(f"Basic {ADMIN}") is None
    # the hash of a token is not a token
    assert access.role_of(f"Bearer {token_hash(ADMIN)}") is None


def test_no_tokens_is_open_and_the_old_auth_token_is_an_admin_token() -> None:
    assert Access(GatewayConfig()).open and Access(GatewayConfig()).role_of(None) is Role.ADMIN
    legacy = Access(GatewayConfig.model_validate({"auth_token": "s3cret"}))
    assert not legacy.open
    assert legacy.role_of("Bearer s3cret") is Role.ADMIN and legacy.role_of(None) is None


def test_minted_tokens_are_random_and_their_hash_is_what_the_file_holds() -> None:
    token, digest = mint_token()
    assert len(base64.urlsafe_b64decode(token + "=")) == 32
    assert digest == token_hash(token) and len(digest) == 64
    assert mint_token()[0] != token
    access = Access(GatewayConfig.model_validate({"access": {"tokens": [{"role": "operator", "sha256": digest}]}}))
    assert access.role_of(f"Bearer {token}") is Role.OPERATOR


def test_the_mint_command_prints_a_token_and_its_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mint", "viewer", "lobby"]) == 0
    out = capsys.readouterr().out
    token = out.split("): ")[1].split()[0]
    assert f"sha256: {token_hash(token)}" in out and "role: viewer" in out
    assert main(["mint", "root"]) == 2


def test_a_stored_hash_must_be_a_sha256() -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        GatewayConfig.model_validate({"access": {"tokens": [{"role": "admin", "sha256": "plain-token"}]}})
    with pytest.raises(ValueError):
        GatewayConfig.model_validate({"access": {"tokens": [{"role": "root", "sha256": token_hash("x")}]}})


def test_the_role_table() -> None:
    service = "/riskwatch.v1.GatewayService/"
    assert grpc_method_role(service + "WatchCamera") is Role.VIEWER
    assert grpc_method_role(service + "ListCameras") is Role.VIEWER
    assert grpc_method_role(service + "PushFrames") is Role.OPERATOR
    assert grpc_method_role(service + "AddCamera") is Role.ADMIN
    assert grpc_method_role(service + "SomethingNew") is Role.ADMIN  # fail closed
    assert grpc_method_role("/grpc.health.v1.Health/Check") is None
    require(Role.ADMIN, Role.OPERATOR)
    require(Role.VIEWER, Role.VIEWER)
    with pytest.raises(Forbidden, match="admin"):
        require(Role.OPERATOR, Role.ADMIN)


def test_hosts_are_loopback_plus_configured_and_origins_are_checked_against_them() -> None:
    access = Access(config(access={"allowed_hosts": ["ops.example", "*.lan"]}, allowed_origins=["https://ui.example"]))
    for name in ("127.0.0.1", "localhost", "[::1]", "ops.example", "cam.lan"):
        assert access.host_ok(name), name
    assert not access.host_ok("evil.example")
    assert access.origin_ok(None, "anything")  # not a browser
    assert access.origin_ok("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert access.origin_ok("https://ui.example", "127.0.0.1:8000")
    # DNS rebinding: the page's origin and the Host header agree, but the name is not ours
    assert not access.origin_ok("http://evil.example:8000", "evil.example:8000")
    assert not access.origin_ok("http://localhost:9999", "localhost:8000")  # another local page
    bound = Access(GatewayConfig(http_host="192.168.1.5"))
    assert bound.host_ok("192.168.1.5") and not Access(GatewayConfig(http_host="0.0.0.0")).host_ok("0.0.0.0")


def test_binding_beyond_loopback_needs_tokens_or_allow_insecure() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    check_exposure(GatewayConfig())  # loopback, open: fine
    for exposed in ({"http_host": "0.0.0.0"}, {"grpc_host": "::"}):
        with pytest.raises(ConfigError, match="allow_insecure"):
            check_exposure(GatewayConfig.model_validate(exposed))
        check_exposure(GatewayConfig.model_validate({**exposed, "access": {"allow_insecure": True}}))
        check_exposure(config(**exposed))
    assert access_summary(GatewayConfig()).startswith("OPEN")
    assert "viewer" in access_summary(config())


def test_grpc_web_text_decodes_concatenated_padded_chunks() -> None:
    frames = [b"\x00\x00\x00\x00\x01a", b"\x00\x00\x00\x00\x02bc", b"\x80\x00\x00\x00\x00"]
    body = b"".join(base64.b64encode(f) for f in frames)
    assert decode_text(body) == b"".join(frames)
    assert decode_text(b"AAAA\r\nAAE=\n") == base64.b64decode("AAAAAAE=")
    for bad in (b"not base64!", b"AA=A", b"A===", b"AAAAA"):
        with pytest.raises(ValueError):
            decode_text(bad)


def test_grpc_web_text_decoding_is_linear() -> None:
    # 1 MiB of one-padded-chunk-after-another took 8.5 s with the quadratic decoder
    body = b"AAA=" * (256 * 1024)
    started = time.perf_counter()
    assert len(decode_text(body)) == 2 * 256 * 1024
    assert time.perf_counter() - started < 0.2


def test_grpc_timeout_is_parsed_by_the_wire_spec() -> None:
    assert parse_timeout(None) is None
    assert parse_timeout("1500m") == pytest.approx(1.5)
    assert parse_timeout("2S") == 2 and parse_timeout("1H") == 3600
    for bad in ("9" * 400 + "S", "123456789S", "10", "-1S", "1x", ""):
        with pytest.raises(ValueError, match="grpc-timeout"):
            parse_timeout(bad)
