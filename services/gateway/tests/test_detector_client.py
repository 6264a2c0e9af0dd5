"""DetectorClient against a real gRPC DetectorService: events come back, INVALID_ARGUMENT is InvalidFrame."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from riskwatch.errors import InvalidFrame, Unavailable
from riskwatch.v1 import detector_pb2, detector_pb2_grpc
from riskwatch_gateway.detect import DetectorClient
from riskwatch_gateway.testing import FakeDetector, jpeg


class FakeDetectorService(detector_pb2_grpc.DetectorServiceServicer):
    def __init__(self) -> None:
        self._detector = FakeDetector()

    async def Detect(
        self, request: detector_pb2.DetectRequest, context: grpc.aio.ServicerContext
    ) -> detector_pb2.DetectResponse:
        try:
            return detector_pb2.DetectResponse(event=await self._detector.detect(request.frame))
        except InvalidFrame as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise

    async def DetectStream(
        self, request_iterator: AsyncIterator[detector_pb2.DetectStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[detector_pb2.DetectStreamResponse]:
        async for request in request_iterator:
            yield detector_pb2.DetectStreamResponse(event=await self._detector.detect(request.frame))


@pytest.fixture
async def address() -> AsyncIterator[str]:
    server = grpc.aio.server()
    detector_pb2_grpc.add_DetectorServiceServicer_to_server(FakeDetectorService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def test_detect_returns_the_event_and_maps_invalid_frames(address: str) -> None:
    client = DetectorClient(address, timeout_s=5)
    try:
        event = await client.detect(detector_pb2.Frame(camera_id="c", frame_id=3, image=jpeg()))
        assert (event.camera_id, event.frame_id, len(event.detections)) == ("c", 3, 2)
        with pytest.raises(InvalidFrame, match="not an image"):
            await client.detect(detector_pb2.Frame(camera_id="c", frame_id=4, image=b"bad"))
    finally:
        await client.close()


async def test_unreachable_detector_is_unavailable() -> None:
    client = DetectorClient("127.0.0.1:1", timeout_s=0.5)
    try:
        with pytest.raises(Unavailable):
            await client.detect(detector_pb2.Frame(camera_id="c", frame_id=1, image=jpeg()))
    finally:
        await client.close()
