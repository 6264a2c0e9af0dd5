"""Follows the aggregator's pushes in the cache (risk-state changes, alerts, health snapshots) and hands
them to the fan-out; answers "what is this camera's state now" for new subscribers."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from riskwatch.cache import Cache, keys
from riskwatch.errors import DecodeError, Unavailable
from riskwatch.events import decode
from riskwatch.v1 import events_pb2
from riskwatch_gateway.fanout import Hub, Update, UpdateKind

log = logging.getLogger(__name__)
ALERT_SCAN = 20
SEEN_ALERTS_PER_CAMERA = 500


class RiskFeed:
    def __init__(self, cache: Cache, hub: Hub, known_cameras: Callable[[], Iterable[str]]) -> None:
        self._cache = cache
        self._hub = hub
        self._known_cameras = known_cameras
        self._states: dict[str, events_pb2.CameraRiskState] = {}
        self._seen_alerts: dict[str, OrderedDict[str, None]] = {}
        self._health: dict[str, dict[str, object]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.subscribed = asyncio.Event()

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(
                self._follow(keys.RISK_STATE_CHANNEL, self._on_state, self._resync), name="risk-state-feed"
            ),
            asyncio.create_task(self._follow(keys.HEALTH_CHANNEL, self._on_health, None), name="health-feed"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _follow(
        self,
        channel: str,
        handle: Callable[[bytes], Awaitable[None]],
        on_subscribed: Callable[[], Awaitable[None]] | None,
    ) -> None:
        backoff = 0.5
        while True:
            try:
                async with self._cache.subscribe(channel) as messages:
                    backoff = 0.5
                    if on_subscribed is not None:
                        # Changes published while we were not subscribed are caught up from the cache.
                        await on_subscribed()
                        self.subscribed.set()
                    await self._consume(channel, messages, handle)
            except Unavailable as exc:
                log.warning("cache channel %s unavailable (%s); resubscribing in %.1fs", channel, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _consume(
        self, channel: str, messages: AsyncIterator[bytes], handle: Callable[[bytes], Awaitable[None]]
    ) -> None:
        async for data in messages:
            try:
                await handle(data)
            except DecodeError as exc:
                log.warning("cache channel %s: skipped a message: %s", channel, exc)

    # ---- risk state ------------------------------------------------------------------------------
    async def _resync(self) -> None:
        camera_ids = set(self._known_cameras())
        try:
            index = await self._cache.get(keys.cameras_index())
            if index:
                camera_ids.update(str(c) for c in json.loads(index))
        except (ValueError, TypeError) as exc:
            log.warning("cache key %s is not a JSON list of camera ids: %s", keys.cameras_index(), exc)
        for camera_id in sorted(camera_ids):
            state = await self._read_state(camera_id)
            if state is not None:
                await self._accept(state, live=False)

    async def _read_state(self, camera_id: str) -> events_pb2.CameraRiskState | None:
        data = await self._cache.get(keys.camera_state(camera_id))
        if data is None:
            return None
        try:
            return decode(events_pb2.CameraRiskState, data, what=f"cache {keys.camera_state(camera_id)}")
        except DecodeError as exc:
            log.warning("%s", exc)
            return None

    async def _on_state(self, data: bytes) -> None:
        await self._accept(
            decode(events_pb2.CameraRiskState, data, what=f"channel {keys.RISK_STATE_CHANNEL}"), live=True
        )

    async def _accept(self, state: events_pb2.CameraRiskState, live: bool) -> None:
        camera_id = state.camera_id
        if not camera_id:
            raise DecodeError("risk state without camera_id")
        current = self._states.get(camera_id)
        if current is not None and state.version <= current.version:
            return
        self._states[camera_id] = state
        self._hub.publish(Update(UpdateKind.RISK_STATE, camera_id, risk_state=state))
        await self._forward_alerts(camera_id, publish=live or current is not None)

    async def _forward_alerts(self, camera_id: str, publish: bool) -> None:
        """Alerts the aggregator appended since we last looked (seeded silently on first sight)."""
        try:
            entries = await self._cache.stream_tail(keys.camera_alerts(camera_id), ALERT_SCAN)
        except Unavailable as exc:
            log.warning("camera %s: cannot read alerts: %s", camera_id, exc, extra={"camera_id": camera_id})
            return
        seen = self._seen_alerts.setdefault(camera_id, OrderedDict())
        for data in entries:
            try:
                result = decode(events_pb2.AssessmentResult, data, what=f"cache {keys.camera_alerts(camera_id)}")
            except DecodeError as exc:
                log.warning("%s", exc)
                continue
            if result.task_id in seen:
                continue
            seen[result.task_id] = None
            if len(seen) > SEEN_ALERTS_PER_CAMERA:
                seen.popitem(last=False)
            if publish:
                self._hub.publish(Update(UpdateKind.ALERT, camera_id, alert=result))

    async def current_state(self, camera_id: str) -> events_pb2.CameraRiskState:
        """The newest state we know, from the cache or the feed; an empty version-0 state if none."""
        try:
            cached = await self._read_state(camera_id)
        except Unavailable as exc:
            log.warning("camera %s: cache unavailable for current state: %s", camera_id, exc)
            cached = None
        known = self._states.get(camera_id)
        best = known
        if cached is not None and (known is None or cached.version > known.version):
            best = cached
        if best is None:
            return events_pb2.CameraRiskState(camera_id=camera_id)
        return best

    async def recent_alerts(self, camera_id: str, count: int) -> list[events_pb2.AssessmentResult]:
        if count <= 0:
            return []
        try:
            entries = await self._cache.stream_tail(keys.camera_alerts(camera_id), count)
        except Unavailable as exc:
            log.warning("camera %s: cannot read alerts: %s", camera_id, exc)
            return []
        out = []
        for data in entries:
            try:
                out.append(decode(events_pb2.AssessmentResult, data, what=f"cache {keys.camera_alerts(camera_id)}"))
            except DecodeError as exc:
                log.warning("%s", exc)
        return out

    # ---- health ----------------------------------------------------------------------------------
    async def _on_health(self, data: bytes) -> None:
        try:
            snapshot = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(f"channel {keys.HEALTH_CHANNEL}: not JSON ({exc})") from exc
        if not isinstance(snapshot, dict):
            raise DecodeError(f"channel {keys.HEALTH_CHANNEL}: expected a JSON object")
        source = str(snapshot.get("source") or snapshot.get("component") or "pipeline")
        self._health[source] = snapshot
        self._hub.publish(Update(UpdateKind.HEALTH, source, payload={"type": "health", **snapshot, "source": source}))

    def health_snapshots(self) -> list[dict[str, object]]:
        return [{"type": "health", **snapshot} for snapshot in self._health.values()]
