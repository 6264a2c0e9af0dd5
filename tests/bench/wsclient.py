"""The WebSocket recorder subscribed to every camera, in its own process so its timestamps do not wait on the load."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
from pathlib import Path
from typing import Any

from tests.support.clients import WsRecorder


def record(
    http_port: int, out: Path, ready: multiprocessing.synchronize.Event, stop: multiprocessing.synchronize.Event
) -> None:
    """Child process: subscribe to "*", note the arrival time of every detections, alert and risk_state message."""
    asyncio.run(_record(http_port, out, ready, stop))


async def _record(
    http_port: int, out: Path, ready: multiprocessing.synchronize.Event, stop: multiprocessing.synchronize.Event
) -> None:
    async with WsRecorder(http_port) as ws:
        ready.set()
        while not stop.is_set() and ws.running:
            await asyncio.sleep(0.1)
    seen = {
        "detections": [
            (m.received_at, m.message["camera_id"], m.message["frame_id"], m.message["capture_time"])
            for m in ws.received
            if m.message.get("type") == "detections"
        ],
        "states": [
            {
                "t": m.received_at,
                "camera_id": m.message["camera_id"],
                "version": m.message["version"],
                "last_task_id": m.message.get("last_task_id", ""),
                "groups": [
                    (g.get("task_id", ""), g.get("capture_time") or 0.0, g.get("risk_level", ""))
                    for g in m.message.get("groups", [])
                ],
            }
            for m in ws.received
            if m.message.get("type") == "risk_state"
        ],
        "alerts": [
            (m.received_at, m.message.get("task_id", ""), m.message.get("capture_time") or 0.0)
            for m in ws.received
            if m.message.get("type") == "alert" and not m.message.get("replay")
        ],
        "kinds": ws.kinds(),
        "closed": ws.closed,
    }
    await asyncio.to_thread(out.write_text, json.dumps(seen))


class WsRecorderProcess:
    """Start before the load, `stop()` after it; `result()` holds what the client saw."""

    def __init__(self, http_port: int, out: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.out = out
        self._ready = ctx.Event()
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=record, args=(http_port, out, self._ready, self._stop), daemon=True)

    @property
    def pid(self) -> int:
        assert self._proc.pid is not None
        return self._proc.pid

    def start(self, timeout: float = 30.0) -> None:
        self._proc.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the WebSocket client was not subscribed in time")

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._proc.join(30)
        if self._proc.is_alive():
            self._proc.kill()
            raise RuntimeError("the WebSocket client did not stop")
        return dict(json.loads(self.out.read_text()))
