"""The REST API of PROTOCOL.md: cameras, their calibration, state and alerts. Errors are raised as RiskwatchError
and answered by the app's exception handler through riskwatch.errors (one table for every protocol)."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from riskwatch.errors import InvalidRequest, LimitReached, RiskwatchError, client_message, http_status
from riskwatch_gateway import messages
from riskwatch_gateway.access import requires
from riskwatch_gateway.cameras import (
    CameraRegistry,
    SourceNotAllowed,
    SourceUnavailable,
    camera_fields,
    parse_calibration,
    parse_camera,
)
from riskwatch_gateway.config import Role
from riskwatch_gateway.history import MAX_HISTORY, risk_history
from riskwatch_gateway.riskfeed import RiskFeed

CAMERA_BODY = 'the body must be a JSON object: {"id", "source", "fps"?, "loop"?, "allow_offline"?}'
CALIBRATION_PATH = "/api/cameras/{camera_id}/calibration"
CALIBRATION_BODY = 'the body must be a JSON object: {"image_points": [[x, y], ...], "ground_points": [[x, y], ...]}'
# 64 point pairs take about 4 KiB of JSON; anything much bigger is not a calibration.
CALIBRATION_MAX_BODY_BYTES = 64 * 1024


class BodyTooLarge(LimitReached):
    """A request body over its endpoint's limit, refused without being read further."""

    http_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


async def riskwatch_error(request: Request, exc: Exception) -> JSONResponse:
    """The exception handler: `{"error": message}` with the error's HTTP status."""
    return JSONResponse({"error": client_message(exc)}, status_code=http_status(exc))


EXCEPTION_HANDLERS: dict[Any, Any] = {RiskwatchError: riskwatch_error}


class RestApi:
    """Routes under /api/ over the camera registry and the risk feed."""

    def __init__(self, cameras: CameraRegistry, feed: RiskFeed) -> None:
        self._cameras = cameras
        self._feed = feed

    def routes(self) -> list[Route]:
        return [
            Route("/api/cameras", self.list_cameras, methods=["GET"]),
            Route("/api/cameras", requires(Role.ADMIN, self.add_camera), methods=["POST"]),
            Route("/api/cameras/{camera_id}", requires(Role.ADMIN, self.remove_camera), methods=["DELETE"]),
            Route(CALIBRATION_PATH, self.get_calibration, methods=["GET"]),
            Route(CALIBRATION_PATH, requires(Role.ADMIN, self.put_calibration), methods=["PUT"]),
            Route(CALIBRATION_PATH, requires(Role.ADMIN, self.delete_calibration), methods=["DELETE"]),
            Route("/api/cameras/{camera_id}/state", self.camera_state, methods=["GET"]),
            Route("/api/cameras/{camera_id}/alerts", self.camera_alerts, methods=["GET"]),
            Route("/api/cameras/{camera_id}/history", self.camera_history, methods=["GET"]),
        ]

    async def list_cameras(self, request: Request) -> JSONResponse:
        return JSONResponse({"cameras": [camera.json() for camera in self._cameras.all()]})

    async def add_camera(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest(CAMERA_BODY) from exc
        if not isinstance(body, dict):
            raise InvalidRequest(CAMERA_BODY)
        allow_offline = body.get("allow_offline", False)
        if not isinstance(allow_offline, bool):
            raise InvalidRequest("allow_offline must be true or false")
        try:
            camera = await self._cameras.add_checked(parse_camera(camera_fields(body)), allow_offline=allow_offline)
        except (SourceNotAllowed, SourceUnavailable) as exc:
            # The reason on its own, for clients that act on it (e.g. offer allow_offline for an unreadable one).
            return JSONResponse({"error": client_message(exc), "reason": exc.reason}, status_code=http_status(exc))
        return JSONResponse({"camera": camera.json()}, status_code=201)

    async def remove_camera(self, request: Request) -> Response:
        await self._cameras.remove(request.path_params["camera_id"])
        return Response(status_code=204)

    async def get_calibration(self, request: Request) -> JSONResponse:
        return JSONResponse(self._cameras.get(request.path_params["camera_id"]).calibration.to_dict())

    async def put_calibration(self, request: Request) -> JSONResponse:
        camera_id = self._cameras.get(request.path_params["camera_id"]).camera_id
        body = await _bounded_json(request, CALIBRATION_MAX_BODY_BYTES, CALIBRATION_BODY)
        if not isinstance(body, dict):
            raise InvalidRequest(CALIBRATION_BODY)
        return JSONResponse(self._cameras.set_calibration(camera_id, parse_calibration(body)).to_dict())

    async def delete_calibration(self, request: Request) -> JSONResponse:
        return JSONResponse(self._cameras.delete_calibration(request.path_params["camera_id"]).to_dict())

    async def camera_state(self, request: Request) -> JSONResponse:
        camera_id = self._cameras.get(request.path_params["camera_id"]).camera_id
        return JSONResponse(messages.risk_state_json(await self._feed.current_state(camera_id)))

    async def camera_alerts(self, request: Request) -> JSONResponse:
        camera_id = self._cameras.get(request.path_params["camera_id"]).camera_id
        try:
            limit = max(1, min(int(request.query_params.get("limit", "50")), 1000))
        except ValueError as exc:
            raise InvalidRequest("limit must be an integer") from exc
        alerts = await self._feed.recent_alerts(camera_id, limit)
        return JSONResponse({"alerts": [messages.alert_json(a, replay=True) for a in alerts]})

    async def camera_history(self, request: Request) -> JSONResponse:
        """The dashboard's timeline on page load: levels over time, the alerts behind them, the current state."""
        camera_id = self._cameras.get(request.path_params["camera_id"]).camera_id
        try:
            limit = max(1, min(int(request.query_params.get("limit", "100")), MAX_HISTORY))
        except ValueError as exc:
            raise InvalidRequest("limit must be an integer") from exc
        alerts = await self._feed.recent_alerts(camera_id, limit)
        state = await self._feed.current_state(camera_id)
        return JSONResponse(
            {
                "camera_id": camera_id,
                "levels": risk_history(alerts, state),
                "alerts": [messages.alert_json(a, replay=True) for a in alerts],
                "state": messages.risk_state_json(state),
            }
        )


async def _bounded_json(request: Request, limit: int, expected: str) -> Any:
    """The request's JSON body, read no further than `limit` bytes (413 beyond); 400 with `expected` if not JSON."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(expected) from exc
