"""GatewayService over real gRPC: push frames, watch a camera, manage cameras, health, reflection, grpcurl."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from riskwatch.cache import InMemoryCache
from riskwatch.events import timestamp
from riskwatch.v1 import detector_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc
from riskwatch_gateway.app import GatewayApp
from riskwatch_gateway.config import CameraConfig
from riskwatch_gateway.testing import FakeDetector, GatewayFactory, jpeg, make_settings, publish_state, risk_state

GRPCURL = Path(os.environ.get("GRPCURL", Path.home() / ".cache/riskwatch/bin/grpcurl"))


@pytest.fixture
async def stub(gateway: GatewayApp) -> AsyncIterator[gateway_pb2_grpc.GatewayServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        yield gateway_pb2_grpc.GatewayServiceStub(channel)


def frame_request(camera_id: str, frame_id: int, image: bytes | None = None) -> gateway_pb2.PushFramesRequest:
    return gateway_pb2.PushFramesRequest(
        frame=detector_pb2.Frame(
            camera_id=camera_id,
            frame_id=frame_id,
            capture_time=timestamp(),
            image=jpeg(seed=frame_id) if image is None else image,
        )
    )


async def test_push_frames_answers_every_frame_in_order(
    stub: gateway_pb2_grpc.GatewayServiceStub, detector: FakeDetector
) -> None:
    requests = [
        frame_request("cam-01", 1),
        frame_request("cam-01", 2),
        frame_request("cam-01", 3, b"bad"),
        frame_request("cam-01", 4),
    ]
    responses = [r async for r in stub.PushFrames(iter(requests))]
    assert [r.WhichOneof("result") for r in responses] == ["event", "event", "error", "event"]
    assert [r.event.frame_id for r in responses if r.HasField("event")] == [1, 2, 4]
    assert responses[0].event.detections[0].class_name == "person"
    assert responses[0].event.groups[0].member_track_ids == [1, 2]
    assert responses[2].error.frame_id == 3 and "not an image" in responses[2].error.message
    assert [f.frame_id for f in detector.frames] == [1, 2, 4]


async def test_push_frames_registers_unknown_cameras_and_refuses_source_cameras(
    start_gateway: GatewayFactory, video: Path
) -> None:
    gateway: GatewayApp = await start_gateway(
        make_settings([CameraConfig(id="cam-file", source=str(video), loop=True)], auto_register_push_cameras=True)
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        responses = [
            r
            async for r in stub.PushFrames(
                iter([frame_request("new-cam", 1), frame_request("cam-file", 1), frame_request("bad id!", 1)])
            )
        ]
    assert responses[0].event.camera_id == "new-cam"
    assert "takes no pushes" in responses[1].error.message
    assert "invalid camera" in responses[2].error.message
    assert responses[2].error.camera_id == ""  # an invalid id is not echoed
    assert "new-cam" in gateway.cameras.ids()


async def test_push_frames_to_an_unknown_camera_is_refused_by_default(
    stub: gateway_pb2_grpc.GatewayServiceStub, gateway: GatewayApp, detector: FakeDetector
) -> None:
    responses = [r async for r in stub.PushFrames(iter([frame_request("new-cam", 1)]))]
    assert "unknown camera 'new-cam'" in responses[0].error.message
    assert "new-cam" not in gateway.cameras and not detector.frames


async def test_auto_registered_push_cameras_are_limited(start_gateway: Any) -> None:
    gateway: GatewayApp = await start_gateway(
        make_settings(auto_register_push_cameras=True, max_auto_registered_cameras=2)
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        requests = [frame_request(f"cam-{i}", 1) for i in range(3)]
        responses = [r async for r in stub.PushFrames(iter(requests))]
        assert [r.WhichOneof("result") for r in responses] == ["event", "event", "error"]
        assert "max_auto_registered_cameras" in responses[2].error.message
        await stub.RemoveCamera(gateway_pb2.RemoveCameraRequest(camera_id="cam-0"))
        again = [r async for r in stub.PushFrames(iter([frame_request("cam-2", 2)]))]
        assert again[0].event.camera_id == "cam-2"  # a removed one no longer counts


async def test_open_streams_are_limited_per_method(start_gateway: Any) -> None:
    gateway: GatewayApp = await start_gateway(
        make_settings([CameraConfig(id="cam-01", source="push")], max_grpc_streams=2)
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        watches = [stub.WatchCamera(gateway_pb2.WatchCameraRequest(camera_id="cam-01")) for _ in range(2)]
        for watch in watches:
            await watch.read()  # the current state: the stream is open
        third = stub.WatchCamera(gateway_pb2.WatchCameraRequest(camera_id="cam-01"))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await third.read()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # PushFrames has its own limit: still open while two watches are
        responses = [r async for r in stub.PushFrames(iter([frame_request("cam-01", 1)]))]
        assert responses[0].event.camera_id == "cam-01"
        watches[0].cancel()
        await asyncio.sleep(0.2)
        fourth = stub.WatchCamera(gateway_pb2.WatchCameraRequest(camera_id="cam-01"))
        assert (await fourth.read()).HasField("risk_state")
        for call in (watches[1], fourth):
            call.cancel()


async def test_watch_camera_sends_current_state_first_then_changes(
    gateway: GatewayApp, stub: gateway_pb2_grpc.GatewayServiceStub, cache: InMemoryCache
) -> None:
    await publish_state(cache, risk_state("cam-01", 5, level=events_pb2.RISK_LEVEL_LOW))
    call = stub.WatchCamera(gateway_pb2.WatchCameraRequest(camera_id="cam-01", include_detections=True))
    first = await asyncio.wait_for(call.read(), 5)
    assert first.risk_state.version == 5 and first.risk_state.max_level == events_pb2.RISK_LEVEL_LOW

    await stub.PushFrames(iter([frame_request("cam-01", 9)])).read()
    second = await asyncio.wait_for(call.read(), 5)
    assert second.detections.frame_id == 9

    await publish_state(cache, risk_state("cam-01", 4))  # older: skipped
    await publish_state(cache, risk_state("cam-01", 6, level=events_pb2.RISK_LEVEL_HIGH))
    third = await asyncio.wait_for(call.read(), 5)
    assert third.risk_state.version == 6 and third.risk_state.max_level == events_pb2.RISK_LEVEL_HIGH
    call.cancel()


async def test_watch_camera_without_state_starts_with_an_empty_state_and_ends_on_removal(
    gateway: GatewayApp, stub: gateway_pb2_grpc.GatewayServiceStub
) -> None:
    call = stub.WatchCamera(gateway_pb2.WatchCameraRequest(camera_id="cam-01"))
    first = await asyncio.wait_for(call.read(), 5)
    assert first.risk_state.camera_id == "cam-01" and first.risk_state.version == 0
    await stub.PushFrames(iter([frame_request("cam-01", 1)])).read()  # no detections asked: not sent
    await stub.RemoveCamera(gateway_pb2.RemoveCameraRequest(camera_id="cam-01"))
    assert await asyncio.wait_for(call.read(), 5) == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_camera_management_and_state(stub: gateway_pb2_grpc.GatewayServiceStub, cache: InMemoryCache) -> None:
    added = await stub.AddCamera(
        gateway_pb2.AddCameraRequest(
            camera=gateway_pb2.Camera(camera_id="cam-02", source="rtsp://user:secret@10.0.0.9/stream", fps=1),
            allow_offline=True,  # nothing answers at 10.0.0.9: the probe fails, the operator keeps it anyway
        )
    )
    assert added.camera.camera.camera_id == "cam-02" and added.camera.camera.fps == 1
    assert added.camera.status == gateway_pb2.CAMERA_STATUS_OFFLINE
    listed = await stub.ListCameras(gateway_pb2.ListCamerasRequest())
    assert sorted(c.camera.camera_id for c in listed.cameras) == ["cam-01", "cam-02"]
    assert "secret" not in str(listed)  # source credentials are never sent back

    with pytest.raises(grpc.aio.AioRpcError) as exists:
        await stub.AddCamera(gateway_pb2.AddCameraRequest(camera=gateway_pb2.Camera(camera_id="cam-02", source="push")))
    assert exists.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await stub.AddCamera(
            gateway_pb2.AddCameraRequest(camera=gateway_pb2.Camera(camera_id="x", source="device:zero"))
        )
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "device" in (invalid.value.details() or "")

    await publish_state(cache, risk_state("cam-02", 2))
    state = await stub.GetCameraState(gateway_pb2.GetCameraStateRequest(camera_id="cam-02"))
    assert state.state.version == 2

    await stub.RemoveCamera(gateway_pb2.RemoveCameraRequest(camera_id="cam-02"))
    for call in (
        stub.RemoveCamera(gateway_pb2.RemoveCameraRequest(camera_id="cam-02")),
        stub.GetCameraState(gateway_pb2.GetCameraStateRequest(camera_id="cam-02")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as unknown_watch:
        await stub.WatchCamera(gateway_pb2.WatchCameraRequest(camera_id="nope")).read()
    assert unknown_watch.value.code() == grpc.StatusCode.NOT_FOUND
    # A malformed id is unknown too, and is not echoed back.
    huge = "x" * 10_000
    with pytest.raises(grpc.aio.AioRpcError) as malformed:
        await stub.GetCameraState(gateway_pb2.GetCameraStateRequest(camera_id=huge))
    assert malformed.value.code() == grpc.StatusCode.NOT_FOUND
    assert "not a valid camera id" in (malformed.value.details() or "") and huge not in (
        malformed.value.details() or ""
    )


async def test_health_reports_serving(gateway: GatewayApp) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="riskwatch.v1.GatewayService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_token_is_required_when_configured_but_not_for_health(start_gateway: GatewayFactory) -> None:
    gateway: GatewayApp = await start_gateway(make_settings(auth_token="s3cret"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.ListCameras(gateway_pb2.ListCamerasRequest())
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await stub.ListCameras(gateway_pb2.ListCamerasRequest(), metadata=[("authorization", "Bearer nope")])
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await stub.ListCameras(gateway_pb2.ListCamerasRequest(), metadata=[("authorization", "Bearer s3cret")])
        # The streaming RPCs (server stream, bidirectional) are guarded the same way.
        no_frames: list[gateway_pb2.PushFramesRequest] = []
        for call in (
            lambda **kw: stub.WatchCamera(gateway_pb2.WatchCameraRequest(camera_id="nope"), **kw),
            lambda **kw: stub.PushFrames(iter(no_frames), **kw),
        ):
            assert await _status(call()) == grpc.StatusCode.UNAUTHENTICATED
            assert await _status(call(metadata=[("authorization", "Bearer s3cret")])) != grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(channel)
        await health.Check(health_pb2.HealthCheckRequest())


async def _status(call: Any) -> grpc.StatusCode:
    """How a streaming call ended: OK when its stream completed, else the error's status code."""
    try:
        _ = [response async for response in call]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


