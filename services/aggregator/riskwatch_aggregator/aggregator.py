"""Aggregator: applies AssessmentResults to camera risk state, persists it in the cache and pushes changes.

Durability: a result that changes a camera's state is acknowledged (its handler returns) only once that
state — or a later one — is written to the cache and published; the Stage runs handlers concurrently and
commits offsets contiguously, so while Redis is down later results keep being applied in memory, nothing
is committed past the first unwritten change, and a crash loses nothing (Kafka redelivers).

Order: `apply` runs synchronously at the start of `handle`, before any await, so results are applied in
the order the Stage dispatched them even though their handlers then wait concurrently.

Restore: a camera's first result is not applied until its persisted state has been read back (by the
writer task, which retries while Redis is down), so a restart continues from the stored state and its
version instead of overwriting it with a fresh one.

Push: state is SET (with TTL) before it is PUBLISHED on the risk-state channel, and each new alert is
appended to its camera's stream before it is PUBLISHED on the alerts channel, so a client that reads and
then subscribes misses nothing. While Redis is down, changes of one camera coalesce; its latest state is
written and published when Redis is back (alerts are appended and published one by one, none dropped).

Provisional alerts (state.py): a measured result is a result like the others (acknowledged once written), and its
provisional is part of the persisted state, so a restart keeps it. Expiry needs no result: a sweep every
`provisional_ttl_s / 10` (at most 1 s) closes the provisionals of the cameras this process holds (and drops their
groups past group_ttl_s, which before waited for the camera's next result). After a restart, a camera's persisted
provisional is closed once its first result has restored it, as nothing is read before. An alert is
de-duplicated in the stream by its id (state.alert_id: task id, kind, resolution), not its task id alone, since a
task has a provisional alert and then the verdict alert that resolves it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from riskwatch import events
from riskwatch.bus import Outgoing, Record
from riskwatch.cache import Cache, keys
from riskwatch.domain import RiskLevel
from riskwatch.errors import DecodeError, Unavailable
from riskwatch.retry import RetryCallState, retrying
from riskwatch.telemetry.metrics import END_TO_END_LATENCY, forget_camera
from riskwatch.v1 import events_pb2
from riskwatch_aggregator.config import AggregatorSettings
from riskwatch_aggregator.metrics import (
    CACHE_BACKLOG,
    CACHE_UP,
    CAMERA_RISK,
    PROVISIONAL_RESOLUTION_SECONDS,
    PROVISIONAL_RESOLUTIONS,
    RESULTS_IGNORED,
    STATE_CHANGES,
)
from riskwatch_aggregator.state import Applied, Outcome, RiskStateBook, alert_id, resolution_name

log = logging.getLogger(__name__)


def decode_result(record: Record) -> events_pb2.AssessmentResult:
    return events.decode(
        events_pb2.AssessmentResult, record.value, what=record.where, required=("task_id", "camera_id")
    )


class Aggregator:
    """Stage handler with no outputs; a background writer persists and pushes state, retrying while Redis is down."""

    def __init__(self, settings: AggregatorSettings, cache: Cache, *, clock: Callable[[], float] = time.time) -> None:
        self._config = settings.aggregator
        self._redis = settings.redis
        self._cache = cache
        self._clock = clock
        self._book = RiskStateBook(settings.aggregator)
        # Cameras whose persisted state has not been read yet, with the results that arrived meanwhile.
        self._unrestored: dict[str, list[tuple[events_pb2.AssessmentResult, float]]] = {}
        self._dirty: set[str] = set()
        self._alerts: dict[str, list[bytes]] = {}
        # When each camera last had a result: cameras idle longer than camera_idle_s are forgotten.
        self._last_result: dict[str, float] = {}
        self._idle_s = self._config.camera_idle_s or float(self._redis.state_ttl_s)
        self._next_eviction = 0.0
        # Per camera: sequence number of the latest change, of the latest persisted one, and who waits.
        self._seq: dict[str, int] = {}
        self._persisted: dict[str, int] = {}
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._sweep_s = min(1.0, self._config.provisional_ttl_s / 10)
        self._outage_since: float | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write_forever(), name="aggregator-writer")
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="aggregator-provisional-sweep")

    async def stop(self) -> None:
        """Stop the sweep and the writer and try one last write; what cannot be written stays unacknowledged in
        Kafka (and an expiry not written is made again after the restart)."""
        for task in (self._sweeper, self._writer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._sweeper = self._writer = None
        try:
            await self._write()
        except Unavailable as exc:
            log.warning("cache unavailable at shutdown (%s); %d camera states left unwritten", exc, self.backlog)

    # ---- the stage handler -------------------------------------------------------------------------
    async def handle(self, record: Record) -> Sequence[Outgoing]:
        result = decode_result(record)
        seq = self.apply(result)
        if seq is not None:
            await self.persisted(result.camera_id, seq)
        return []

    def apply(self, result: events_pb2.AssessmentResult) -> int | None:
        """Apply a result in memory; the change's sequence number if it must be persisted before acknowledging."""
        camera_id = result.camera_id
        now = self._clock()
        self._last_result[camera_id] = now
        if not self._book.known(camera_id) or camera_id in self._unrestored:
            self._unrestored.setdefault(camera_id, []).append((result, now))
            return self._changed(camera_id)
        if not self._apply_restored(result, now):
            return None
        return self._changed(camera_id)

    async def persisted(self, camera_id: str, seq: int) -> None:
        """Return once change `seq` of `camera_id` (or a later one) is in the cache."""
        if self._persisted.get(camera_id, 0) >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(camera_id, []).append((seq, future))
        await future

    def expire_provisionals(self) -> None:
        """Close the provisionals past provisional_ttl_s of every camera held here (the sweep calls this)."""
        now = self._clock()
        for camera_id in self._book.cameras():
            if camera_id in self._unrestored:
                continue
            applied = self._book.expire(camera_id, now)
            if applied.outcome is Outcome.CHANGED:
                self._record(camera_id, applied)
                self._changed(camera_id)

    def state(self, camera_id: str) -> events_pb2.CameraRiskState | None:
        """The camera's current state in memory (possibly not yet persisted)."""
        return self._book.get(camera_id)

    @property
    def backlog(self) -> int:
        return len(self._dirty | set(self._unrestored))

    # ---- in memory ---------------------------------------------------------------------------------
    def _apply_restored(self, result: events_pb2.AssessmentResult, now: float) -> bool:
        applied = self._book.apply(result, now)
        if applied.outcome is not Outcome.CHANGED:
            RESULTS_IGNORED.labels(applied.outcome.value).inc()
            return False
        # Capture to state: measured results apart, as they come before any LLM and would hide its latency.
        stage = "provisional_state" if result.WhichOneof("outcome") == "measured" else "risk_state"
        END_TO_END_LATENCY.labels(stage).observe(max(now - events.seconds(result.capture_time), 0.0))
        self._record(result.camera_id, applied)
        return True

    def _record(self, camera_id: str, applied: Applied) -> None:
        """Count a change of the camera's state and queue its alerts for the writer."""
        state = self._book.get(camera_id)
        assert state is not None
        STATE_CHANGES.labels(camera_id).inc()
        CAMERA_RISK.labels(camera_id).set(RiskLevel.from_proto(state.max_level) - 1)
        for closed in applied.closed:
            resolution = resolution_name(closed.resolution)
            PROVISIONAL_RESOLUTIONS.labels(camera_id, resolution).inc()
            PROVISIONAL_RESOLUTION_SECONDS.labels(resolution).observe(closed.after_s)
        self._alerts.setdefault(camera_id, []).extend(alert.SerializeToString() for alert in applied.alerts)

    def _changed(self, camera_id: str) -> int:
        seq = self._seq.get(camera_id, 0) + 1
        self._seq[camera_id] = seq
        self._dirty.add(camera_id)
        self._wake.set()
        CACHE_BACKLOG.set(self.backlog)
        return seq

    # ---- background --------------------------------------------------------------------------------
    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_s)
            try:
                self.expire_provisionals()
            except Exception:  # a bug: keep sweeping, or no provisional would ever expire again
                log.exception("expiring provisional alerts failed; trying again in %.1f s", self._sweep_s)

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            async for attempt in retrying(
                # Unavailable, or a bug: either way retry, never leave handlers waiting
                retry_on=Exception,
                initial_s=self._config.cache_retry_s,
                max_s=self._config.cache_retry_max_s,
                before_sleep=self._cache_down,
            ):
                with attempt:
                    self._wake.clear()  # what changes from here on is written by this attempt or the next
                    await self._write()
            CACHE_UP.set(1)
            if self._outage_since is not None:
                log.info("cache is back after %.1f s; state written back", self._clock() - self._outage_since)
                self._outage_since = None

    def _cache_down(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if not isinstance(exc, Unavailable):
            log.error("writing risk state to the cache failed unexpectedly; retrying", exc_info=exc)
        if self._outage_since is None:
            self._outage_since = self._clock()
            log.warning(
                "cache unavailable (%s): keeping state in memory, %d camera(s) waiting; retrying with backoff",
                exc,
                self.backlog,
            )
        CACHE_UP.set(0)
        CACHE_BACKLOG.set(self.backlog)

    async def _write(self) -> None:
        """Restore, persist and publish everything pending; raises Unavailable, leaving the rest pending."""
        for camera_id in list(self._unrestored):
            data = await self._cache.get(keys.camera_state(camera_id))
            self._restore(camera_id, data)
        for camera_id in sorted(self._dirty):
            alerts = self._alerts.get(camera_id, [])
            if alerts:
                # A crash between appending an alert and writing the state redelivers the result, which then
                # applies again to the older persisted state: the stream's tail says whether it is there already.
                recorded = await self._recorded_alert_ids(camera_id, len(alerts))
            while alerts:
                if _alert_id(alerts[0]) not in recorded:
                    await self._cache.stream_add(
                        keys.camera_alerts(camera_id),
                        alerts[0],
                        self._redis.alert_history_len,
                        ttl_s=self._redis.state_ttl_s,
                    )
                    # Appended before published, like the state: a reader that reads the tail, then listens,
                    # misses none. The gateway forwards exactly these pushes; it does not re-read the stream.
                    await self._cache.publish(keys.ALERTS_CHANNEL, alerts[0])
                alerts.pop(0)
            state = self._book.get(camera_id)
            seq = self._seq[camera_id]
            if state is not None:
                data = state.SerializeToString()
                # SET before PUBLISH: a reader that GETs and then subscribes cannot miss this version.
                await self._cache.set(keys.camera_state(camera_id), data, self._redis.state_ttl_s)
                # Indexed after the SET, so the gateway's resync never finds an id without a state to read.
                await self._cache.index_touch(keys.cameras_index(), camera_id, self._clock())
                await self._cache.publish(keys.RISK_STATE_CHANNEL, data)
            if self._seq[camera_id] == seq:
                self._dirty.discard(camera_id)
            self._mark_persisted(camera_id, seq)
        CACHE_BACKLOG.set(self.backlog)
        await self._evict_idle()

    async def _evict_idle(self) -> None:
        """Forget cameras without a result for camera_idle_s (memory, metric labels, the Redis index); at most
        once a minute. A camera with anything pending stays."""
        now = self._clock()
        if now < self._next_eviction:
            return
        self._next_eviction = now + min(60.0, self._idle_s)
        idle = [c for c, seen in self._last_result.items() if now - seen > self._idle_s]
        for camera_id in idle:
            pending = camera_id in self._dirty or camera_id in self._unrestored or self._waiters.get(camera_id)
            if pending or self._book.has_provisional(camera_id):
                continue
            self.forget(camera_id)
        # Other instances' cameras too: a state not written for the TTL has expired in Redis anyway.
        await self._cache.index_prune(keys.cameras_index(), now - self._redis.state_ttl_s)

    def forget(self, camera_id: str) -> None:
        """Drop everything kept for one camera; its next result restores it from the cache."""
        self._book.forget(camera_id)
        self._last_result.pop(camera_id, None)
        self._seq.pop(camera_id, None)
        self._persisted.pop(camera_id, None)
        self._waiters.pop(camera_id, None)
        self._alerts.pop(camera_id, None)
        forget_camera(camera_id, STATE_CHANGES, CAMERA_RISK, PROVISIONAL_RESOLUTIONS)
        log.info(
            "camera %s forgotten after %.0f s without results", camera_id, self._idle_s, extra={"camera_id": camera_id}
        )

    async def _recorded_alert_ids(self, camera_id: str, pending: int) -> set[str]:
        tail = await self._cache.stream_tail(keys.camera_alerts(camera_id), pending + ALERT_DEDUP_WINDOW)
        return {_alert_id(entry) for entry in tail}

    def _restore(self, camera_id: str, data: bytes | None) -> None:
        persisted = None
        if data:
            try:
                persisted = events.decode(
                    events_pb2.CameraRiskState, data, what=f"cache {keys.camera_state(camera_id)}"
                )
            except DecodeError as exc:
                log.error("%s; starting camera %s empty", exc, camera_id, extra={"camera_id": camera_id})
        self._book.reset(camera_id, persisted)
        for result, now in self._unrestored.pop(camera_id):
            self._apply_restored(result, now)
        self._dirty.add(camera_id)

    def _mark_persisted(self, camera_id: str, seq: int) -> None:
        self._persisted[camera_id] = max(self._persisted.get(camera_id, 0), seq)
        waiting = self._waiters.get(camera_id)
        if not waiting:
            return
        still = []
        for want, future in waiting:
            if future.done():
                continue
            if want <= seq:
                future.set_result(None)
            else:
                still.append((want, future))
        self._waiters[camera_id] = still


# How many of the newest alerts are checked for an alert id about to be appended again.
ALERT_DEDUP_WINDOW = 50


def _alert_id(alert: bytes) -> str:
    try:
        return alert_id(events.decode(events_pb2.AssessmentResult, alert, what="alert"))
    except (DecodeError, ValueError):  # ValueError: a level this build does not know
        return ""
