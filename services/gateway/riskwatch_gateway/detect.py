"""The Detect interface the gateway needs, and its gRPC client for the detector service."""

from __future__ import annotations

from typing import Protocol

import grpc

from riskwatch.errors import InvalidFrame, Unavailable
from riskwatch.v1 import detector_pb2, detector_pb2_grpc, events_pb2


class Detect(Protocol):
    """Anything that turns one frame into its DetectionEvent (the in-process detector or DetectorClient)."""

    async def detect(self, frame: detector_pb2.Frame) -> events_pb2.DetectionEvent:
        """Raises riskwatch.errors.InvalidFrame when the image cannot be used."""
        ...


class DetectorClient:
    """Detect over gRPC: INVALID_ARGUMENT → InvalidFrame, every other failure → Unavailable."""

    def __init__(self, address: str, timeout_s: float = 10.0) -> None:
        self.address = address
        self._timeout_s = timeout_s
        self._channel = grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.max_send_message_length", 32 * 1024 * 1024),
                ("grpc.max_receive_message_length", 32 * 1024 * 1024),
                ("grpc.enable_retries", 1),
            ],
        )
        self._stub = detector_pb2_grpc.DetectorServiceStub(self._channel)

    async def detect(self, frame: detector_pb2.Frame) -> events_pb2.DetectionEvent:
        try:
            response = await self._stub.Detect(
                detector_pb2.DetectRequest(frame=frame), timeout=self._timeout_s, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidFrame(exc.details() or "invalid frame") from exc
            raise Unavailable(f"detector at {self.address}: {exc.code().name} {exc.details()}") from exc
        event: events_pb2.DetectionEvent = response.event
        return event

    async def close(self) -> None:
        await self._channel.close()
