"""Batching across cameras: newest frame only per camera (drops counted), max batch size, max wait."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from riskwatch.errors import FrameDropped, Unavailable
from riskwatch_detector.batching import CameraBatcher
from riskwatch_detector.config import BatchingConfig


class RecordingModel:
    """A stand-in model: remembers each batch, can be held back to simulate a slow inference."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def infer(self, jobs: Sequence[str]) -> list[str]:
        self.entered.set()
        self.release.wait(5)
        self.batches.append(list(jobs))
        return [f"raw:{job}" for job in jobs]

    @staticmethod
    def finish(job: str, raw: str) -> str:
        return f"{raw}:done"


async def started(
    model: RecordingModel, config: BatchingConfig, drops: list[tuple[str, int]] | None = None
) -> CameraBatcher[str, str, str]:
    batcher: CameraBatcher[str, str, str] = CameraBatcher(
        model.infer,
        model.finish,
        config,
        on_drop=lambda camera, frame: drops.append((camera, frame)) if drops is not None else None,
    )
    await batcher.start()
    return batcher


async def test_frames_of_many_cameras_share_a_batch() -> None:
    model = RecordingModel()
    batcher = await started(model, BatchingConfig(max_batch_size=4, max_wait_ms=200))
    results = await asyncio.gather(*(batcher.submit(f"cam{i}", 1, f"cam{i}#1") for i in range(4)))
    assert results == [f"raw:cam{i}#1:done" for i in range(4)]
    assert model.batches == [[f"cam{i}#1" for i in range(4)]]
    await batcher.stop()


async def test_a_full_batch_leaves_without_waiting_and_batches_never_exceed_the_maximum() -> None:
    model = RecordingModel()
    batcher = await started(model, BatchingConfig(max_batch_size=3, max_wait_ms=5_000))
    started_at = time.monotonic()
    tasks = [asyncio.create_task(batcher.submit(f"cam{i}", 1, f"cam{i}")) for i in range(7)]
    await asyncio.wait_for(asyncio.gather(*tasks[:6]), 2)
    assert time.monotonic() - started_at < 2
    assert model.batches == [["cam0", "cam1", "cam2"], ["cam3", "cam4", "cam5"]]
    assert not tasks[6].done()  # waits for company up to max_wait...
    await batcher.stop()  # ...or until the batcher stops, which flushes it at once
    assert await tasks[6] == "raw:cam6:done"
    assert time.monotonic() - started_at < 2


async def test_a_lone_frame_waits_at_most_max_wait() -> None:
    model = RecordingModel()
    batcher = await started(model, BatchingConfig(max_batch_size=8, max_wait_ms=50))
    started_at = time.monotonic()
    assert await batcher.submit("cam", 1, "only") == "raw:only:done"
    assert 0.04 <= time.monotonic() - started_at < 1.0
    await batcher.stop()


async def test_a_camera_that_falls_behind_keeps_only_its_newest_frame_and_drops_are_counted() -> None:
    model = RecordingModel()
    drops: list[tuple[str, int]] = []
    batcher = await started(model, BatchingConfig(max_batch_size=1, max_wait_ms=0), drops)
    model.release.clear()  # the model is busy with frame 0
    busy = asyncio.create_task(batcher.submit("cam", 0, "f0"))
    assert await asyncio.to_thread(model.entered.wait, 5)
    waiting = [asyncio.create_task(batcher.submit("cam", i, f"f{i}")) for i in range(1, 5)]
    await asyncio.sleep(0.05)
    assert batcher.waiting() == 1
    model.release.set()
    assert await busy == "raw:f0:done"
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert outcomes[-1] == "raw:f4:done"
    assert all(isinstance(o, FrameDropped) for o in outcomes[:-1])
    assert "superseded by frame" in str(outcomes[0])
    assert drops == [("cam", 1), ("cam", 2), ("cam", 3)]
    assert model.batches == [["f0"], ["f4"]]
    await batcher.stop()


async def test_a_late_older_frame_is_the_one_dropped() -> None:
    model = RecordingModel()
    drops: list[tuple[str, int]] = []
    batcher = await started(model, BatchingConfig(max_batch_size=1, max_wait_ms=0), drops)
    model.release.clear()
    busy = asyncio.create_task(batcher.submit("cam", 0, "f0"))
    assert await asyncio.to_thread(model.entered.wait, 5)
    newer = asyncio.create_task(batcher.submit("cam", 7, "f7"))
    await asyncio.sleep(0.01)
    with pytest.raises(FrameDropped, match="newer frame 7 is waiting"):
        await batcher.submit("cam", 6, "f6")
    model.release.set()
    assert await newer == "raw:f7:done"
    await busy
    assert drops == [("cam", 6)]
    await batcher.stop()


async def test_stop_finishes_accepted_frames_then_refuses_new_ones() -> None:
    model = RecordingModel()
    batcher = await started(model, BatchingConfig(max_batch_size=8, max_wait_ms=10_000))
    pending = [asyncio.create_task(batcher.submit(f"cam{i}", 1, f"c{i}")) for i in range(3)]
    await asyncio.sleep(0.02)
    await batcher.stop()
    assert [await p for p in pending] == ["raw:c0:done", "raw:c1:done", "raw:c2:done"]
    with pytest.raises(Unavailable):
        await batcher.submit("cam9", 1, "late")


async def test_a_failing_frame_fails_alone() -> None:
    def finish(job: str, raw: str) -> str:
        if job == "bad":
            raise ValueError("cannot post-process")
        return raw

    batcher: CameraBatcher[str, str, str] = CameraBatcher(
        list, finish, BatchingConfig(max_batch_size=2, max_wait_ms=100)
    )
    await batcher.start()
    good, bad = await asyncio.gather(
        batcher.submit("a", 1, "good"), batcher.submit("b", 1, "bad"), return_exceptions=True
    )
    assert good == "good" and isinstance(bad, ValueError)
    await batcher.stop()


async def test_a_frame_the_model_fails_on_fails_alone_not_its_whole_batch() -> None:
    def infer(jobs: Sequence[str]) -> list[str]:
        if "poison" in jobs:
            raise RuntimeError("model cannot handle this frame")
        return [f"raw:{job}" for job in jobs]

    batcher: CameraBatcher[str, str, str] = CameraBatcher(
        infer, RecordingModel.finish, BatchingConfig(max_batch_size=3, max_wait_ms=200)
    )
    await batcher.start()
    outcomes = await asyncio.gather(
        *(batcher.submit(camera, 1, camera) for camera in ("a", "poison", "b")), return_exceptions=True
    )
    assert outcomes[0] == "raw:a:done" and outcomes[2] == "raw:b:done"
    assert isinstance(outcomes[1], RuntimeError)
    await batcher.stop()
