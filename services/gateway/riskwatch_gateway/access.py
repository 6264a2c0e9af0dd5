"""Access control shared by REST, WebSocket, gRPC and gRPC-web: the optional token (parsed here, once) and the
browser origin allow-list."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit

from riskwatch_gateway.config import GatewayConfig


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


class Access:
    def __init__(self, settings: GatewayConfig) -> None:
        self._token = settings.auth_token.get_secret_value() if settings.auth_token else None
        self._origins = {o.rstrip("/") for o in settings.allowed_origins}

    @property
    def any_origin(self) -> bool:
        return "*" in self._origins

    @property
    def cross_origins(self) -> list[str]:
        return sorted(self._origins)

    def token_ok(self, authorization: str | None, query_token: str | None = None) -> bool:
        """True when no token is configured, or `Authorization: Bearer <token>` / `?token=` matches."""
        if self._token is None:
            return True
        bearer = bearer_token(authorization)
        presented = bearer if bearer is not None else query_token
        if not presented:
            return False
        return hmac.compare_digest(presented.encode(), self._token.encode())

    def origin_ok(self, origin: str | None, host: str | None) -> bool:
        """Non-browser clients send no Origin; browsers must be same-origin or on the allow-list."""
        if not origin:
            return True
        origin = origin.rstrip("/")
        if self.any_origin or origin in self._origins:
            return True
        return bool(host) and urlsplit(origin).netloc.lower() == (host or "").lower()
