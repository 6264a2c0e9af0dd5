"""gRPC-web for browsers, served on the HTTP port with the same servicer as the gRPC server.

The gRPC-web wire format (length-prefixed messages, a final trailer frame, optional base64 "-text" bodies) is
small enough to implement directly on ASGI; this keeps one servicer and one error mapping for both gRPC and
gRPC-web. gRPC-web has no client streaming, so ListCameras, AddCamera, RemoveCamera, GetCameraState and
WatchCamera are served; PushFrames needs real gRPC."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any, NamedTuple, NoReturn
from urllib.parse import quote

import grpc
import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from riskwatch import rpc
from riskwatch.v1 import gateway_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_PREFIX = "/riskwatch.v1.GatewayService/"
TRAILER_FLAG = 0x80
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_PAD = ord("=")
# The gRPC wire spec: TimeoutValue is at most 8 ASCII digits, then the unit.
_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")


class _CallDetails(NamedTuple):
    method: str
    invocation_metadata: Sequence[tuple[str, str]]


class _Aborted(grpc.aio.AbortError):  # type: ignore[misc]  # grpc ships no type hints
    """context.abort(): an AbortError, so riskwatch.rpc passes it through as a status already set."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class WebContext:
    """The part of grpc.aio.ServicerContext the gateway's handlers use."""

    def __init__(self, metadata: list[tuple[str, str]], peer: str) -> None:
        self._metadata = metadata
        self._peer = peer
        self.code = grpc.StatusCode.OK
        self.details = ""

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self._metadata

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise _Aborted(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def peer(self) -> str:
        return self._peer


def _frame(flag: int, payload: bytes) -> bytes:
    return struct.pack(">BI", flag, len(payload)) + payload


def _trailer(code: grpc.StatusCode, details: str) -> bytes:
    lines = f"grpc-status: {code.value[0]}\r\n"
    if details:
        lines += f"grpc-message: {quote(details, safe='')}\r\n"
    return _frame(TRAILER_FLAG, lines.encode("ascii"))


def _messages(body: bytes) -> list[bytes]:
    out = []
    offset = 0
    while offset < len(body):
        if len(body) - offset < 5:
            raise ValueError("truncated gRPC-web frame header")
        flag, length = struct.unpack_from(">BI", body, offset)
        offset += 5
        if offset + length > len(body):
            raise ValueError("truncated gRPC-web message")
        if flag & 0x01:
            raise ValueError("compressed gRPC-web messages are not supported")
        if not flag & TRAILER_FLAG:
            out.append(body[offset : offset + length])
        offset += length
    return out


def decode_text(body: bytes) -> bytes:
    """A -text body: base64, possibly several padded chunks one after another (whitespace ignored).

    Each padded chunk is a whole number of 4-character groups, and a group decodes on its own; so the body is
    decoded in one pass with its padding read as zero bits, and the bytes the padding stood for are dropped
    afterwards, a whole array at once. Linear, in C: a 1 MiB body of 4-character chunks takes milliseconds, where
    decoding chunk by chunk (or re-slicing the rest after each) stalled the event loop for seconds."""
    data = b"".join(body.split())
    if len(data) % 4:
        raise ValueError("base64 body length is not a multiple of 4 (each chunk must be padded)")
    if b"=" not in data:
        return base64.b64decode(data, validate=True)
    pad = np.frombuffer(data, np.uint8).reshape(-1, 4) == _PAD
    if pad[:, :2].any() or (pad[:, 2] & ~pad[:, 3]).any():
        raise ValueError("misplaced base64 padding")
    decoded = np.frombuffer(base64.b64decode(data.replace(b"=", b"A"), validate=True), np.uint8).reshape(-1, 3)
    keep = np.ones(decoded.shape, dtype=bool)
    keep[:, 1] = ~pad[:, 2]
    keep[:, 2] = ~pad[:, 3]
    return bytes(decoded[keep].tobytes())


def parse_timeout(value: str | None) -> float | None:
    """Seconds of a `grpc-timeout` header; None when absent; ValueError when malformed or over 8 digits."""
    if value is None:
        return None
    match = _TIMEOUT.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"grpc-timeout must be 1 to 8 digits and a unit (H, M, S, m, u, n), not {value[:20]!r}")
    return int(match[1]) * _TIMEOUT_UNITS[match[2]]


class _TooLarge(Exception):
    pass


