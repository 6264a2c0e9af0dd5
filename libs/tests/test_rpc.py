"""The shared gRPC server: errors get their table's status on unary and streaming calls; health follows set_serving."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from riskwatch import rpc
from riskwatch.errors import UnknownCamera

SERVICE = "test.v1.Probe"


def _handlers(server: grpc.aio.Server) -> None:
    async def unary(request: bytes, context: Any) -> bytes:
        if request == b"unknown":
            raise UnknownCamera("unknown camera 'x'")
        if request == b"bug":
            raise KeyError("secret internals")
        return request

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"first"
        raise UnknownCamera("camera 'x' was removed")

    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Echo": grpc.unary_unary_rpc_method_handler(unary),
                    "Watch": grpc.unary_stream_rpc_method_handler(stream),
                },
            ),
        )
    )


async def _denied(method: str, context: Any) -> None:
    if method.endswith("/Echo") and dict(context.invocation_metadata() or ()).get("token") == "wrong":
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong token")


@pytest.fixture
async def channel() -> AsyncIterator[tuple[grpc.aio.Channel, grpc.aio.Server]]:
    server, port = rpc.create_server("127.0.0.1:0", [SERVICE], _handlers, guard=_denied)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield ch, server
    finally:
        await server.stop(0)


async def test_unary_errors_map_through_the_error_table(
    channel: tuple[grpc.aio.Channel, grpc.aio.Server], caplog: pytest.LogCaptureFixture
) -> None:
    ch, _ = channel
    echo = ch.unary_unary(f"/{SERVICE}/Echo")
    assert await echo(b"hello") == b"hello"
    with pytest.raises(grpc.aio.AioRpcError) as known:
        await echo(b"unknown")
    assert known.value.code() == grpc.StatusCode.NOT_FOUND and known.value.details() == "unknown camera 'x'"
    with caplog.at_level(logging.ERROR, logger="riskwatch.rpc"), pytest.raises(grpc.aio.AioRpcError) as bug:
        await echo(b"bug")
    # A bug's text stays out of the reply but is logged with the method.
    assert bug.value.code() == grpc.StatusCode.INTERNAL and bug.value.details() == "internal error"
    assert any(f"/{SERVICE}/Echo" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_a_streaming_error_ends_the_stream_with_its_status(
    channel: tuple[grpc.aio.Channel, grpc.aio.Server],
) -> None:
    ch, _ = channel
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for message in ch.unary_stream(f"/{SERVICE}/Watch")(b""):
            received.append(message)
    assert received == [b"first"]
    assert error.value.code() == grpc.StatusCode.NOT_FOUND and "removed" in (error.value.details() or "")


async def test_the_guard_runs_first_and_its_abort_is_kept(channel: tuple[grpc.aio.Channel, grpc.aio.Server]) -> None:
    ch, _ = channel
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await ch.unary_unary(f"/{SERVICE}/Echo")(b"hello", metadata=(("token", "wrong"),))
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED and error.value.details() == "wrong token"


async def test_health_follows_set_serving(channel: tuple[grpc.aio.Channel, grpc.aio.Server]) -> None:
    ch, server = channel
    stub = health_pb2_grpc.HealthStub(ch)
    for serving, status in (
        (True, health_pb2.HealthCheckResponse.SERVING),
        (False, health_pb2.HealthCheckResponse.NOT_SERVING),
    ):
        await rpc.set_serving(server, serving)
        for name in ("", SERVICE):
            assert (await stub.Check(health_pb2.HealthCheckRequest(service=name))).status == status


async def test_a_port_in_use_is_an_error() -> None:
    no_reuse = [("grpc.so_reuseport", 0)]
    server, port = rpc.create_server("127.0.0.1:0", [SERVICE], _handlers, options=no_reuse)
    await server.start()
    try:
        with pytest.raises(OSError, match="cannot listen"):
            rpc.create_server(f"127.0.0.1:{port}", [SERVICE], _handlers, options=no_reuse)
    finally:
        await server.stop(0)
