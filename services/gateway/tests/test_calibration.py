"""Ground-plane calibration per camera: config/cameras.yaml and the REST and gRPC APIs (roles, validation, limits),
kept across a restart of the gateway, and sent to the detector with every frame (pulled and pushed)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from pydantic import ValidationError
from websockets.asyncio.client import connect

from riskwatch.cache import InMemoryCache
from riskwatch.errors import ConfigError
from riskwatch.events import timestamp
from riskwatch.v1 import detector_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc
from riskwatch_gateway.access import token_hash
from riskwatch_gateway.app import GatewayApp
from riskwatch_gateway.config import AccessConfig, CalibrationPoints, CameraConfig, GatewaySettings, TokenConfig
from riskwatch_gateway.testing import FakeDetector, GatewayFactory, jpeg, make_settings, of_type, recv_until, send

# A camera looking straight down at 20 px per metre, image y growing towards the ground's -y:
# ground x = (u - 100) / 20, ground y = (400 - v) / 20.
IMAGE_POINTS = [[100.0, 400.0], [500.0, 400.0], [500.0, 100.0], [100.0, 100.0]]
GROUND_POINTS = [[0.0, 0.0], [20.0, 0.0], [20.0, 15.0], [0.0, 15.0]]
EXPECTED_HOMOGRAPHY = [0.05, 0.0, -5.0, 0.0, -0.05, 20.0, 0.0, 0.0, 1.0]
# Another site: 10 px per metre, the same axes.
OTHER_GROUND_POINTS = [[0.0, 0.0], [40.0, 0.0], [40.0, 30.0], [0.0, 30.0]]
VIEWER, ADMIN = "viewer-token", "admin-token"


def _with_tokens(**fields: Any) -> GatewaySettings:
    access = AccessConfig(
        tokens=[
            TokenConfig(role="viewer", sha256=token_hash(VIEWER)),  # type: ignore[arg-type]
            TokenConfig(role="admin", sha256=token_hash(ADMIN)),  # type: ignore[arg-type]
        ]
    )
    return make_settings([CameraConfig(id="cam-01", source="push")], access=access, **fields)


def _base(gateway: GatewayApp) -> str:
    return f"http://127.0.0.1:{gateway.http_port}"


def _ground(homography: list[float], u: float, v: float) -> tuple[float, float]:
    x, y, w = np.asarray(homography).reshape(3, 3) @ np.array([u, v, 1.0])
    return float(x / w), float(y / w)


async def _push(gateway: GatewayApp, detector: FakeDetector, frame: detector_pb2.Frame | None = None) -> None:
    frame = frame or detector_pb2.Frame(camera_id="cam-01", capture_time=timestamp(), image=jpeg())
    await gateway.cameras.get("cam-01").push(frame)


async def test_an_admin_calibrates_a_camera_over_rest_and_its_frames_carry_it(
    gateway: GatewayApp, detector: FakeDetector
) -> None:
    async with httpx.AsyncClient(base_url=_base(gateway)) as http:
        before = (await http.get("/api/cameras/cam-01/calibration")).json()
        assert before == {"camera_id": "cam-01", "calibrated": False, "origin": "none", "calibration": None}
        await _push(gateway, detector)
        assert not detector.frames[-1].HasField("calibration")

        put = await http.put(
            "/api/cameras/cam-01/calibration", json={"image_points": IMAGE_POINTS, "ground_points": GROUND_POINTS}
        )
        assert put.status_code == 200, put.text
        body = put.json()
        assert body["calibrated"] and body["origin"] == "api"
        calibration = body["calibration"]
        assert calibration["version"] == 1
        assert calibration["reprojection_error_m"] < 1e-6
        assert np.allclose(calibration["homography"], EXPECTED_HOMOGRAPHY, atol=1e-9)
        assert np.allclose(_ground(calibration["homography"], 300, 250), (10.0, 7.5))
        assert (await http.get("/api/cameras/cam-01/calibration")).json() == body
        listed = (await http.get("/api/cameras")).json()["cameras"]
        assert listed[0]["calibrated"] is True

    await _push(gateway, detector)
    sent = detector.frames[-1].calibration
    assert sent.version == 1 and len(sent.image_points) == 4
    assert [(p.x, p.y) for p in sent.ground_points] == [tuple(p) for p in GROUND_POINTS]
    assert np.allclose(list(sent.homography), EXPECTED_HOMOGRAPHY, atol=1e-9)


async def test_a_viewer_reads_the_calibration_but_only_an_admin_changes_it(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(_with_tokens())
    points = {"image_points": IMAGE_POINTS, "ground_points": GROUND_POINTS}
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=_base(gateway)) as http:
        assert (await http.get("/api/cameras/cam-01/calibration")).status_code == 401
        assert (await http.get("/api/cameras/cam-01/calibration", headers=viewer)).status_code == 200
        refused = await http.put("/api/cameras/cam-01/calibration", json=points, headers=viewer)
        assert refused.status_code == 403 and "admin" in refused.json()["error"]
        assert (await http.put("/api/cameras/cam-01/calibration", json=points, headers=admin)).status_code == 200
        assert (await http.delete("/api/cameras/cam-01/calibration", headers=viewer)).status_code == 403
        still = (await http.get("/api/cameras/cam-01/calibration", headers=viewer)).json()
        assert still["origin"] == "api"
        deleted = await http.delete("/api/cameras/cam-01/calibration", headers=admin)
        assert deleted.status_code == 200 and deleted.json()["calibrated"] is False


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"image_points": IMAGE_POINTS[:3], "ground_points": GROUND_POINTS[:3]}, "4 to 64 points are needed, got 3"),
        (
            {"image_points": [[0, 0], [100, 100], [200, 200], [300, 300]], "ground_points": GROUND_POINTS},
            "image_points: the points are (nearly) on one line",
        ),
        ({"image_points": IMAGE_POINTS, "ground_points": [*GROUND_POINTS, [5, 5]]}, "must pair up"),
        ({"image_points": IMAGE_POINTS, "ground_points": [[0, 0], [1, 0], [1, 1], [0, 0]]}, "a point is repeated"),
        ({"image_points": [[1, 2, 3]] * 4, "ground_points": GROUND_POINTS}, "image_points.0"),
        ({"image_points": "four points", "ground_points": GROUND_POINTS}, "image_points"),
        ({"ground_points": GROUND_POINTS}, "image_points: Field required"),
        ({"image_points": [[0, 0]] * 65, "ground_points": GROUND_POINTS}, "at most 64 items"),
        ([IMAGE_POINTS, GROUND_POINTS], "the body must be a JSON object"),
    ],
)
async def test_invalid_points_are_refused_naming_the_problem(
    gateway: GatewayApp, detector: FakeDetector, body: object, problem: str
) -> None:
    async with httpx.AsyncClient(base_url=_base(gateway)) as http:
        answer = await http.put("/api/cameras/cam-01/calibration", json=body)
        assert answer.status_code == 400
        assert problem in answer.json()["error"]
        assert (await http.get("/api/cameras/cam-01/calibration")).json()["calibrated"] is False


async def test_a_calibration_body_is_bounded_and_must_be_json(gateway: GatewayApp) -> None:
    async with httpx.AsyncClient(base_url=_base(gateway)) as http:
        huge = b'{"image_points": [' + b"[1, 2], " * 20_000 + b"[1, 2]]}"
        assert (await http.put("/api/cameras/cam-01/calibration", content=huge)).status_code == 413
        garbled = await http.put("/api/cameras/cam-01/calibration", content=b"{not json")
        assert garbled.status_code == 400 and "image_points" in garbled.json()["error"]
        unknown = await http.put("/api/cameras/cam-9/calibration", json={})
        assert unknown.status_code == 404


async def test_an_api_calibration_survives_a_restart_and_beats_the_configured_one_until_deleted(
    start_gateway: GatewayFactory, detector: FakeDetector, tmp_path: Path
) -> None:
    configured = CalibrationPoints.model_validate({"image_points": IMAGE_POINTS, "ground_points": GROUND_POINTS})
    settings = make_settings([CameraConfig(id="cam-01", source="push", calibration=configured)], state_dir=tmp_path)

    first = await start_gateway(settings)
    async with httpx.AsyncClient(base_url=_base(first)) as http:
        initial = (await http.get("/api/cameras/cam-01/calibration")).json()
        assert initial["origin"] == "config" and initial["calibration"]["version"] == 1
        other = {"image_points": IMAGE_POINTS, "ground_points": OTHER_GROUND_POINTS}
        put = (await http.put("/api/cameras/cam-01/calibration", json=other)).json()
        assert put["origin"] == "api" and put["calibration"]["version"] == 2
    await first.stop()

    second = await start_gateway(settings)
    async with httpx.AsyncClient(base_url=_base(second)) as http:
        kept = (await http.get("/api/cameras/cam-01/calibration")).json()
        assert kept == put
        # 10 px per metre now: pixel (300, 250) is 20 m east and 15 m north of the origin
        assert np.allclose(_ground(kept["calibration"]["homography"], 300, 250), (20.0, 15.0))
        await _push(second, detector)
        assert detector.frames[-1].calibration.version == 2
        assert detector.frames[-1].calibration.ground_points[1].x == 40.0

        deleted = (await http.delete("/api/cameras/cam-01/calibration")).json()
        assert deleted["origin"] == "config" and deleted["calibration"]["version"] == 3
        assert deleted["calibration"]["ground_points"] == GROUND_POINTS
        again = (await http.delete("/api/cameras/cam-01/calibration")).json()
        assert again == deleted  # nothing left to delete: no change, no new version
    await second.stop()

    third = await start_gateway(settings)
    assert third.cameras.get("cam-01").calibration.calibration.version == 3  # type: ignore[union-attr]
    saved = json.loads((tmp_path / "calibrations.json").read_text())
    assert set(saved["cameras"]) == {"cam-01"} and "api" not in saved["cameras"]["cam-01"]


async def test_a_configured_calibration_whose_points_change_gets_a_new_version(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    def settings(ground: list[list[float]]) -> GatewaySettings:
        points = CalibrationPoints.model_validate({"image_points": IMAGE_POINTS, "ground_points": ground})
        return make_settings([CameraConfig(id="cam-01", source="push", calibration=points)], state_dir=tmp_path)

    first = await start_gateway(settings(GROUND_POINTS))
    assert first.cameras.get("cam-01").calibration.calibration.version == 1  # type: ignore[union-attr]
    await first.stop()
    same = await start_gateway(settings(GROUND_POINTS))
    assert same.cameras.get("cam-01").calibration.calibration.version == 1  # type: ignore[union-attr]
    await same.stop()
    edited = await start_gateway(settings(OTHER_GROUND_POINTS))
    assert edited.cameras.get("cam-01").calibration.calibration.version == 2  # type: ignore[union-attr]


def test_a_configured_calibration_that_does_not_fit_stops_start_up_naming_the_camera() -> None:
    with pytest.raises(ValidationError, match=r"cameras\.0\.calibration[\s\S]*on one line"):
        GatewaySettings.model_validate(
            {
                "cameras": {
                    "cameras": [
                        {
                            "id": "cam-01",
                            "source": "push",
                            "calibration": {
                                "image_points": [[0, 0], [1, 1], [2, 2], [3, 3]],
                                "ground_points": GROUND_POINTS,
                            },
                        }
                    ]
                }
            }
        )


async def test_frames_read_from_a_video_carry_the_camera_calibration(
    start_gateway: GatewayFactory, detector: FakeDetector, video: Path
) -> None:
    points = CalibrationPoints.model_validate({"image_points": IMAGE_POINTS, "ground_points": GROUND_POINTS})
    camera = CameraConfig(id="cam-v", source=str(video), fps=10, loop=True, calibration=points)
    await start_gateway(make_settings([camera]))
    for _ in range(100):
        if detector.frames:
            break
        await asyncio.sleep(0.05)
    assert detector.frames, "no frame of the video reached the detector"
    calibration = detector.frames[0].calibration
    assert calibration.version == 1
    assert np.allclose(list(calibration.homography), EXPECTED_HOMOGRAPHY, atol=1e-9)


async def test_a_pusher_cannot_set_the_calibration_its_frames_carry(
    gateway: GatewayApp, detector: FakeDetector
) -> None:
    forged = events_pb2.GroundCalibration(version=99, image_points=[events_pb2.Vector2(x=1, y=1)])
    frame = detector_pb2.Frame(camera_id="cam-01", capture_time=timestamp(), image=jpeg(), calibration=forged)
    await _push(gateway, detector, frame)
    assert not detector.frames[-1].HasField("calibration")


def _ground_calibration(image: list[list[float]], ground: list[list[float]]) -> events_pb2.GroundCalibration:
    return events_pb2.GroundCalibration(
        image_points=[events_pb2.Vector2(x=x, y=y) for x, y in image],
        ground_points=[events_pb2.Vector2(x=x, y=y) for x, y in ground],
    )


async def test_calibration_over_grpc_with_roles_and_validation(
    start_gateway: GatewayFactory, detector: FakeDetector
) -> None:
    gateway = await start_gateway(_with_tokens())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        viewer = [("authorization", f"Bearer {VIEWER}")]
        admin = [("authorization", f"Bearer {ADMIN}")]
        request = gateway_pb2.SetCalibrationRequest(
            camera_id="cam-01", calibration=_ground_calibration(IMAGE_POINTS, GROUND_POINTS)
        )

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SetCalibration(request, metadata=viewer)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

        flat = gateway_pb2.SetCalibrationRequest(
            camera_id="cam-01", calibration=_ground_calibration([[0, 0], [1, 1], [2, 2], [3, 3]], GROUND_POINTS)
        )
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.SetCalibration(flat, metadata=admin)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "image_points: the points are (nearly) on one line" in (invalid.value.details() or "")

        too_many = gateway_pb2.SetCalibrationRequest(
            camera_id="cam-01", calibration=_ground_calibration([[i, i * i] for i in range(10_000)], GROUND_POINTS)
        )
        with pytest.raises(grpc.aio.AioRpcError) as long:
            await stub.SetCalibration(too_many, metadata=admin)
        assert long.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 64" in (long.value.details() or "")

        set_ = (await stub.SetCalibration(request, metadata=admin)).calibration
        assert set_.origin == gateway_pb2.CALIBRATION_ORIGIN_API and set_.calibration.version == 1
        assert set_.calibration.reprojection_error_m < 1e-6
        assert np.allclose(list(set_.calibration.homography), EXPECTED_HOMOGRAPHY, atol=1e-9)

        got = await stub.GetCalibration(gateway_pb2.GetCalibrationRequest(camera_id="cam-01"), metadata=viewer)
        assert got.calibration == set_
        cameras = await stub.ListCameras(gateway_pb2.ListCamerasRequest(), metadata=viewer)
        assert cameras.cameras[0].calibrated

        push = gateway_pb2.PushFramesRequest(
            frame=detector_pb2.Frame(camera_id="cam-01", capture_time=timestamp(), image=jpeg())
        )
        operator_push = [r async for r in stub.PushFrames(iter([push]), metadata=admin)]
        assert operator_push[0].HasField("event")
        assert detector.frames[-1].calibration.version == 1

        deleted = await stub.DeleteCalibration(gateway_pb2.DeleteCalibrationRequest(camera_id="cam-01"), metadata=admin)
        assert deleted.calibration.origin == gateway_pb2.CALIBRATION_ORIGIN_NONE
        assert not deleted.calibration.HasField("calibration")

        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.GetCalibration(gateway_pb2.GetCalibrationRequest(camera_id="cam-9"), metadata=viewer)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_calibrations_file_that_cannot_be_read_back_stops_start_up_naming_it(tmp_path: Path) -> None:
    (tmp_path / "calibrations.json").write_text('{"format": 1, "cameras": {"cam-01": {"api": {}}}}')
    with pytest.raises(ConfigError, match=r"calibrations\.json: not a calibrations file"):
        GatewayApp(make_settings(state_dir=tmp_path), FakeDetector(), InMemoryCache())
    (tmp_path / "calibrations.json").write_text("{half a fi")
    with pytest.raises(ConfigError, match=r"calibrations\.json: cannot read"):
        GatewayApp(make_settings(state_dir=tmp_path), FakeDetector(), InMemoryCache())


async def test_a_camera_added_with_a_calibration_has_it_and_watchers_see_a_change_at_once(
    start_gateway: GatewayFactory,
) -> None:
    # Status is otherwise refreshed every 30 s: a camera_status within the next second is the change's own.
    gateway = await start_gateway(make_settings([CameraConfig(id="cam-01", source="push")], status_interval_s=30))
    points = {"image_points": IMAGE_POINTS, "ground_points": GROUND_POINTS}
    async with (
        httpx.AsyncClient(base_url=_base(gateway)) as http,
        connect(f"ws://127.0.0.1:{gateway.http_port}/ws") as ws,
    ):
        added = await http.post("/api/cameras", json={"id": "cam-02", "source": "push", "calibration": points})
        assert added.status_code == 201 and added.json()["camera"]["calibrated"] is True
        got = (await http.get("/api/cameras/cam-02/calibration")).json()
        assert got["origin"] == "config" and got["calibration"]["version"] == 1

        await send(ws, {"type": "subscribe", "cameras": ["cam-01"]})
        await recv_until(ws, of_type("subscribed"))
        assert (await http.put("/api/cameras/cam-01/calibration", json=points)).status_code == 200
        await recv_until(ws, of_type("camera_status", camera_id="cam-01", calibrated=True), timeout=1)