# ---- grpcurl: reflection makes every RPC callable without the .proto files ------------------------
def grpcurl(port: int, *args: str, data: str | None = None, timeout: float = 20) -> str:
    result = subprocess.run(
        [str(GRPCURL), "-plaintext", *(["-d", data] if data is not None else []), f"127.0.0.1:{port}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"grpcurl {' '.join(args)} failed: {result.stderr}"
    return result.stdout


@pytest.fixture
def grpcurl_available() -> None:
    if not (GRPCURL.exists() or shutil.which("grpcurl")):
        pytest.fail(f"grpcurl not found at {GRPCURL}: run `make install` (scripts/bootstrap.sh builds it)")


@pytest.mark.usefixtures("grpcurl_available")
async def test_grpcurl_lists_services_and_calls_every_rpc(gateway: GatewayApp, cache: InMemoryCache) -> None:
    port = gateway.grpc_port
    run = asyncio.to_thread
    listed = (await run(grpcurl, port, "list")).split()
    assert {"riskwatch.v1.GatewayService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(
        listed
    )
    methods = (await run(grpcurl, port, "list", "riskwatch.v1.GatewayService")).split()
    assert len(methods) == 9

    added = json.loads(
        await run(
            grpcurl,
            port,
            "riskwatch.v1.GatewayService/AddCamera",
            data='{"camera": {"camera_id": "cam-g", "source": "push", "fps": 3}}',
        )
    )
    assert added["camera"]["camera"]["camera_id"] == "cam-g"
    cameras = json.loads(await run(grpcurl, port, "riskwatch.v1.GatewayService/ListCameras"))
    assert {c["camera"]["camera_id"] for c in cameras["cameras"]} == {"cam-01", "cam-g"}

    image = base64.b64encode(jpeg()).decode()
    pushed = json.loads(
        await run(
            grpcurl,
            port,
            "riskwatch.v1.GatewayService/PushFrames",
            data=json.dumps({"frame": {"camera_id": "cam-g", "frame_id": 7, "image": image}}),
        )
    )
    assert pushed["event"]["frame_id"] == "7" and pushed["event"]["detections"]

    await publish_state(cache, risk_state("cam-g", 1))
    state = json.loads(
        await run(grpcurl, port, "riskwatch.v1.GatewayService/GetCameraState", data='{"camera_id": "cam-g"}')
    )
    assert state["state"]["version"] == "1" and state["state"]["max_level"] == "RISK_LEVEL_HIGH"

    watch = await run(
        subprocess.run,
        [
            str(GRPCURL),
            "-plaintext",
            "-max-time",
            "2",
            "-d",
            '{"camera_id": "cam-g"}',
            f"127.0.0.1:{port}",
            "riskwatch.v1.GatewayService/WatchCamera",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert '"version": "1"' in watch.stdout  # the current state, before -max-time ends the stream

    points = (
        '{"camera_id": "cam-g", "calibration": {"image_points": [{"x": 0, "y": 0}, {"x": 100, "y": 0}, '
        '{"x": 100, "y": 100}, {"x": 0, "y": 100}], "ground_points": [{"x": 0, "y": 0}, {"x": 5, "y": 0}, '
        '{"x": 5, "y": 5}, {"x": 0, "y": 5}]}}'
    )
    calibrated = json.loads(await run(grpcurl, port, "riskwatch.v1.GatewayService/SetCalibration", data=points))
    assert calibrated["calibration"]["origin"] == "CALIBRATION_ORIGIN_API"
    assert calibrated["calibration"]["calibration"]["homography"][0] == pytest.approx(0.05)  # 5 m per 100 px
    got = json.loads(
        await run(grpcurl, port, "riskwatch.v1.GatewayService/GetCalibration", data='{"camera_id": "cam-g"}')
    )
    assert got == calibrated
    deleted = json.loads(
        await run(grpcurl, port, "riskwatch.v1.GatewayService/DeleteCalibration", data='{"camera_id": "cam-g"}')
    )
    assert deleted["calibration"]["origin"] == "CALIBRATION_ORIGIN_NONE"

    await run(grpcurl, port, "riskwatch.v1.GatewayService/RemoveCamera", data='{"camera_id": "cam-g"}')
    assert "cam-g" not in gateway.cameras.ids()
    health = json.loads(await run(grpcurl, port, "grpc.health.v1.Health/Check"))
    assert health["status"] == "SERVING"
