"""The gateway's gRPC server: GatewayService on the shared recipe (riskwatch.rpc: health, reflection, errors mapped
to statuses by one interceptor), with the token checked first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from riskwatch import rpc
from riskwatch.v1 import gateway_pb2, gateway_pb2_grpc
from riskwatch_gateway.access import Access, authorization_of
from riskwatch_gateway.config import GatewayConfig

GATEWAY_SERVICE = rpc.service_name(gateway_pb2.DESCRIPTOR, "GatewayService")
# Probes and grpcurl's discovery work without the token.
OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
UNAUTHENTICATED_MESSAGE = "missing or wrong token: send metadata 'authorization: Bearer <token>'"


@dataclass(frozen=True, slots=True)
class GatewayDeps:
    """What the gRPC server serves."""

    servicer: gateway_pb2_grpc.GatewayServiceServicer


def token_guard(access: Access) -> rpc.Guard:
    """Checks `authorization: Bearer <token>` (when configured) before every method but health and reflection;
    used by the gRPC server and by gRPC-web."""

    async def guard(method: str, context: Any) -> None:
        if method.startswith(OPEN_PREFIXES):
            return
        if not access.token_ok(authorization_of(context.invocation_metadata())):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)

    return guard


def create_server(settings: GatewayConfig, deps: GatewayDeps) -> tuple[grpc.aio.Server, int]:
    """A server (not yet started) bound to settings.grpc_host:grpc_port (0 picks a port); returns it and the port."""
    return rpc.create_server(
        f"{settings.grpc_host}:{settings.grpc_port}",
        [GATEWAY_SERVICE],
        lambda server: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(deps.servicer, server),
        guard=token_guard(Access(settings)),
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