class GrpcWebApp:
    """ASGI middleware: gRPC-web requests for GatewayService are answered here, the rest go to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        servicer: gateway_pb2_grpc.GatewayServiceServicer,
        guard: rpc.Guard,
        max_body_bytes: int,
    ) -> None:
        self._app = app
        collector = _Collector()
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, collector)
        self._handlers = collector.handlers
        self._guard = guard
        self._max_body_bytes = max_body_bytes

    def _handler(self, path: str, metadata: list[tuple[str, str]]) -> grpc.RpcMethodHandler | None:
        for generic in self._handlers:
            handler = generic.service(_CallDetails(path, metadata))
            if handler is not None:
                # No guard here: __call__ runs it before reading the body.
                return rpc.guard_handler(handler, path)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(SERVICE_PREFIX):
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        content_type = headers.get("content-type", "")
        if scope["method"] != "POST" or not content_type.startswith("application/grpc-web"):
            await self._app(scope, receive, send)
            return
        text = content_type.startswith("application/grpc-web-text")
        metadata = [(k, v) for k, v in headers.items() if k not in ("content-type", "content-length", "host")]
        client = scope.get("client") or ("", 0)
        call = _Call(send, text, content_type.split(";")[0])
        handler = self._handler(scope["path"], metadata)
        if handler is None:
            await call.finish(grpc.StatusCode.UNIMPLEMENTED, f"unknown method {scope['path']}")
            return
        if handler.request_streaming:
            await call.finish(
                grpc.StatusCode.UNIMPLEMENTED, "gRPC-web has no client streaming; use gRPC (HTTP/2) for this method"
            )
            return
        context = WebContext(metadata, f"ipv4:{client[0]}:{client[1]}")
        # Everything that needs no body is settled before a byte of it is read.
        try:
            await self._guard(scope["path"], context)
            deadline = parse_timeout(headers.get("grpc-timeout"))
        except _Aborted as exc:
            await call.finish(exc.code, exc.details)
            return
        except ValueError as exc:
            await call.finish(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        try:
            body = await _read_body(receive, headers.get("content-length"), self._max_body_bytes)
            messages = _messages(decode_text(body) if text else body)
            request = handler.request_deserializer(messages[0] if messages else b"")
        except _TooLarge:
            await call.finish(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request body over {self._max_body_bytes} bytes (gateway setting grpc_web_max_body_bytes)",
            )
            return
        except _ClientGone:
            return
        except (ValueError, TypeError) as exc:
            await call.finish(grpc.StatusCode.INVALID_ARGUMENT, f"malformed gRPC-web request: {exc}")
            return
        try:
            async with asyncio.timeout(deadline):
                if handler.response_streaming:
                    await self._stream(handler, request, context, call, receive)
                else:
                    response = await handler.unary_unary(request, context)
                    await call.message(handler.response_serializer(response))
        except _Aborted as exc:
            await call.finish(exc.code, exc.details)
            return
        except TimeoutError:
            await call.finish(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
            return
        except _ClientGone:
            return
        except Exception:
            log.exception("gRPC-web %s failed", scope["path"])
            await call.finish(grpc.StatusCode.INTERNAL, "internal error")
            return
        await call.finish(context.code, context.details)

    async def _stream(
        self, handler: grpc.RpcMethodHandler, request: Any, context: WebContext, call: _Call, receive: Receive
    ) -> None:
        """Send each response as it comes; stop as soon as the client goes away."""
        responses: AsyncIterator[Any] = handler.unary_stream(request, context)
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            while True:
                next_response = asyncio.ensure_future(anext(responses))
                await asyncio.wait({next_response, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not next_response.done():
                    next_response.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await next_response
                    raise _ClientGone
                try:
                    response = next_response.result()
                except StopAsyncIteration:
                    return
                await call.message(handler.response_serializer(response))
        finally:
            gone.cancel()
            with contextlib.suppress(Exception):
                await responses.aclose()  # type: ignore[attr-defined]


class _ClientGone(Exception):
    pass


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _read_body(receive: Receive, content_length: str | None, limit: int) -> bytes:
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class _Call:
    """The response side: headers once, then frames; trailers last (in the headers too if nothing was sent)."""

    def __init__(self, send: Send, text: bool, content_type: str) -> None:
        self._send = send
        self._text = text
        self._content_type = content_type or "application/grpc-web+proto"
        self._started = False

    def _encode(self, frame: bytes) -> bytes:
        return bytes(base64.b64encode(frame)) if self._text else frame

    async def _start(self, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        self._started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", self._content_type.encode("latin-1")),
                    (b"cache-control", b"no-store"),
                    *(extra or []),
                ],
            }
        )

    async def message(self, payload: bytes) -> None:
        if not self._started:
            await self._start()
        await self._send({"type": "http.response.body", "body": self._encode(_frame(0, payload)), "more_body": True})

    async def finish(self, code: grpc.StatusCode, details: str) -> None:
        if not self._started:
            extra = [(b"grpc-status", str(code.value[0]).encode())]
            if details:
                extra.append((b"grpc-message", quote(details, safe="").encode("ascii")))
            await self._start(extra)
        await self._send(
            {"type": "http.response.body", "body": self._encode(_trailer(code, details)), "more_body": False}
        )


class _Collector:
    """Stands in for a server to collect the handlers that generated code registers."""

    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.handlers.extend(handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, Any]) -> None:
        return None  # the generic handlers above cover the same methods


__all__: list[str] = ["GrpcWebApp", "WebContext"]
