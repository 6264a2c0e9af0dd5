"""Access control shared by REST, WebSocket, gRPC and gRPC-web: the one bearer parser, hashed role tokens
compared in constant time, the role each action needs, and the Host and Origin allow-lists.

Tokens are 32 random bytes (`mint_token`), so a plain SHA-256 of them is enough at rest: a slow password hash
(bcrypt, argon2) protects guessable secrets, and nobody can guess 256 random bits; a fast hash also keeps checking
a token per request cheap. Run `python -m riskwatch_gateway.access mint <role> [name]` for a token and its entry."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from riskwatch.errors import Forbidden
from riskwatch_gateway.config import GatewayConfig, Role

# Host names every gateway answers to (as Starlette's TrustedHostMiddleware writes them: IPv6 in brackets).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
# Where AccessMiddleware leaves the caller's role in the ASGI scope.
ROLE_SCOPE_KEY = "riskwatch.role"
UNAUTHENTICATED_MESSAGE = "missing or wrong token: send 'authorization: Bearer <token>' (HTTP header or gRPC metadata)"

_GATEWAY = "/riskwatch.v1.GatewayService/"
# The role each gRPC (and gRPC-web) method needs; a GatewayService method missing here needs admin (fail closed).
GRPC_METHOD_ROLES: dict[str, Role] = {
    _GATEWAY + "ListCameras": Role.VIEWER,
    _GATEWAY + "GetCameraState": Role.VIEWER,
    _GATEWAY + "WatchCamera": Role.VIEWER,
    _GATEWAY + "PushFrames": Role.OPERATOR,
    _GATEWAY + "AddCamera": Role.ADMIN,
    _GATEWAY + "RemoveCamera": Role.ADMIN,
    _GATEWAY + "GetCalibration": Role.VIEWER,
    _GATEWAY + "SetCalibration": Role.ADMIN,
    _GATEWAY + "DeleteCalibration": Role.ADMIN,
}
# Probes and grpcurl's discovery work without a token.
OPEN_GRPC_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
# The role each WebSocket command needs; one missing here needs viewer (watching is what the WebSocket is for).
WS_COMMAND_ROLES: dict[str, Role] = {"add_camera": Role.ADMIN, "remove_camera": Role.ADMIN}


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value; None for another scheme or no header."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def authorization_of(metadata: Iterable[tuple[str, str]] | None) -> str | None:
    """The `authorization` entry of gRPC (or gRPC-web) call metadata."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            return value
    return None


def token_hash(token: str) -> str:
    """What config/gateway.yaml stores for a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def mint_token() -> tuple[str, str]:
    """A new random token (32 bytes, URL-safe) and its hash."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def grpc_method_role(method: str) -> Role | None:
    """The role a gRPC method needs; None for the open ones (health, reflection)."""
    if method.startswith(OPEN_GRPC_PREFIXES):
        return None
    return GRPC_METHOD_ROLES.get(method, Role.ADMIN)


def require(role: Role, needed: Role) -> None:
    """Raise Forbidden unless `role` may do what `needed` allows."""
    if role.rank < needed.rank:
        raise Forbidden(f"this needs the {needed.value} role; this token is {role.value}")


def requires(
    needed: Role, endpoint: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    """A REST endpoint that answers 403 unless AccessMiddleware found a role of at least `needed`."""

    async def guarded(request: Request) -> Response:
        require(request.scope.get(ROLE_SCOPE_KEY, Role.VIEWER), needed)
        return await endpoint(request)

    return guarded


@dataclass(frozen=True, slots=True)
class _Token:
    digest: bytes
    role: Role


class Access:
    """The gateway's tokens and allow-lists, from its settings."""

    def __init__(self, settings: GatewayConfig) -> None:
        tokens = [_Token(bytes.fromhex(t.sha256), t.role) for t in settings.access.tokens]
        if settings.auth_token is not None:
            legacy = token_hash(settings.auth_token.get_secret_value())
            tokens.append(_Token(bytes.fromhex(legacy), Role.ADMIN))
        self._tokens = tuple(tokens)
        self._origins = {o.rstrip("/") for o in settings.allowed_origins}
        hosts = [*LOOPBACK_HOSTS, *(h.lower() for h in settings.access.allowed_hosts)]
        for bind in (settings.http_host, settings.grpc_host):
            if not is_wildcard(bind):
                hosts.append(f"[{bind}]" if ":" in bind else bind.lower())
        self.allowed_hosts = tuple(dict.fromkeys(hosts))

    @property
    def open(self) -> bool:
        """No token configured: every client is admin."""
        return not self._tokens

    @property
    def any_origin(self) -> bool:
        return "*" in self._origins

    @property
    def cross_origins(self) -> list[str]:
        return sorted(self._origins)

    def role_of(self, authorization: str | None, query_token: str | None = None) -> Role | None:
        """The role of the presented token (`Authorization: Bearer` first, else `?token=`); None when refused.

        Every configured hash is compared, in constant time, whatever matches, so timing tells nothing."""
        if self.open:
            return Role.ADMIN
        bearer = bearer_token(authorization)
        presented = bearer if bearer is not None else query_token
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found: Role | None = None
        for token in self._tokens:
            if hmac.compare_digest(digest, token.digest) and (found is None or token.role.rank > found.rank):
                found = token.role
        return found

    def origin_ok(self, origin: str | None, host: str | None) -> bool:
        """Non-browser clients send no Origin; a browser's must be on allowed_origins, or be the page's own
        origin on an allowed host (the Host header alone proves nothing: DNS rebinding sets it)."""
        if not origin:
            return True
        origin = origin.rstrip("/")
        if self.any_origin or origin in self._origins:
            return True
        parts = urlsplit(origin)
        name = parts.hostname or ""
        name = f"[{name}]" if ":" in name else name
        return self.host_ok(name) and bool(host) and parts.netloc.lower() == (host or "").lower()

    def host_ok(self, name: str) -> bool:
        """`name` (no port; IPv6 in brackets) is on the Host allow-list, as TrustedHostMiddleware matches it."""
        name = name.lower()
        return any(
            pattern in ("*", name) or (pattern.startswith("*") and name.endswith(pattern[1:]))
            for pattern in self.allowed_hosts
        )


def is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "[::]")


def is_loopback(host: str) -> bool:
    """A bind address only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def main(argv: list[str]) -> int:
    """`python -m riskwatch_gateway.access mint <role> [name]`: a new token and its gateway.yaml entry."""
    if len(argv) not in (2, 3) or argv[0] != "mint" or argv[1] not in {r.value for r in Role}:
        roles = "|".join(r.value for r in Role)
        print(f"usage: python -m riskwatch_gateway.access mint {{{roles}}} [name]", file=sys.stderr)
        return 2
    token, digest = mint_token()
    name = argv[2] if len(argv) == 3 else argv[1]
    print(f"token (give it to the client, store it nowhere else): {token}")
    print("config/gateway.yaml, under access.tokens:")
    print(f"  - {{role: {argv[1]}, name: {name}, sha256: {digest}}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
