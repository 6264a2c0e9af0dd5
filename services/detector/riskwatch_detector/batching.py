"""Batching across cameras: per camera only the newest frame waits; a batch leaves when full or after max_wait."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from riskwatch.errors import FrameDropped, Unavailable
from riskwatch_detector.config import BatchingConfig

log = logging.getLogger(__name__)

J = TypeVar("J")  # a job: what one frame needs
R = TypeVar("R")  # the model's raw output for one frame
T = TypeVar("T")  # the finished result for one frame


@dataclass(slots=True)
class _Waiting(Generic[J, T]):
    camera_id: str
    frame_id: int
    job: J
    future: asyncio.Future[T]
    since: float = field(default_factory=time.monotonic)


class CameraBatcher(Generic[J, R, T]):
    """Collects frames from many cameras into batches for `infer`, then runs `finish` per frame.

    `infer` runs on one inference thread, `finish` on one post-processing thread, so the next batch is
    inferred while the previous one is tracked and grouped; both see frames in arrival order per camera.
    """

    def __init__(
        self,
        infer: Callable[[Sequence[J]], Sequence[R]],
        finish: Callable[[J, R], T],
        config: BatchingConfig,
        *,
        on_drop: Callable[[str, int], None] = lambda camera_id, frame_id: None,
        on_batch: Callable[[int, float], None] = lambda size, seconds: None,
    ) -> None:
        self._infer = infer
        self._finish = finish
        self._config = config
        self._on_drop = on_drop
        self._on_batch = on_batch
        self._waiting: dict[str, _Waiting[J, T]] = {}
        self._arrived = asyncio.Event()
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="detector-infer")
        self._post_pool = ThreadPoolExecutor(1, thread_name_prefix="detector-post")
        # Batches being post-processed; bounded so a slow post-processing step pushes back on inference.
        self._post_slots = asyncio.Semaphore(2)
        self._post_tasks: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="detector-batcher")

    async def stop(self) -> None:
        """Stop taking frames, finish every frame already waiting, then release the threads."""
        self._stopping = True
        self._arrived.set()
        if self._worker is not None:
            await self._worker
        if self._post_tasks:
            await asyncio.gather(*self._post_tasks, return_exceptions=True)
        self._infer_pool.shutdown(wait=True)
        self._post_pool.shutdown(wait=True)

    def waiting(self) -> int:
        return len(self._waiting)

    async def submit(self, camera_id: str, frame_id: int, job: J) -> T:
        """The finished result for this frame, or FrameDropped if a newer frame of its camera overtook it."""
        if self._stopping or self._worker is None:
            raise Unavailable("detector is not running (starting or shutting down)")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        previous = self._waiting.get(camera_id)
        if previous is not None:
            if frame_id < previous.frame_id:
                # An older frame arriving late: the newer one already waiting wins.
                self._on_drop(camera_id, frame_id)
                newer = previous.frame_id
                del job, previous  # the traceback keeps this frame's locals: not the pixels (see below)
                raise FrameDropped(f"frame {frame_id} of camera {camera_id!r} dropped: newer frame {newer} is waiting")
            self._on_drop(camera_id, previous.frame_id)
            if not previous.future.done():
                previous.future.set_exception(
                    FrameDropped(
                        f"frame {previous.frame_id} of camera {camera_id!r} dropped: superseded by frame {frame_id} "
                        "before the detector reached it"
                    )
                )
            # Keep the camera's place in the queue (and its waiting time) so a busy camera is not starved.
            self._waiting[camera_id] = _Waiting(camera_id, frame_id, job, future, previous.since)
        else:
            self._waiting[camera_id] = _Waiting(camera_id, frame_id, job, future)
        self._arrived.set()
        # A dropped frame's FrameDropped sits in `future`, and its traceback holds this frame: without clearing
        # the locals, future → exception → traceback → frame → future is a cycle that keeps the decoded image
        # (and the superseded one in `previous`) alive until a full GC, gigabytes under overload.
        del job, previous
        try:
            return await future
        finally:
            del future

    async def _next_batch(self) -> list[_Waiting[J, T]] | None:
        while not self._waiting:
            if self._stopping:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        max_size = self._config.max_batch_size
        oldest = next(iter(self._waiting.values())).since
        deadline = oldest + self._config.max_wait_ms / 1000
        while len(self._waiting) < max_size and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        taken = list(self._waiting)[:max_size]
        batch = [self._waiting.pop(camera_id) for camera_id in taken]
        # Callers that went away (cancelled RPCs) need no inference.
        return [w for w in batch if not w.future.done()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while (batch := await self._next_batch()) is not None:
            if not batch:
                continue
            started = time.perf_counter()
            raw = await loop.run_in_executor(self._infer_pool, self._infer_isolating, batch)
            self._on_batch(len(batch), time.perf_counter() - started)
            await self._post_slots.acquire()
            task = asyncio.create_task(self._post_process(batch, list(raw)))
            self._post_tasks.add(task)
            task.add_done_callback(self._post_tasks.discard)

    def _infer_isolating(self, batch: Sequence[_Waiting[J, T]]) -> list[R | Exception]:
        """The batch through the model; if that fails, each frame alone, so one bad frame fails only itself."""
        try:
            return list(self._infer([w.job for w in batch]))
        except Exception as exc:
            if len(batch) == 1:
                log.exception("inference failed for camera %s frame %d", batch[0].camera_id, batch[0].frame_id)
                return [exc]
        outcomes: list[R | Exception] = []
        for waiting in batch:
            outcomes.extend(self._infer_isolating([waiting]))
        return outcomes

    async def _post_process(self, batch: list[_Waiting[J, T]], raw: list[R | Exception]) -> None:
        try:
            loop = asyncio.get_running_loop()
            outcomes = await loop.run_in_executor(self._post_pool, _finish_each, self._finish, batch, raw)
            for waiting, outcome in zip(batch, outcomes, strict=True):
                if waiting.future.done():
                    continue  # the caller went away (cancelled RPC)
                if isinstance(outcome, BaseException):
                    waiting.future.set_exception(outcome)
                else:
                    waiting.future.set_result(outcome)
        finally:
            self._post_slots.release()


def _finish_each(
    finish: Callable[[J, R], T], batch: Sequence[_Waiting[J, T]], raw: Sequence[R | Exception]
) -> list[T | Exception]:
    outcomes: list[T | Exception] = []
    for waiting, output in zip(batch, raw, strict=True):
        if isinstance(output, Exception):
            outcomes.append(output)
            continue
        try:
            outcomes.append(finish(waiting.job, output))
        except Exception as exc:  # one bad frame must not fail the others; the caller gets the error
            log.exception("post-processing failed for camera %s frame %d", waiting.camera_id, waiting.frame_id)
            outcomes.append(exc)
    return outcomes
