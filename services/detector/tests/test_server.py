"""The gRPC server with a real grpc.aio client: Detect, DetectStream, bad images, health, reflection, grpcurl."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from riskwatch.bus import InMemoryBus
from riskwatch.imaging import Image, encode_jpeg
from riskwatch.v1 import detector_pb2, detector_pb2_grpc
from riskwatch_detector.backends import Backend
from riskwatch_detector.config import DetectorConfig, DetectorSettings
from riskwatch_detector.server import SERVICE_NAME, create_server, set_serving
from riskwatch_detector.service import Detector

TOPIC = "detection-results"


class Running:
    def __init__(self, server: grpc.aio.Server, port: int, detector: Detector, channel: grpc.aio.Channel) -> None:
        self.server, self.port, self.detector, self.channel = server, port, detector, channel
        self.stub = detector_pb2_grpc.DetectorServiceStub(channel)


@pytest.fixture
async def served(onnx_backend: Backend, onnx_config: DetectorConfig) -> AsyncIterator[Running]:
    config = onnx_config.model_copy(update={"max_image_bytes": 600_000, "max_image_pixels": 1_000_000})
    settings = DetectorSettings(detector=config)
    detector = Detector(config, onnx_backend, InMemoryBus(), TOPIC)
    await detector.start()
    server, port = create_server(settings, detector, port=0)
    await server.start()
    await set_serving(server, True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield Running(server, port, detector, channel)
    await channel.close()
    await set_serving(server, False)
    await server.stop(1)
    await detector.stop()


def request(camera: str, frame_id: int, image: bytes) -> detector_pb2.DetectRequest:
    return detector_pb2.DetectRequest(frame=detector_pb2.Frame(camera_id=camera, frame_id=frame_id, image=image))


async def test_detect_returns_the_event(served: Running, vtest_frames: list[Image]) -> None:
    response = await served.stub.Detect(request("cam", 1, encode_jpeg(vtest_frames[0], 85)))
    assert response.event.event_id == "cam:1"
    assert len(response.event.detections) >= 3


def _png(image: Image) -> bytes:
    return bytes(cv2.imencode(".png", image)[1].tobytes())


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (b"", "image is empty"),
        (b"GIF89a not really", "not a decodable JPEG or PNG"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "not a decodable"),
        (b"\xff\xd8" + os.urandom(700_000), "over the limit of 600000 bytes"),
        (_png(np.zeros((1200, 1200, 3), np.uint8)), "1200x1200 pixels, over the limit"),
    ],
    ids=["empty", "not-an-image", "corrupt-png", "too-many-bytes", "too-many-pixels"],
)
async def test_bad_images_get_invalid_argument_and_the_server_keeps_serving(
    served: Running, vtest_frames: list[Image], image: bytes, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.Detect(request("cam", 1, image))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")
    good = await served.stub.Detect(request("cam", 2, encode_jpeg(vtest_frames[1], 85)))
    assert good.event.frame_id == 2


async def test_detect_stream_answers_every_frame_and_survives_a_bad_one(
    served: Running, vtest_frames: list[Image]
) -> None:
    frames = [encode_jpeg(f, 85) for f in vtest_frames[:3]]
    answered = asyncio.Event()
    responses: list[detector_pb2.DetectStreamResponse] = []

    async def requests() -> AsyncIterator[detector_pb2.DetectStreamRequest]:
        for i, data in enumerate(frames):
            for camera in ("north", "south"):
                yield detector_pb2.DetectStreamRequest(frame=request(camera, i, data).frame)
            if i == 0:
                yield detector_pb2.DetectStreamRequest(frame=request("broken", 0, b"garbage").frame)
            # Each camera sends its next frame once the previous one is answered (no drops).
            while len(responses) < 2 * (i + 1) + 1:
                answered.clear()
                await answered.wait()

    async for response in served.stub.DetectStream(requests()):
        responses.append(response)
        answered.set()
    errors = [r.error for r in responses if r.HasField("error")]
    detections = [r.event for r in responses if r.HasField("event")]
    assert [(e.camera_id, e.frame_id) for e in errors] == [("broken", 0)]
    assert "not a decodable" in errors[0].message
    assert sorted((e.camera_id, e.frame_id) for e in detections) == sorted(
        (c, i) for i in range(3) for c in ("north", "south")
    )


async def test_health_is_serving_then_not_serving(served: Running) -> None:
    health = health_pb2_grpc.HealthStub(served.channel)
    for service in ("", SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await set_serving(served.server, False)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


def _grpcurl() -> str | None:
    cached = Path.home() / ".cache" / "riskwatch" / "bin" / "grpcurl"
    return str(cached) if cached.exists() else shutil.which("grpcurl")


async def test_grpcurl_lists_the_services_through_reflection(served: Running) -> None:
    binary = _grpcurl()
    if binary is None:
        pytest.skip("grpcurl not installed (make install builds it into ~/.cache/riskwatch/bin)")
    listed = await asyncio.to_thread(
        subprocess.run,
        [binary, "-plaintext", f"127.0.0.1:{served.port}", "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    services = set(listed.stdout.split())
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= services
    described = await asyncio.to_thread(
        subprocess.run,
        [binary, "-plaintext", f"127.0.0.1:{served.port}", "describe", SERVICE_NAME],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "rpc DetectStream" in described.stdout


async def test_grpcurl_gets_invalid_argument_for_an_empty_image(served: Running) -> None:
    binary = _grpcurl()
    if binary is None:
        pytest.skip("grpcurl not installed (make install builds it into ~/.cache/riskwatch/bin)")
    result = await asyncio.to_thread(
        subprocess.run,
        [
            binary,
            "-plaintext",
            "-d",
            '{"frame": {"camera_id": "cam", "frame_id": 1}}',
            f"127.0.0.1:{served.port}",
            f"{SERVICE_NAME}/Detect",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr and "image is empty" in result.stderr


async def test_detect_stream_neither_logs_nor_echoes_an_invalid_camera_id(
    served: Running, caplog: pytest.LogCaptureFixture
) -> None:
    huge = "c\n" + "x" * 100_000
    frame = request(huge, 1, b"garbage").frame
    with caplog.at_level("INFO"):
        responses = [r async for r in served.stub.DetectStream(iter([detector_pb2.DetectStreamRequest(frame=frame)]))]
    assert responses[0].error.camera_id == "" and "invalid camera id" in responses[0].error.message
    assert len(responses[0].error.message) < 1000
    assert all(len(record.getMessage()) < 1000 for record in caplog.records)
