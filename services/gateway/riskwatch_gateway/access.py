"""Access control shared by REST, WebSocket and gRPC: the optional token and the browser origin allow-list."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from riskwatch_gateway.config import GatewayConfig


class Access:
    def __init__(self, settings: GatewayConfig) -> None:
        self._token = settings.auth_token.get_secret_value() if settings.auth_token else None
        self._origins = {o.rstrip("/") for o in settings.allowed_origins}

    @property
    def token_required(self) -> bool:
        return self._token is not None

    @property
    def any_origin(self) -> bool:
        return "*" in self._origins

    @property
    def cross_origins(self) -> list[str]:
        return sorted(self._origins)

    def token_ok(self, authorization: str | None, query_token: str | None) -> bool:
        """True when no token is configured, or `Authorization: Bearer <token>` / `?token=` matches."""
        if self._token is None:
            return True
        presented = query_token
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer":
                presented = value.strip()
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
