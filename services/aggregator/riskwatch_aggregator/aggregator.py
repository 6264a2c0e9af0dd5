"""Aggregator: applies AssessmentResults to camera risk state, persists it in the cache and pushes changes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from prometheus_client import Counter, Gauge
from riskwatch import events
from riskwatch.bus import Outgoing, Record
from riskwatch.cache import Cache, keys
from riskwatch.errors import DecodeError, Unavailable
from riskwatch.telemetry.metrics import END_TO_END_LATENCY
from riskwatch.v1 import events_pb2

from riskwatch_aggregator.config import AggregatorSettings
from riskwatch_aggregator.state import RiskStateBook

log = logging.getLogger(__name__)

STATE_CHANGES = Counter("riskwatch_risk_state_changes_total", "Camera risk state changes pushed", ["camera_id"])
RESULTS_IGNORED = Counter("riskwatch_results_ignored_total", "Results that changed nothing", ["reason"])
CAMERA_RISK = Gauge("riskwatch_camera_risk_level", "Camera's maximum risk level (0 none .. 3 high)", ["camera_id"])
CACHE_BACKLOG = Gauge("riskwatch_cache_backlog", "Camera states waiting to be written back to the cache")


def decode_result(record: Record) -> events_pb2.AssessmentResult:
    result = events.decode(events_pb2.AssessmentResult, record.value, what=record.where)
    if not result.task_id or not result.camera_id:
        raise DecodeError(f"{record.where}: AssessmentResult without task_id or camera_id")
    return result


class Aggregator:
    """Stage handler with no outputs. When the cache is down, state stays in memory and is written back later."""

    def __init__(self, settings: AggregatorSettings, cache: Cache) -> None:
        self._settings = settings
        self._cache = cache
        self._book = RiskStateBook(settings.aggregator)
        self._dirty: dict[str, events_pb2.CameraRiskState] = {}
        self._alerts: list[tuple[str, bytes]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._write_back_forever(), name="aggregator-write-back")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        await self._write_back()

    async def handle(self, record: Record) -> Sequence[Outgoing]:
        result = decode_result(record)
        await self._restore(result.camera_id)
        state = self._book.apply(result, time.time())
        if state is None:
            RESULTS_IGNORED.labels("failure" if result.HasField("failure") else "unchanged").inc()
            return []
        STATE_CHANGES.labels(state.camera_id).inc()
        CAMERA_RISK.labels(state.camera_id).set(events.RISK_ORDER[state.max_level] - 1)
        END_TO_END_LATENCY.labels("risk_state").observe(time.time() - events.seconds(result.capture_time))
        self._dirty[state.camera_id] = events_pb2.CameraRiskState.FromString(state.SerializeToString())
        if events.RISK_ORDER[result.verdict.risk_level] >= events.RISK_ORDER[events_pb2.RISK_LEVEL_LOW]:
            self._alerts.append((state.camera_id, result.SerializeToString()))
        await self._write_back()
        return []

    async def _restore(self, camera_id: str) -> None:
        """After a restart, continue from the state persisted in the cache rather than from nothing."""
        if self._book.known(camera_id):
            return
        try:
            data = await self._cache.get(keys.camera_state(camera_id))
        except Unavailable as exc:
            log.warning(
                "cannot restore state of %s (%s); starting empty", camera_id, exc, extra={"camera_id": camera_id}
            )
            return
        if data:
            self._book.restore(events_pb2.CameraRiskState.FromString(data))

    async def _write_back(self) -> None:
        """Persist, record alerts and push every pending change; on failure keep them for the next try."""
        ttl = self._settings.redis.state_ttl_s
        try:
            while self._alerts:
                camera_id, alert = self._alerts[0]
                await self._cache.stream_add(
                    keys.camera_alerts(camera_id), alert, self._settings.redis.alert_history_len
                )
                self._alerts.pop(0)
            for camera_id in list(self._dirty):
                data = self._dirty[camera_id].SerializeToString()
                await self._cache.set(keys.camera_state(camera_id), data, ttl)
                await self._cache.publish(keys.RISK_STATE_CHANNEL, data)
                del self._dirty[camera_id]
        except Unavailable as exc:
            log.warning("cache unavailable (%s); %d states kept in memory for write-back", exc, len(self._dirty))
        CACHE_BACKLOG.set(len(self._dirty))

    async def _write_back_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.aggregator.cache_retry_s)
            if self._dirty or self._alerts:
                await self._write_back()
