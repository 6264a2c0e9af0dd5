"""The consume → process → publish → acknowledge loop every streaming stage runs, with a dead-letter topic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from riskwatch.bus.base import Consumer, EventBus, Lag, Outgoing, Record
from riskwatch.errors import DecodeError
from riskwatch.retry import log_retry, retrying
from riskwatch.telemetry import metrics

log = logging.getLogger(__name__)

Handler = Callable[[Record], Awaitable[Sequence[Outgoing]]]
# Exit status of a process whose stage loop failed.
STAGE_FAILED = 3
# A failing handler is retried after 0.4 s, 0.8 s, …; failing publishes after 0.5 s, 1 s, … up to 10 s.
HANDLER_RETRY_S, HANDLER_RETRY_MAX_S = 0.4, 10.0
PUBLISH_RETRY_S, PUBLISH_RETRY_MAX_S = 0.5, 10.0


class Stage:
    """Runs `handler` on each record. A record is acknowledged only after its outputs are acknowledged.

    - Undecodable records (DecodeError) go to the dead-letter topic at once.
    - Other handler errors are retried `max_attempts` times, then dead-lettered.
    - Publishing is retried until it succeeds or the stage stops: the broker coming back is the fix,
      and an unacknowledged record is redelivered after a restart anyway.
    - With `concurrency` > 1 records are processed concurrently; commits stay contiguous per partition.
    - If the loop itself fails (a bug, or a consumer that cannot go on, e.g. fenced by a newer member with its
      instance id), the stage drains what it can and the process exits with status STAGE_FAILED: a supervisor
      restarts it, instead of a process that looks alive and consumes nothing. Uncommitted records are
      redelivered.
    """

    def __init__(
        self,
        name: str,
        bus: EventBus,
        consumer: Consumer,
        handler: Handler,
        *,
        dead_letter_topic: Callable[[str], str],
        group: str,
        concurrency: int = 1,
        max_attempts: int = 3,
        commit_interval_s: float = 0.5,
        drain_timeout_s: float = 30.0,
    ) -> None:
        self.name = name
        self._bus = bus
        self._consumer = consumer
        self._handler = handler
        self._dead_letter_topic = dead_letter_topic
        self._group = group
        self._slot_freed = asyncio.Event()
        self._concurrency = concurrency
        self._max_attempts = max_attempts
        self._commit_interval_s = commit_interval_s
        self._drain_timeout_s = drain_timeout_s
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self.lag: dict[tuple[str, int], Lag] = {}

    async def start(self) -> None:
        """Run the loop in the background until `stop`."""
        self._runner = asyncio.create_task(self.run(), name=f"stage-{self.name}")

    async def stop(self) -> None:
        """Stop taking records, drain in-flight work (bounded), commit and leave the group."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner

    async def run(self) -> None:
        try:
            await self._loop()
        except Exception:
            log.critical(
                "%s: the consume loop failed; exiting with status %d so the process is restarted",
                self.name,
                STAGE_FAILED,
                exc_info=True,
            )
            with contextlib.suppress(Exception):
                await self._drain()
            # Out of the event loop and asyncio.run: the process ends rather than lingering without its stage.
            raise SystemExit(STAGE_FAILED) from None
        except BaseException:  # cancelled
            await self._drain()
            raise
        await self._drain()

    async def _loop(self) -> None:
        last_commit = time.monotonic()
        while not self._stopping.is_set():
            free = self._concurrency - len(self._tasks)
            if free == 0:
                await self._wait_for_slot()
            else:
                for record in await self._consumer.poll(max_records=free, timeout_s=0.2):
                    if self._concurrency == 1:
                        await self._process(record)
                    else:
                        task = asyncio.create_task(self._process(record))
                        self._tasks.add(task)
                        task.add_done_callback(self._done)
            if time.monotonic() - last_commit >= self._commit_interval_s:
                await self._commit()
                last_commit = time.monotonic()

    async def _wait_for_slot(self) -> None:
        self._slot_freed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._slot_freed.wait(), timeout=0.2)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: record processing crashed", self.name, exc_info=task.exception())

    async def _drain(self) -> None:
        if self._tasks:
            log.info("%s: draining %d in-flight records", self.name, len(self._tasks))
            _done, pending = await asyncio.wait(set(self._tasks), timeout=self._drain_timeout_s)
            for task in pending:
                task.cancel()  # handed back: uncommitted, so redelivered after restart
        try:
            await self._commit()
        finally:
            await self._consumer.close()  # leaves the group even when the commit failed
        log.info("%s: stopped, offsets committed", self.name)

    async def _commit(self) -> None:
        await self._consumer.commit()
        self.lag = self._consumer.lag()
        for (topic, partition), lag in self.lag.items():
            metrics.KAFKA_CONSUMER_LAG.labels(self._group, topic, str(partition)).set(lag.messages)
            metrics.KAFKA_CONSUMER_LAG_SECONDS.labels(self._group, topic, str(partition)).set(lag.seconds)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def health(self) -> dict[str, object]:
        """What the dashboard's health panel shows for this stage."""
        return {
            "consumer lag (messages)": sum(lag.messages for lag in self.lag.values()),
            "consumer lag (s)": round(max((lag.seconds for lag in self.lag.values()), default=0.0), 2),
            "in flight": self.in_flight,
        }

    async def _process(self, record: Record) -> None:
        outputs = await self._run_handler(record)
        await self.publish(outputs, record)
        self._consumer.ack(record)
        metrics.STAGE_RECORDS.labels(self.name, "processed").inc()

    async def _run_handler(self, record: Record) -> Sequence[Outgoing]:
        try:
            async for attempt in retrying(
                retry_on=_retryable,
                initial_s=HANDLER_RETRY_S,
                max_s=HANDLER_RETRY_MAX_S,
                attempts=self._max_attempts,
                before_sleep=log_retry(log, f"{self.name}: {record.where}"),
            ):
                with attempt:
                    return await self._handler(record)
        except DecodeError as exc:
            return [self._dead_letter(record, exc)]
        except Exception as exc:
            log.exception("%s: %s failed %d times; dead-lettering", self.name, record.where, self._max_attempts)
            return [self._dead_letter(record, exc)]
        raise AssertionError("unreachable: the retry loop returns or raises")

    def _dead_letter(self, record: Record, error: Exception) -> Outgoing:
        topic = self._dead_letter_topic(record.topic)
        log.error("%s: %s dead-lettered to %s: %s", self.name, record.where, topic, error)
        metrics.DEAD_LETTERS.labels(record.topic).inc()
        headers = (
            *record.headers,
            ("error", f"{type(error).__name__}: {error}".encode()[:4096]),
            ("source", record.where.encode()),
        )
        key = (record.key or b"").decode(errors="replace")
        return Outgoing(topic, key, record.value, headers)

    async def publish(self, outputs: Sequence[Outgoing], record: Record) -> None:
        """Publish every output of `record`, retrying only those not yet acknowledged (each a task, an LLM call
        downstream). The stage calls it with what the handler returns; a handler may call it itself for outputs
        that must not wait for the rest (they are then acknowledged before the record is, like the others)."""
        pending = list(outputs)
        async for attempt in retrying(
            retry_on=_PublishFailed,
            initial_s=PUBLISH_RETRY_S,
            max_s=PUBLISH_RETRY_MAX_S,
            before_sleep=log_retry(log, f"{self.name}: publishing the outputs of {record.where}"),
        ):
            with attempt:
                outcomes = await asyncio.gather(
                    *(self._bus.publish(o.topic, o.key, o.value, o.headers) for o in pending), return_exceptions=True
                )
                failed = [(o, r) for o, r in zip(pending, outcomes, strict=True) if isinstance(r, BaseException)]
                for _o, error in failed:
                    if not isinstance(error, Exception):
                        raise error  # cancelled: the record stays unacknowledged
                if failed:
                    total, pending = len(pending), [o for o, _error in failed]
                    raise _PublishFailed(f"{len(pending)} of {total} not acknowledged: {failed[0][1]}")


class _PublishFailed(Exception):
    """Some outputs of a record were not acknowledged; the others are not published again."""


def _retryable(error: BaseException) -> bool:
    # An undecodable record stays undecodable; cancellation is not a failure.
    return isinstance(error, Exception) and not isinstance(error, DecodeError)
