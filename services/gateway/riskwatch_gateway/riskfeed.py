"""Follows the aggregator's pushes in the cache (risk-state changes and alerts, each on its own channel) and
hands them to the fan-out as they come; answers "what is this camera's state now" and "its recent alerts" for new
subscribers. The aggregator deduplicates alerts; this only forwards them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from riskwatch.cache import Cache, keys
from riskwatch.errors import DecodeError, Unavailable
from riskwatch.events import decode
from riskwatch.v1 import events_pb2
from riskwatch_gateway.cachefeed import follow
from riskwatch_gateway.fanout import Hub, Update, UpdateKind

log = logging.getLogger(__name__)


class RiskFeed:
    def __init__(self, cache: Cache, hub: Hub, known_cameras: Callable[[], Iterable[str]]) -> None:
        self._cache = cache
        self._hub = hub
        self._known_cameras = known_cameras
        self._states: dict[str, events_pb2.CameraRiskState] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._listening: set[str] = set()
        # Set once both channels are subscribed (and the states caught up from the cache).
        self.subscribed = asyncio.Event()

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(
                follow(self._cache, keys.RISK_STATE_CHANNEL, self._on_state, self._resync), name="risk-state-feed"
            ),
            asyncio.create_task(
                follow(self._cache, keys.ALERTS_CHANNEL, self._on_alert, self._alerts_subscribed), name="alert-feed"
            ),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def _ready(self, channel: str) -> None:
        self._listening.add(channel)
        if self._listening >= {keys.RISK_STATE_CHANNEL, keys.ALERTS_CHANNEL}:
            self.subscribed.set()

    # ---- risk state ------------------------------------------------------------------------------
    async def _resync(self) -> None:
        camera_ids = set(self._known_cameras())
        # The aggregator prunes the index of cameras whose state expired, so this stays as small as what is live.
        camera_ids.update(await self._cache.index_members(keys.cameras_index(), since=0))
        for camera_id in sorted(camera_ids):
            state = await self._read_state(camera_id)
            if state is not None:
                self._accept(state)
        self._ready(keys.RISK_STATE_CHANNEL)

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
        self._accept(decode(events_pb2.CameraRiskState, data, what=f"channel {keys.RISK_STATE_CHANNEL}"))

    def _accept(self, state: events_pb2.CameraRiskState) -> None:
        camera_id = state.camera_id
        if not camera_id:
            raise DecodeError("risk state without camera_id")
        current = self._states.get(camera_id)
        if current is not None and state.version <= current.version:
            return
        self._states[camera_id] = state
        self._hub.publish(Update(UpdateKind.RISK_STATE, camera_id, risk_state=state))

    # ---- alerts ----------------------------------------------------------------------------------
    async def _alerts_subscribed(self) -> None:
        self._ready(keys.ALERTS_CHANNEL)

    async def _on_alert(self, data: bytes) -> None:
        alert = decode(events_pb2.AssessmentResult, data, what=f"channel {keys.ALERTS_CHANNEL}")
        if not alert.camera_id:
            raise DecodeError("alert without camera_id")
        self._hub.publish(Update(UpdateKind.ALERT, alert.camera_id, alert=alert))

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
