"""A failed assessment reaches WebSocket clients: the `failure` alert, and the group marked failed in `risk_state`."""

from __future__ import annotations

from websockets.asyncio.client import connect

from riskwatch.cache import InMemoryCache
from riskwatch.v1 import events_pb2
from riskwatch_gateway.app import GatewayApp
from riskwatch_gateway.testing import of_type, publish_alert, publish_state, recv_until, risk_state, send

FAILURE = events_pb2.Failure(kind=events_pb2.FAILURE_KIND_INVALID_REPLY, message="key-a: the reply is empty")


async def test_a_failure_alert_and_the_failed_group_reach_a_client(gateway: GatewayApp, cache: InMemoryCache) -> None:
    async with connect(f"ws://127.0.0.1:{gateway.http_port}/ws") as ws:
        await send(ws, {"type": "subscribe", "cameras": ["cam-01"]})
        await recv_until(ws, of_type("subscribed"))
        await publish_alert(
            cache,
            events_pb2.AssessmentResult(
                task_id="cam-01:7/g1", camera_id="cam-01", group_id="g1", attempts=2, failure=FAILURE
            ),
        )
        state = risk_state("cam-01", 1)
        state.groups[0].failure.CopyFrom(FAILURE)
        await publish_state(cache, state)
        alert = await recv_until(ws, of_type("alert"))
        assert alert["failure"] == {"kind": "invalid_reply", "message": "key-a: the reply is empty"}
        assert "risk_level" not in alert and alert["attempts"] == 2
        pushed = await recv_until(ws, of_type("risk_state", version=1))
        group = pushed["groups"][0]
        # the last verdict stays, flagged: the operator sees both the last known risk and that it is stale
        assert group["risk_level"] == "high" and group["failure"]["kind"] == "invalid_reply"
        await publish_state(cache, risk_state("cam-01", 2))
        assert "failure" not in (await recv_until(ws, of_type("risk_state", version=2)))["groups"][0]
