"""The one exception root of riskwatch, its specific subclasses, and the one table of their gRPC and HTTP statuses.

Every server maps errors through `grpc_status` / `http_status` (the gRPC interceptor, gRPC-web and the REST
exception handlers alike), so an error means the same thing on every protocol. Anything that is not a
RiskwatchError is a bug: INTERNAL / 500, with its text kept out of the reply.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import ClassVar

import grpc


class RiskwatchError(Exception):
    """Base of every error riskwatch raises on purpose."""

    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_code: ClassVar[HTTPStatus] = HTTPStatus.INTERNAL_SERVER_ERROR


class ConfigError(RiskwatchError):
    """Configuration is invalid; the message names the file (or variable), the field and the reason."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_code = HTTPStatus.INTERNAL_SERVER_ERROR


class PortInUse(ConfigError):
    """A listener cannot bind its address (another process holds the port); the message names the setting that
    moves it, so a second start while the first still runs ends in one line, not a traceback."""

    def __init__(self, what: str, host: str, port: int, setting: str) -> None:
        super().__init__(f"{what}: cannot listen on {host}:{port} (port in use or address unavailable); {setting}")


class DecodeError(RiskwatchError):
    """Bytes from outside (a Kafka record, a frame, a client message) could not be decoded."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_code = HTTPStatus.BAD_REQUEST


class InvalidFrame(DecodeError):
    """An image that is empty, corrupt or too large to process."""


class InvalidRequest(RiskwatchError):
    """A client request that does not validate (a bad camera id, source, fps or field); the message says which."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_code = HTTPStatus.BAD_REQUEST


class FrameDropped(RiskwatchError):
    """A newer frame of the same camera arrived before this one reached the model (latest-only per camera)."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_code = HTTPStatus.TOO_MANY_REQUESTS


class LimitReached(RiskwatchError):
    """A configured limit (open streams, push cameras, bytes of waiting frames) is reached; try again later."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_code = HTTPStatus.TOO_MANY_REQUESTS


class UnknownCamera(RiskwatchError):
    """A camera id that the gateway does not know."""

    grpc_code = grpc.StatusCode.NOT_FOUND
    http_code = HTTPStatus.NOT_FOUND


class CameraExists(RiskwatchError):
    """A camera with this id is already registered."""

    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    http_code = HTTPStatus.CONFLICT


class NotPushCamera(RiskwatchError):
    """Frames were pushed for a camera that reads its own source."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_code = HTTPStatus.CONFLICT


class BusFailed(RiskwatchError):
    """The event bus client cannot go on (e.g. a consumer fenced by a newer member with its instance id)."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_code = HTTPStatus.SERVICE_UNAVAILABLE


class Unavailable(RiskwatchError):
    """A dependency (broker, cache, model) cannot be reached right now; retrying later may help."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_code = HTTPStatus.SERVICE_UNAVAILABLE


class Unauthenticated(RiskwatchError):
    """No token, or a token the gateway does not know."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_code = HTTPStatus.UNAUTHORIZED


class Forbidden(RiskwatchError):
    """A known token whose role does not allow this action (e.g. a viewer adding a camera)."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_code = HTTPStatus.FORBIDDEN


def grpc_status(error: BaseException) -> grpc.StatusCode:
    """The gRPC status a client sees for `error` (INTERNAL for anything that is not a RiskwatchError)."""
    return error.grpc_code if isinstance(error, RiskwatchError) else grpc.StatusCode.INTERNAL


def http_status(error: BaseException) -> HTTPStatus:
    """The HTTP status a client sees for `error` (500 for anything that is not a RiskwatchError)."""
    return error.http_code if isinstance(error, RiskwatchError) else HTTPStatus.INTERNAL_SERVER_ERROR


def client_message(error: BaseException) -> str:
    """What a client may be told: a RiskwatchError's own message, never a bug's text (it may hold internals)."""
    return str(error) if isinstance(error, RiskwatchError) else "internal error"
