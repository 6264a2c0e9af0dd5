"""A WebSocket client subscribed to every camera, in its own process so its timestamps do not wait on the load."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
import time
from collections import Counter
from pathlib import Path
from typing import Any

import websockets


def record(
    url: str, out: Path, ready: multiprocessing.synchronize.Event, stop: multiprocessing.synchronize.Event
) -> None:
    """Child process: subscribe to "*", note the arrival time of every detections and risk_state message."""
    asyncio.run(_record(url, out, ready, stop))


async def _record(
    url: str, out: Path, ready: multiprocessing.synchronize.Event, stop: multiprocessing.synchronize.Event
) -> None:
    detections: list[tuple[float, str, int, float]] = []
    states: list[dict[str, Any]] = []
    alerts: list[tuple[float, str, float]] = []
    kinds: Counter[str] = Counter()
    closed: str | None = None

    async def receive(ws: websockets.ClientConnection) -> None:
        async for raw in ws:
            now = time.time()
            message = json.loads(raw)
            kind = message.get("type", "")
            kinds[kind] += 1
            if kind == "subscribed":
                ready.set()
            elif kind == "detections":
                detections.append((now, message["camera_id"], message["frame_id"], message["capture_time"]))
            elif kind == "alert" and not message.get("replay"):
                alerts.append((now, message.get("task_id", ""), message.get("capture_time") or 0.0))
            elif kind == "risk_state":
                states.append(
                    {
                        "t": now,
                        "camera_id": message["camera_id"],
                        "version": message["version"],
                        "last_task_id": message.get("last_task_id", ""),
                        "groups": [
                            (g.get("task_id", ""), g.get("capture_time") or 0.0, g.get("risk_level", ""))
                            for g in message.get("groups", [])
                        ],
                    }
                )

    for attempt in range(20):  # the gateway may still be binding its HTTP listener
        try:
            ws = await websockets.connect(url, max_size=None, open_timeout=30)
            break
        except OSError:
            if attempt == 19:
                raise
            await asyncio.sleep(0.5)
    async with ws:
        await ws.send(json.dumps({"type": "subscribe", "cameras": "*"}))
        receiving = asyncio.create_task(receive(ws))
        while not stop.is_set() and not receiving.done():
            await asyncio.sleep(0.1)
        if receiving.done() and receiving.exception() is not None:
            closed = repr(receiving.exception())
        receiving.cancel()
    seen = {"detections": detections, "states": states, "alerts": alerts, "kinds": kinds, "closed": closed}
    await asyncio.to_thread(out.write_text, json.dumps(seen))


class WsRecorderProcess:
    """Start before the load, `stop()` after it; `result()` holds what the client saw."""

    def __init__(self, http_port: int, out: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.out = out
        self._ready = ctx.Event()
        self._stop = ctx.Event()
        self._proc = ctx.Process(
            target=record, args=(f"ws://127.0.0.1:{http_port}/ws", out, self._ready, self._stop), daemon=True
        )

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
