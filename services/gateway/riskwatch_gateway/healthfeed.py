"""Follows the pipeline's health snapshots (key pool, consumer lag) in the cache and hands them to the fan-out;
keeps the latest of each source for clients that subscribe later."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from riskwatch.cache import Cache, keys
from riskwatch.errors import DecodeError
from riskwatch_gateway.cachefeed import follow
from riskwatch_gateway.fanout import Hub, Update, UpdateKind


class HealthFeed:
    def __init__(self, cache: Cache, hub: Hub) -> None:
        self._cache = cache
        self._hub = hub
        self._latest: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(
            follow(self._cache, keys.HEALTH_CHANNEL, self._on_snapshot), name="health-feed"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _on_snapshot(self, data: bytes) -> None:
        try:
            snapshot = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(f"channel {keys.HEALTH_CHANNEL}: not JSON ({exc})") from exc
        if not isinstance(snapshot, dict):
            raise DecodeError(f"channel {keys.HEALTH_CHANNEL}: expected a JSON object")
        source = str(snapshot.get("source") or snapshot.get("component") or "pipeline")
        self._latest[source] = snapshot
        self._hub.publish(Update(UpdateKind.HEALTH, source, payload={"type": "health", **snapshot, "source": source}))

    def updates(self) -> list[Update]:
        """The latest snapshot of each source, as a new subscriber gets them."""
        return [
            Update(UpdateKind.HEALTH, str(snapshot.get("source", "")), payload={"type": "health", **snapshot})
            for snapshot in self._latest.values()
        ]
