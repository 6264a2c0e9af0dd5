"""The gRPC server: GatewayService, health checking, reflection, and one interceptor that checks the token
and maps riskwatch errors to status codes."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from riskwatch.errors import CameraExists, DecodeError, NotPushCamera, RiskwatchError, Unavailable, UnknownCamera
from riskwatch.v1 import gateway_pb2, gateway_pb2_grpc
from riskwatch_gateway.cameras import InvalidCamera
from riskwatch_gateway.config import GatewayConfig

GATEWAY_SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
# Probes and grpcurl's discovery work without the token.
OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


def status_for(exc: RiskwatchError) -> grpc.StatusCode:
    if isinstance(exc, UnknownCamera):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, CameraExists):
        return grpc.StatusCode.ALREADY_EXISTS
    if isinstance(exc, (InvalidCamera, DecodeError)):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, NotPushCamera):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, Unavailable):
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.INTERNAL


def token_matches(presented: str | None, expected: str) -> bool:
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def bearer(value: str | None) -> str | None:
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Checks `authorization: Bearer <token>` (when configured) and turns RiskwatchError into a status."""

    def __init__(self, token: str | None) -> None:
        self._token = token

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        return wrap_handler(handler, None if method.startswith(OPEN_PREFIXES) else self._token)


UNAUTHENTICATED_MESSAGE = "missing or wrong token: send metadata 'authorization: Bearer <token>'"


def _authorized(context: grpc.aio.ServicerContext, token: str | None) -> bool:
    if token is None:
        return True
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization":
            return token_matches(bearer(value), token)
    return False


async def _abort_for(exc: RiskwatchError, context: grpc.aio.ServicerContext) -> None:
    await context.abort(status_for(exc), str(exc))


def wrap_handler(handler: grpc.RpcMethodHandler, token: str | None) -> grpc.RpcMethodHandler:
    """The same handler with the token checked first and RiskwatchError mapped to a status code.
    Used by the gRPC server's interceptor and by the gRPC-web app (which has no interceptors)."""
    if handler.unary_unary is not None:
        inner = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if not _authorized(context, token):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
            try:
                return await inner(request, context)
            except RiskwatchError as exc:
                await _abort_for(exc, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _guarded_stream(handler.unary_stream, token), handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _guarded_stream(handler.stream_stream, token), handler.request_deserializer, handler.response_serializer
        )
    return handler


def _guarded_stream(inner: Any, token: str | None) -> Any:
    """A response-streaming method (its input a request or a request stream) behind the token check."""

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if not _authorized(context, token):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        try:
            async for response in inner(request, context):
                yield response
        except RiskwatchError as exc:
            await _abort_for(exc, context)

    return stream


def create_server(
    settings: GatewayConfig, servicer: gateway_pb2_grpc.GatewayServiceServicer
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A started-ready (not yet started) gRPC server bound to settings.grpc_host:grpc_port; port 0 picks one."""
    token = settings.auth_token.get_secret_value() if settings.auth_token else None
    server = grpc.aio.server(
        interceptors=[ErrorInterceptor(token)],
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((GATEWAY_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    if port == 0:
        raise OSError(f"cannot listen for gRPC on {settings.grpc_host}:{settings.grpc_port}")
    return server, port, health_servicer


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", GATEWAY_SERVICE):
        await health_servicer.set(service, status)
