"""The GatewayService servicer: domain logic only; errors become status codes in server.ErrorInterceptor."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import grpc

from riskwatch.domain.cameras import loggable_camera_id
from riskwatch.errors import InvalidFrame, InvalidRequest, LimitReached, RiskwatchError
from riskwatch.v1 import detector_pb2, gateway_pb2, gateway_pb2_grpc
from riskwatch_gateway import metrics
from riskwatch_gateway.cameras import CameraRegistry, calibration_fields, parse_calibration, parse_camera
from riskwatch_gateway.config import GatewayConfig
from riskwatch_gateway.fanout import ClientQueue, ClientTooSlow, Hub, Subscriber, TooManyClients, UpdateKind
from riskwatch_gateway.riskfeed import RiskFeed

log = logging.getLogger(__name__)


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, settings: GatewayConfig, cameras: CameraRegistry, feed: RiskFeed, hub: Hub) -> None:
        self._settings = settings
        self._cameras = cameras
        self._feed = feed
        self._hub = hub
        self._open_streams: dict[str, int] = {}

    @contextmanager
    def _stream_slot(self, method: str) -> Iterator[None]:
        """One of `max_grpc_streams` open streams of `method`; RESOURCE_EXHAUSTED (via the error table) beyond."""
        if self._open_streams.get(method, 0) >= self._settings.max_grpc_streams:
            raise LimitReached(f"too many open {method} streams (at most {self._settings.max_grpc_streams})")
        self._open_streams[method] = self._open_streams.get(method, 0) + 1
        try:
            yield
        finally:
            self._open_streams[method] -= 1

    async def PushFrames(
        self, request_iterator: AsyncIterator[gateway_pb2.PushFramesRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.PushFramesResponse]:
        with self._stream_slot("PushFrames"):
            async for request in request_iterator:
                frame = request.frame
                camera_id = loggable_camera_id(frame.camera_id)
                try:
                    event = await self._cameras.push_target(frame.camera_id).push(frame)
                except RiskwatchError as exc:
                    # One bad frame (or a detector hiccup) answers with an error; the stream stays open.
                    if not isinstance(exc, InvalidFrame | InvalidRequest):
                        log.warning(
                            "push camera %s frame %d: %s",
                            camera_id,
                            frame.frame_id,
                            exc,
                            extra={"camera_id": camera_id},
                        )
                    yield gateway_pb2.PushFramesResponse(
                        error=detector_pb2.FrameError(camera_id=camera_id, frame_id=frame.frame_id, message=str(exc))
                    )
                    continue
                yield gateway_pb2.PushFramesResponse(event=event)

    async def WatchCamera(
        self, request: gateway_pb2.WatchCameraRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.WatchCameraResponse]:
        camera_id = request.camera_id
        self._cameras.get(camera_id)
        subscriber = Subscriber(
            ClientQueue(
                self._settings.client_queue_size,
                self._settings.client_max_backlog,
                metrics.GRPC_WATCH_DROPPED,
                self._settings.client_max_backlog_bytes,
            ),
            detections=request.include_detections,
            kind="WatchCamera",
        )
        subscriber.cameras = {camera_id}
        subscriber.broadcasts = False
        try:
            # Subscribe before reading the current state, so no change between the two is lost.
            self._hub.add(subscriber, limit=self._settings.max_grpc_streams)
        except TooManyClients as exc:
            raise LimitReached(str(exc)) from exc
        metrics.GRPC_WATCHERS.inc()
        try:
            state = await self._feed.current_state(camera_id)
            subscriber.note_sent(state)
            yield gateway_pb2.WatchCameraResponse(risk_state=state)
            while True:
                try:
                    update = await subscriber.next()
                except ClientTooSlow:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED, "this WatchCamera stream fell too far behind; watch again"
                    )
                if update.kind is UpdateKind.DETECTIONS and update.detection is not None:
                    yield gateway_pb2.WatchCameraResponse(detections=update.detection)
                elif update.kind is UpdateKind.RISK_STATE and update.risk_state is not None:
                    yield gateway_pb2.WatchCameraResponse(risk_state=update.risk_state)
                elif update.kind is UpdateKind.CAMERA_STATUS and (update.camera_extra or {}).get("removed"):
                    return
        finally:
            self._hub.discard(subscriber)
            metrics.GRPC_WATCHERS.dec()

    async def ListCameras(
        self, request: gateway_pb2.ListCamerasRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListCamerasResponse:
        return gateway_pb2.ListCamerasResponse(cameras=[camera.info() for camera in self._cameras.all()])

    async def AddCamera(
        self, request: gateway_pb2.AddCameraRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.AddCameraResponse:
        fields: dict[str, object] = {
            "id": request.camera.camera_id,
            "source": request.camera.source,
            "loop": request.camera.loop,
        }
        if request.camera.fps:
            fields["fps"] = request.camera.fps
        camera = await self._cameras.add_checked(parse_camera(fields), allow_offline=request.allow_offline)
        return gateway_pb2.AddCameraResponse(camera=camera.info())

    async def RemoveCamera(
        self, request: gateway_pb2.RemoveCameraRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RemoveCameraResponse:
        await self._cameras.remove(request.camera_id)
        return gateway_pb2.RemoveCameraResponse()

    async def GetCameraState(
        self, request: gateway_pb2.GetCameraStateRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetCameraStateResponse:
        self._cameras.get(request.camera_id)
        return gateway_pb2.GetCameraStateResponse(state=await self._feed.current_state(request.camera_id))

    async def GetCalibration(
        self, request: gateway_pb2.GetCalibrationRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetCalibrationResponse:
        camera = self._cameras.get(request.camera_id)
        return gateway_pb2.GetCalibrationResponse(calibration=camera.calibration.to_proto())

    async def SetCalibration(
        self, request: gateway_pb2.SetCalibrationRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SetCalibrationResponse:
        self._cameras.get(request.camera_id)
        points = parse_calibration(calibration_fields(request.calibration))
        calibration = self._cameras.set_calibration(request.camera_id, points)
        return gateway_pb2.SetCalibrationResponse(calibration=calibration.to_proto())

    async def DeleteCalibration(
        self, request: gateway_pb2.DeleteCalibrationRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DeleteCalibrationResponse:
        calibration = self._cameras.delete_calibration(request.camera_id)
        return gateway_pb2.DeleteCalibrationResponse(calibration=calibration.to_proto())
