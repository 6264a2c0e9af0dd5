"""The gRPC server: DetectorService, health checking and reflection; riskwatch errors map to status codes here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from riskwatch.errors import ConfigError, DecodeError, FrameDropped, RiskwatchError, Unavailable, UnknownCamera
from riskwatch.v1 import detector_pb2, detector_pb2_grpc
from riskwatch_detector.config import DetectorSettings
from riskwatch_detector.service import Detector

log = logging.getLogger(__name__)

SERVICE_NAME: str = detector_pb2.DESCRIPTOR.services_by_name["DetectorService"].full_name

# The one place riskwatch errors become gRPC status codes (first match wins, most specific first).
STATUS_BY_ERROR: tuple[tuple[type[RiskwatchError], grpc.StatusCode], ...] = (
    (DecodeError, grpc.StatusCode.INVALID_ARGUMENT),  # includes InvalidFrame
    (FrameDropped, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (UnknownCamera, grpc.StatusCode.NOT_FOUND),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
)


def status_for(error: RiskwatchError) -> grpc.StatusCode:
    for kind, code in STATUS_BY_ERROR:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Turns a RiskwatchError escaping a DetectorService handler into its status code and message."""

    def __init__(self, service_prefix: str) -> None:
        self._prefix = service_prefix

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(self._prefix):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _map_unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _map_stream(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _map_unary(behaviour: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
    async def wrapped(request: Any, context: Any) -> Any:
        try:
            return await behaviour(request, context)
        except RiskwatchError as exc:
            await context.abort(status_for(exc), str(exc))

    return wrapped


def _map_stream(behaviour: Callable[[Any, Any], AsyncIterator[Any]]) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def wrapped(request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        try:
            async for response in behaviour(request_iterator, context):
                yield response
        except RiskwatchError as exc:
            await context.abort(status_for(exc), str(exc))

    return wrapped


class DetectorServicer(detector_pb2_grpc.DetectorServiceServicer):  # type: ignore[misc]
    """Domain logic only: errors are mapped by ErrorMappingInterceptor."""

    def __init__(self, detector: Detector, max_in_flight_per_stream: int) -> None:
        self._detector = detector
        self._max_in_flight = max_in_flight_per_stream

    async def Detect(self, request: detector_pb2.DetectRequest, context: Any) -> detector_pb2.DetectResponse:
        event = await self._detector.detect(request.frame)
        return detector_pb2.DetectResponse(event=event)

    async def DetectStream(
        self, request_iterator: AsyncIterator[detector_pb2.DetectStreamRequest], context: Any
    ) -> AsyncIterator[detector_pb2.DetectStreamResponse]:
        """Frames are processed concurrently; each answer (event or FrameError) is sent as soon as it is ready."""
        answers: asyncio.Queue[detector_pb2.DetectStreamResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self._max_in_flight)
        tasks: set[asyncio.Task[None]] = set()

        async def answer(frame: detector_pb2.Frame) -> None:
            try:
                event = await self._detector.detect(frame)
                await answers.put(detector_pb2.DetectStreamResponse(event=event))
            except RiskwatchError as exc:
                log.info("camera %s frame %d: %s", frame.camera_id, frame.frame_id, exc)
                await answers.put(_frame_error(frame, str(exc)))
            except Exception as exc:  # a bug on one frame must not end the stream for every other camera
                log.exception("camera %s frame %d: detection failed", frame.camera_id, frame.frame_id)
                await answers.put(_frame_error(frame, f"internal error: {type(exc).__name__}: {exc}"))
            finally:
                slots.release()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await slots.acquire()
                    task = asyncio.create_task(answer(request.frame))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*tasks)
            finally:
                await answers.put(None)

        reader = asyncio.create_task(read())
        try:
            while (response := await answers.get()) is not None:
                yield response
            await reader  # re-raises a failure of the request stream itself
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def _frame_error(frame: detector_pb2.Frame, message: str) -> detector_pb2.DetectStreamResponse:
    error = detector_pb2.FrameError(camera_id=frame.camera_id, frame_id=frame.frame_id, message=message)
    return detector_pb2.DetectStreamResponse(error=error)


def create_server(
    settings: DetectorSettings, detector: Detector, port: int | None = None
) -> tuple[grpc.aio.Server, int]:
    """A started-ready (not yet started) server with DetectorService, health (SERVING) and reflection.

    `port` overrides settings.grpc_port; 0 picks a free port. Returns the server and the bound port.
    The health servicer is reachable as `server.health` (set NOT_SERVING on shutdown).
    """
    server = grpc.aio.server(
        interceptors=[ErrorMappingInterceptor(f"/{SERVICE_NAME}/")],
        options=[
            # Above the image limit, so an oversized image reaches the detector and gets INVALID_ARGUMENT
            # with a message rather than a bare RESOURCE_EXHAUSTED from the transport.
            ("grpc.max_receive_message_length", 2 * settings.detector.max_image_bytes + 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ],
    )
    detector_pb2_grpc.add_DetectorServiceServicer_to_server(
        DetectorServicer(detector, settings.detector.batching.max_in_flight_per_stream), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    bound = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port if port is None else port}")
    server.health = health_servicer
    return server, bound


async def set_serving(server: grpc.aio.Server, serving: bool) -> None:
    """Health status for the whole server and DetectorService."""
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    health_servicer = server.health
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, status)
