"""The detector's gRPC server: DetectorService on the shared recipe (riskwatch.rpc: health, reflection, errors)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from riskwatch import rpc
from riskwatch.domain.cameras import loggable_camera_id
from riskwatch.errors import PortInUse, RiskwatchError
from riskwatch.v1 import detector_pb2, detector_pb2_grpc
from riskwatch_detector.config import DetectorSettings
from riskwatch_detector.service import Detector

log = logging.getLogger(__name__)

SERVICE_NAME = rpc.service_name(detector_pb2.DESCRIPTOR, "DetectorService")
PORT_SETTING = "set ALGO_GRPC_PORT to move it"


class DetectorServicer(detector_pb2_grpc.DetectorServiceServicer):
    """Domain logic only: errors are mapped to statuses by riskwatch.rpc's interceptor."""

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
                log.info("camera %s frame %d: %s", loggable_camera_id(frame.camera_id), frame.frame_id, exc)
                await answers.put(_frame_error(frame, str(exc)))
            except Exception as exc:  # a bug on one frame must not end the stream for every other camera
                log.exception(
                    "camera %s frame %d: detection failed", loggable_camera_id(frame.camera_id), frame.frame_id
                )
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
    error = detector_pb2.FrameError(
        camera_id=loggable_camera_id(frame.camera_id), frame_id=frame.frame_id, message=message
    )
    return detector_pb2.DetectStreamResponse(error=error)


def create_server(
    settings: DetectorSettings, detector: Detector, port: int | None = None
) -> tuple[grpc.aio.Server, int]:
    """A server (not yet started) with DetectorService, health and reflection; returns it and the bound port.

    `port` overrides settings.grpc_port; 0 picks a free port. Stop it with `settings.shutdown_grace_s`.
    """
    servicer = DetectorServicer(detector, settings.detector.batching.max_in_flight_per_stream)
    bind_port = settings.grpc_port if port is None else port
    try:
        return rpc.create_server(
            f"{settings.grpc_host}:{bind_port}",
            [SERVICE_NAME],
            lambda server: detector_pb2_grpc.add_DetectorServiceServicer_to_server(servicer, server),
            options=[
                # Above the image limit, so an oversized image reaches the detector and gets INVALID_ARGUMENT
                # with a message rather than a bare RESOURCE_EXHAUSTED from the transport.
                ("grpc.max_receive_message_length", 2 * settings.detector.max_image_bytes + 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ],
        )
    except OSError as exc:
        raise PortInUse("detector gRPC", settings.grpc_host, bind_port, PORT_SETTING) from exc


async def set_serving(server: grpc.aio.Server, serving: bool) -> None:
    """Health status for the whole server and DetectorService."""
    await rpc.set_serving(server, serving)
