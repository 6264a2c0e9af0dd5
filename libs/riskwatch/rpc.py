"""The one gRPC server recipe: grpc.aio with the standard health servicer, server reflection, and one interceptor
that turns every exception a handler raises into its status through riskwatch.errors (unary and streaming alike)."""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from riskwatch.errors import RiskwatchError, client_message, grpc_status

log = logging.getLogger(__name__)

# Runs before each handler with the method's full name and the call's context; it may abort (e.g. a bad token).
Guard = Callable[[str, Any], Awaitable[None]]

_HEALTH: weakref.WeakKeyDictionary[grpc.aio.Server, tuple[health.aio.HealthServicer, tuple[str, ...]]] = (
    weakref.WeakKeyDictionary()
)


async def abort_for(error: Exception, method: str, context: Any) -> NoReturn:
    """End the call with `error`'s status and client message; a bug is logged with the method and peer first."""
    if isinstance(error, grpc.aio.AbortError):  # the handler aborted itself: its status is already set
        raise error
    if not isinstance(error, RiskwatchError):
        log.error("gRPC %s from %s failed unexpectedly", method, context.peer(), exc_info=error)
    await context.abort(grpc_status(error), client_message(error))
    raise AssertionError("context.abort returned")  # it always raises


def guard_handler(handler: grpc.RpcMethodHandler, method: str, guard: Guard | None = None) -> grpc.RpcMethodHandler:
    """The same handler with `guard` run first and every exception mapped by `abort_for`.

    Used by the server's interceptor and by servers that have no interceptors (the gateway's gRPC-web)."""
    serializers = (handler.request_deserializer, handler.response_serializer)
    if handler.unary_unary is not None or handler.stream_unary is not None:
        unary = handler.unary_unary or handler.stream_unary

        async def answer(request: Any, context: Any) -> Any:
            if guard is not None:
                await guard(method, context)
            try:
                return await unary(request, context)
            except Exception as exc:
                await abort_for(exc, method, context)

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(answer, *serializers)
        return grpc.stream_unary_rpc_method_handler(answer, *serializers)
    streaming = handler.unary_stream or handler.stream_stream
    if streaming is None:
        return handler

    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        if guard is not None:
            await guard(method, context)
        try:
            async for response in streaming(request, context):
                yield response
        except Exception as exc:
            await abort_for(exc, method, context)

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream, *serializers)
    return grpc.stream_stream_rpc_method_handler(stream, *serializers)


class StatusInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints
    """The one interceptor: `guard` first, then errors mapped to statuses, for every method of the server."""

    def __init__(self, guard: Guard | None = None) -> None:
        self._guard = guard

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        return guard_handler(handler, details.method, self._guard)


def service_name(file_descriptor: Any, service: str) -> str:
    """The full name of `service` in a generated `*_pb2` module's DESCRIPTOR, e.g. riskwatch.v1.DetectorService."""
    name: str = file_descriptor.services_by_name[service].full_name
    return name


def create_server(
    address: str,
    services: Sequence[str],
    register: Callable[[grpc.aio.Server], None],
    *,
    guard: Guard | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> tuple[grpc.aio.Server, int]:
    """A server (not yet started) with `register`'s servicers, health and reflection, bound to `address`
    ("host:port"; port 0 picks a free one). Returns it and the bound port; raises OSError if it cannot bind."""
    server = grpc.aio.server(interceptors=[StatusInterceptor(guard)], options=list(options))
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*services, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc's "Failed to bind to address"
        raise OSError(f"cannot listen for gRPC on {address}: {exc}") from exc
    if port == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    _HEALTH[server] = (health_servicer, tuple(services))
    return server, port


async def set_serving(server: grpc.aio.Server, serving: bool) -> None:
    """Health status of the whole server ("") and of each of its services."""
    health_servicer, services = _HEALTH[server]
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *services):
        await health_servicer.set(name, status)
