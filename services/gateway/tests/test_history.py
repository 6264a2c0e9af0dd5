"""GET /api/cameras/{id}/history: the camera's level after each alert (the highest of its groups), failures skipped,
ending with the current state; bounded by `limit`."""

from __future__ import annotations

import time

import httpx

from riskwatch.cache import InMemoryCache
from riskwatch.events import timestamp
from riskwatch.v1 import events_pb2
from riskwatch_gateway.app import GatewayApp
from riskwatch_gateway.testing import publish_alert, publish_state, risk_state


def _alert(group_id: str, at: float, level: events_pb2.RiskLevel.ValueType | None) -> events_pb2.AssessmentResult:
    alert = events_pb2.AssessmentResult(
        task_id=f"cam-01:{at}/{group_id}", camera_id="cam-01", group_id=group_id, completed_time=timestamp(at)
    )
    if level is None:
        alert.failure.CopyFrom(events_pb2.Failure(message="reply was not JSON"))
    else:
        alert.verdict.CopyFrom(events_pb2.Verdict(risk_level=level))
    return alert


async def test_history_replays_levels_from_alerts_and_ends_with_the_current_state(
    gateway: GatewayApp, cache: InMemoryCache
) -> None:
    now = time.time()
    await publish_alert(cache, _alert("g1", now - 30, events_pb2.RISK_LEVEL_HIGH))
    await publish_alert(cache, _alert("g2", now - 20, events_pb2.RISK_LEVEL_LOW))
    await publish_alert(cache, _alert("g2", now - 15, None))
    await publish_alert(cache, _alert("g1", now - 10, events_pb2.RISK_LEVEL_NONE))
    await publish_state(cache, risk_state("cam-01", 4, events_pb2.RISK_LEVEL_LOW))
    base = f"http://127.0.0.1:{gateway.http_port}/api/cameras"
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"{base}/cam-01/history")
        limited = await client.get(f"{base}/cam-01/history", params={"limit": 2})
        unknown = await client.get(f"{base}/nope/history")
        bad = await client.get(f"{base}/cam-01/history", params={"limit": "x"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    # g1 high → still high with g2 low → g2's failure changes nothing → g1 none leaves g2's low; then the state.
    assert [p["level"] for p in body["levels"]] == ["high", "high", "low", "low"]
    assert [round(p["time"]) for p in body["levels"][:3]] == [round(now - 30), round(now - 20), round(now - 10)]
    assert len(body["alerts"]) == 4 and body["alerts"][2]["failure"]["message"] == "reply was not JSON"
    assert body["state"]["version"] == 4
    assert len(limited.json()["alerts"]) == 2
    assert unknown.status_code == 404 and bad.status_code == 400
