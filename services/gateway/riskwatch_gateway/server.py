"""The gateway's gRPC server: GatewayService on the shared recipe (riskwatch.rpc: health, reflection, errors mapped
to statuses by one interceptor), with the token and role checked first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from riskwatch import rpc
from riskwatch.errors import Forbidden
from riskwatch.v1 import gateway_pb2, gateway_pb2_grpc
from riskwatch_gateway.access import UNAUTHENTICATED_MESSAGE, Access, authorization_of, grpc_method_role, require
from riskwatch_gateway.config import GatewayConfig

GATEWAY_SERVICE = rpc.service_name(gateway_pb2.DESCRIPTOR, "GatewayService")
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class GatewayDeps:
    """What the gRPC server serves."""

    servicer: gateway_pb2_grpc.GatewayServiceServicer


def access_guard(access: Access) -> rpc.Guard:
    """The one gRPC guard, used by the gRPC server and by gRPC-web: the caller's token (metadata
    `authorization: Bearer <token>`) and the role its method needs (access.GRPC_METHOD_ROLES); health and
    reflection stay open."""

    async def guard(method: str, context: Any) -> None:
        needed = grpc_method_role(method)
        if needed is None:
            return
        role = access.role_of(authorization_of(context.invocation_metadata()))
        if role is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
            return  # abort raises; this tells the type checker
        try:
            require(role, needed)
        except Forbidden as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))

    return guard


def create_server(settings: GatewayConfig, deps: GatewayDeps) -> tuple[grpc.aio.Server, int]:
    """A server (not yet started) bound to settings.grpc_host:grpc_port (0 picks a port); returns it and the port."""
    return rpc.create_server(
        f"{settings.grpc_host}:{settings.grpc_port}",
        [GATEWAY_SERVICE],
        lambda server: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(deps.servicer, server),
        guard=access_guard(Access(settings)),
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
