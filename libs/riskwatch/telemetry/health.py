"""Periodic health snapshots (key pool, consumer lag, …) pushed through the cache for the dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping

from riskwatch.cache import Cache, keys
from riskwatch.errors import Unavailable

log = logging.getLogger(__name__)


class HealthPublisher:
    """Publishes `{"source": ..., "interval_s": ..., **snapshot()}` on the health channel every `interval_s`; best
    effort. The dashboard shows a source silent for a few intervals as silent."""

    def __init__(
        self, cache: Cache, source: str, snapshot: Callable[[], Mapping[str, object]], interval_s: float = 2.0
    ) -> None:
        self._cache = cache
        self._source = source
        self._snapshot = snapshot
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"health-{self._source}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            snapshot = {"source": self._source, "interval_s": self._interval_s, **self._snapshot()}
            message = json.dumps(snapshot, default=str).encode()
            try:
                await self._cache.publish(keys.HEALTH_CHANNEL, message)
            except Unavailable as exc:
                log.debug("health snapshot of %s not published: %s", self._source, exc)
