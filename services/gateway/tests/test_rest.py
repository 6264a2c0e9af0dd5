"""REST API, /healthz, /metrics, token authentication and the origin allow-list."""

from __future__ import annotations

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from riskwatch.cache import InMemoryCache
from riskwatch_gateway.app import GatewayApp
from riskwatch_gateway.config import CameraConfig
from riskwatch_gateway.testing import (
    GatewayFactory,
    make_settings,
    of_type,
    publish_state,
    recv_until,
    risk_state,
    send,
)


def base(gateway: GatewayApp) -> str:
    return f"http://127.0.0.1:{gateway.http_port}"


async def test_cameras_are_managed_over_rest(gateway: GatewayApp, cache: InMemoryCache) -> None:
    async with httpx.AsyncClient(base_url=base(gateway)) as http:
        listed = (await http.get("/api/cameras")).json()
        assert [c["camera_id"] for c in listed["cameras"]] == ["cam-01"]

        created = await http.post(
            "/api/cameras", json={"id": "cam-02", "source": "rtsp://bob:pw@cam/1", "fps": 1, "allow_offline": True}
        )
        assert created.status_code == 201
        assert created.json()["camera"]["source"] == "rtsp://***@cam/1"  # credentials never shown
        assert (await http.post("/api/cameras", json={"id": "cam-02", "source": "push"})).status_code == 409
        bad = await http.post("/api/cameras", json={"id": "cam-03", "source": "push", "fps": -1})
        assert bad.status_code == 400 and "fps" in bad.json()["error"]
        assert (await http.post("/api/cameras", content=b"{nope")).status_code == 400

        await publish_state(cache, risk_state("cam-02", 3))
        state = (await http.get("/api/cameras/cam-02/state")).json()
        assert (state["version"], state["max_level"]) == (3, "high")
        empty = (await http.get("/api/cameras/cam-01/state")).json()
        assert empty["version"] == 0
        assert (await http.get("/api/cameras/nope/state")).status_code == 404
        assert (await http.get("/api/cameras/cam-02/alerts")).json() == {"alerts": []}

        assert (await http.delete("/api/cameras/cam-02")).status_code == 204
        assert (await http.delete("/api/cameras/cam-02")).status_code == 404
        health = (await http.get("/healthz")).json()
        assert health["status"] == "ok" and health["cameras"] == 1
        metrics = (await http.get("/metrics/")).text
        assert "riskwatch_ws_dropped_total" in metrics


async def test_token_protects_rest_and_websocket(start_gateway: GatewayFactory) -> None:
    gateway: GatewayApp = await start_gateway(
        make_settings([CameraConfig(id="cam-01", source="push")], auth_token="s3cret")
    )
    async with httpx.AsyncClient(base_url=base(gateway)) as http:
        assert (await http.get("/api/cameras")).status_code == 401
        assert (await http.get("/api/cameras", headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await http.get("/api/cameras", headers={"Authorization": "Bearer s3cret"})).status_code == 200
        assert (await http.get("/api/cameras?token=s3cret")).status_code == 200
        assert (await http.get("/healthz")).status_code == 200
    url = f"ws://127.0.0.1:{gateway.http_port}/ws"
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with connect(url):
            pass
    assert refused.value.response.status_code == 401  # refused before the handshake, like REST
    async with connect(url + "?token=s3cret") as ws:
        await send(ws, {"type": "ping"})
        await recv_until(ws, of_type("pong"))
    async with connect(url, additional_headers={"Authorization": "Bearer s3cret"}) as ws:
        await send(ws, {"type": "ping"})
        await recv_until(ws, of_type("pong"))


async def test_browsers_from_other_origins_are_refused_unless_allowed(start_gateway: GatewayFactory) -> None:
    gateway: GatewayApp = await start_gateway(make_settings(allowed_origins=["http://ops.example"]))
    url = f"ws://127.0.0.1:{gateway.http_port}/ws"
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with connect(url, origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    for origin in ("http://ops.example", f"http://127.0.0.1:{gateway.http_port}"):
        async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
            await send(ws, {"type": "ping"})
            await recv_until(ws, of_type("pong"))
    async with httpx.AsyncClient(base_url=base(gateway)) as http:
        assert (await http.get("/api/cameras", headers={"Origin": "http://evil.example"})).status_code == 403
        allowed = await http.get("/api/cameras", headers={"Origin": "http://ops.example"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "http://ops.example"
