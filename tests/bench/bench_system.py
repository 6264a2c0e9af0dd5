"""`make bench`: 50 cameras × 2 FPS of vtest.avi through the full streaming stack, with the LLM simulator.

Two kinds of run, each on a fresh stack (uuid topics, groups and Redis prefix; every service a real process):
  detector  frames pushed to the gateway over gRPC PushFrames (one call per frame, as a camera that does not
            wait), detected by the real detector; measures the frame rate it sustains and what it drops.
  replay    pre-computed DetectionEvents (the real detector's output for the same frames, cached under
            var/bench/) published straight to detection-results at the full 100 events/s, re-stamped per
            camera with fresh ids and capture times: loads the streaming path (task generator, LLM scheduler,
            aggregator, gateway) at full rate whatever the detector sustains.
The LLM simulator has 10 keys × 10 QPS and a 1 s median latency. A WebSocket client subscribed to every camera
(in its own process) timestamps `detections` and `risk_state` messages. Rates, CPU and lag are measured over
the window after --warmup; afterwards the stack drains and the topics are read back for the ledger
(`unaccounted`). Each kind runs --runs times; system.json and system.md report medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from riskwatch.v1 import events_pb2, gateway_pb2, gateway_pb2_grpc
from tests.bench import measure, replay
from tests.bench.analysis import RunData, analyse, headline
from tests.bench.benchstack import BenchStack
from tests.bench.report import write_report
from tests.bench.wsclient import WsRecorderProcess
from tests.support.stack import (
    BOOTSTRAP,
    CONSUMED_TOPICS,
    REPO,
    TOPICS,
    VIDEO,
    topic_field,
    wait_for_port,
    write_sim_api_keys,
)
from tests.support.topics import read_topic

KEYS = 10
QPS = 10
LLM_MEDIAN_S = 1.0
CONSUMERS = ("task-generator", "llm-scheduler", "aggregator")
OUT_DIR = REPO / "bench-results"


@dataclass(frozen=True)
class Assets:
    jpegs: list[bytes]
    phases: list[list[events_pb2.DetectionEvent]]
    schedule: replay.Schedule


def start_stack(mode: str, label: str) -> BenchStack:
    stack = BenchStack(log_dir=OUT_DIR / "logs" / f"system-{label}")
    if stack.log_dir.exists():
        shutil.rmtree(stack.log_dir)
    keys_file = stack.log_dir / "api_keys.yaml"
    labels = write_sim_api_keys(keys_file, stack.ports["llmsim"], keys=KEYS, qps=QPS)
    stack.extra_env.update({"ALGO_API_KEYS_FILE": str(keys_file), "ALGO_LOG_LEVEL": "WARNING"})
    # As deployed (config/kafka.yaml), not the 4 partitions of the end-to-end tests.
    stack.extra_env.update({f"ALGO_KAFKA__TOPICS__{topic_field(t)}__PARTITIONS": "16" for t in TOPICS})
    stack.init_topics()
    port = str(stack.ports["llmsim"])
    sim_args = ["--port", port, "--latency-median", str(LLM_MEDIAN_S), "--qps", str(QPS), "--rpm", str(QPS * 60)]
    sim_args += ["--keys", labels]
    stack.start("llmsim", "riskwatch_llmsim", *sim_args, "--log-level", "WARNING", port="llmsim")
    stack.start("aggregator", "riskwatch_aggregator")
    stack.start("llm-scheduler", "riskwatch_scheduler", "llm-scheduler")
    stack.start("task-generator", "riskwatch_scheduler", "task-generator")
    if mode == "detector":
        stack.start("detector", "riskwatch_detector", port="detector_grpc")
    stack.start("gateway", "riskwatch_gateway", port="gateway_grpc")
    wait_for_port(stack.ports["gateway_http"], proc=stack.procs["gateway"])
    for name in CONSUMERS + (("detector",) if mode == "detector" else ()):
        wait_for_port(stack.metrics_ports[name], timeout=60, proc=stack.procs[name])
    return stack


def delete_topics(stack: BenchStack) -> None:
    names = stack.all_topics()
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for future in admin.delete_topics(names, operation_timeout=30).values():
        try:
            future.result()
        except Exception as exc:  # cleanup only: a leftover topic is harmless
            print(f"  (topic cleanup: {exc})")


# --- load ------------------------------------------------------------------------------------------


def due_times(cameras: int, fps: float, duration: float, t0: float) -> list[tuple[float, int, int]]:
    """(due time, camera, k) for every frame, cameras evenly staggered within one frame interval."""
    per_camera = int(duration * fps)
    interval = 1.0 / fps
    due = [(t0 + c * interval / cameras + k * interval, c, k) for c in range(cameras) for k in range(per_camera)]
    return sorted(due)


@dataclass
class PushOutcome:
    camera_id: str
    frame_id: int
    capture: float
    answered: float
    outcome: str  # event | dropped | error | no_response
    detail: str = ""
    event_id: str = ""


async def push_one(stub: gateway_pb2_grpc.GatewayServiceStub, frame: Any, capture: float) -> PushOutcome:
    request = gateway_pb2.PushFramesRequest(frame=frame)
    outcome = PushOutcome(frame.camera_id, frame.frame_id, capture, 0.0, "no_response")
    try:
        async for response in stub.PushFrames(iter([request]), timeout=60):
            outcome.answered = time.time()
            if response.HasField("event"):
                outcome.outcome, outcome.event_id = "event", response.event.event_id
            else:
                message = response.error.message
                outcome.outcome = "dropped" if "dropped" in message else "error"
                outcome.detail = message[:160]
    except grpc.aio.AioRpcError as exc:
        outcome.detail = f"{exc.code().name}: {exc.details()}"[:160]
    return outcome


async def push_load(stack: BenchStack, assets: Assets, args: argparse.Namespace, t0: float) -> list[PushOutcome]:
    """Every camera pushes its frames on time, each frame its own PushFrames call (no waiting for the last)."""
    schedule = assets.schedule
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{stack.ports['gateway_grpc']}", options=[("grpc.max_send_message_length", 32 * 2**20)]
    ) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        calls: list[asyncio.Task[PushOutcome]] = []
        for due, c, k in due_times(args.cameras, args.fps, args.duration + args.tail, t0):
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            capture = time.time()
            jpeg = assets.jpegs[schedule.video_index(c, k)]
            frame = replay.frame(schedule.camera_id(c), k + 1, jpeg, capture)
            calls.append(asyncio.create_task(push_one(stub, frame, capture)))
        return list(await asyncio.gather(*calls))


@dataclass
class Published:
    camera_id: str
    event_id: str
    capture: float
    groups: int
    acked: bool = False
    error: str = ""


def replay_load(stack: BenchStack, assets: Assets, args: argparse.Namespace, t0: float) -> list[Published]:
    """Publish the cached events at the cameras' pace (thread), acked by Kafka like the detector's publishes."""
    producer = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
        }
    )
    topic = stack.topics["detection-results"]
    schedule = assets.schedule
    sent: list[Published] = []
    last_frame_id: dict[int, int] = {}

    def delivered(item: Published) -> Any:
        def callback(err: Any, _msg: Any) -> None:
            if err is None:
                item.acked = True
            else:
                item.error = str(err)

        return callback

    for due, c, k in due_times(args.cameras, args.fps, args.duration + args.tail, t0):
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        now = time.time()
        phase, index, loop = schedule.position(c, k)
        frame_id = max(last_frame_id.get(c, 0) + 1, int(now * 1000))
        last_frame_id[c] = frame_id
        event = replay.restamp(assets.phases[phase][index], schedule.camera_id(c), frame_id, loop, now)
        item = Published(event.camera_id, event.event_id, now, len(event.groups))
        producer.produce(topic, event.SerializeToString(), key=event.camera_id, on_delivery=delivered(item))
        sent.append(item)
        producer.poll(0)
    producer.flush(30)
    return sent


# --- sampling --------------------------------------------------------------------------------------


def lag_now(stack: BenchStack) -> dict[str, dict[str, float]]:
    out = {}
    for name in CONSUMERS:
        samples = measure.scrape(stack.metrics_url(name))
        messages = [v for n, _, v in samples if n == "kafka_consumer_lag"]
        seconds = [v for n, _, v in samples if n == "kafka_consumer_lag_seconds"]
        out[name] = {"messages": sum(messages), "seconds": max(seconds, default=0.0)}
    return out


def counters(stack: BenchStack, mode: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    names = [*CONSUMERS, "gateway"] + (["detector"] if mode == "detector" else [])
    return {name: measure.scrape(stack.metrics_url(name)) for name in names}


def sim_stats(stack: BenchStack) -> dict[str, Any]:
    return measure.get_json(f"http://127.0.0.1:{stack.ports['llmsim']}/_stats")


async def monitor(
    stack: BenchStack, sampler: measure.ProcessSampler, series: list[dict[str, Any]], stop: Any, t0: float
) -> None:
    """Consumer lag of every stage every 2 s (t = seconds since the load started), and memory peaks."""
    while not stop.is_set():
        lag = await asyncio.to_thread(lag_now, stack)
        rss = sampler.sample()
        series.append({"t": round(time.time() - t0, 2), **lag, "rss_mb": rss})
        await asyncio.sleep(2.0)


async def drain(stack: BenchStack, timeout: float) -> float:
    """Wait until every consumer has caught up and no LLM call is in flight; seconds it took."""
    started = time.monotonic()
    quiet = 0
    while time.monotonic() - started < timeout:
        lag = await asyncio.to_thread(lag_now, stack)
        sched = await asyncio.to_thread(measure.scrape, stack.metrics_url("llm-scheduler"))
        in_flight = measure.total(sched, "riskwatch_tasks_in_flight")
        sim = await asyncio.to_thread(sim_stats, stack)
        idle = all(v["messages"] == 0 for v in lag.values()) and in_flight == 0 and sim["totals"]["in_flight"] == 0
        quiet = quiet + 1 if idle else 0
        if quiet >= 3:
            break
        await asyncio.sleep(1.0)
    return time.monotonic() - started


# --- one run ---------------------------------------------------------------------------------------


async def run_once(mode: str, rep: int, assets: Assets, args: argparse.Namespace) -> dict[str, Any]:
    label = f"{mode}-{rep}"
    print(f"[{time.strftime('%H:%M:%S')}] run {label}: starting the stack")
    load_average = os.getloadavg()[0]
    stack = await asyncio.to_thread(start_stack, mode, label)
    ws: WsRecorderProcess | None = None
    try:
        await asyncio.sleep(3)  # consumers join their groups
        ws = WsRecorderProcess(stack.ports["gateway_http"], stack.log_dir / "ws.json")
        try:
            await asyncio.to_thread(ws.start)
        except TimeoutError:
            exited = {name: p.returncode for name, p in stack.procs.items() if p.poll() is not None}
            raise RuntimeError(f"WebSocket client could not subscribe; exited processes: {exited}") from None
        pids = {name: proc.pid for name, proc in stack.procs.items()}
        pids["bench client"] = os.getpid()
        pids["ws client"] = ws.pid
        pids.update(measure.infra_pids())
        sampler = measure.ProcessSampler(pids)
        series: list[dict[str, Any]] = []
        stop_monitor = asyncio.Event()
        t0 = time.time() + 0.5
        monitoring = asyncio.create_task(monitor(stack, sampler, series, stop_monitor, t0))
        print(
            f"[{time.strftime('%H:%M:%S')}] run {label}: {args.cameras} cameras × {args.fps} FPS for {args.duration} s"
        )
        if mode == "detector":
            load: asyncio.Future[Any] = asyncio.ensure_future(push_load(stack, assets, args, t0))
        else:
            load = asyncio.ensure_future(asyncio.to_thread(replay_load, stack, assets, args, t0))
        await asyncio.sleep(max(0.0, t0 + args.warmup - time.time()))
        window_start = time.time()
        before = await asyncio.to_thread(counters, stack, mode)
        sim_before = await asyncio.to_thread(sim_stats, stack)
        machine_before = measure.machine_cpu()
        sampler.begin()
        await asyncio.sleep(max(0.0, t0 + args.duration - time.time()))
        window_end = time.time()
        usage = sampler.end()
        machine_after = measure.machine_cpu()
        after = await asyncio.to_thread(counters, stack, mode)
        sim_after = await asyncio.to_thread(sim_stats, stack)
        load_result = await load
        stop_monitor.set()
        await monitoring
        print(f"[{time.strftime('%H:%M:%S')}] run {label}: load done, draining")
        drain_s = await drain(stack, args.drain_timeout)
        await asyncio.sleep(2.0)  # the last risk states reach the WebSocket client
        seen = await asyncio.to_thread(ws.stop)
        ws = None
        final = await asyncio.to_thread(counters, stack, mode)
        topics = {name: await asyncio.to_thread(read_topic, topic) for name, topic in stack.topics.items()}
        dlq = {
            name: len(await asyncio.to_thread(read_topic, f"{stack.topics[name]}.dlq", BOOTSTRAP, 10.0))
            for name in CONSUMED_TOPICS
        }
    finally:
        if ws is not None:
            try:
                ws.stop()
            except Exception as exc:  # the run already failed; keep its error
                print(f"  (WebSocket client: {exc})")
        await asyncio.to_thread(stack.stop_all)
    await asyncio.to_thread(delete_topics, stack)
    window = window_end - window_start
    result = analyse(
        RunData(
            mode,
            args,
            topic_names=stack.topics,
            window=(window_start, window_end),
            load=load_result,
            before=before,
            after=after,
            final=final,
            sim=(sim_before, sim_after),
            seen=seen,
            topics=topics,
            dlq=dlq,
        )
    )
    busy = machine_after[0] - machine_before[0]
    share = busy / max(1.0, machine_after[1] - machine_before[1])
    cores = os.cpu_count() or 1
    result["cpu"] = {
        "machine_busy_share": round(share, 3),
        "cores": cores,
        "per_process": usage,
        # CPU used by processes outside this benchmark (the machine may be shared): it skews the detector run.
        "other_cores": round(max(0.0, share * cores - sum(u["cpu_cores"] for u in usage.values())), 3),
        "load_average_at_start": load_average,
    }
    result["lag_series"] = series
    result["lag"] = lag_summary(series)
    during = [s["rss_mb"] for s in series if s["rss_mb"]]
    result["rss_first_last_mb"] = (
        {name: (during[0].get(name), during[-1].get(name)) for name in during[0] if during} if during else {}
    )
    result["drain_s"] = round(drain_s, 1)
    result["window_s"] = round(window, 2)
    result["warmup_s"] = round(window_start - t0, 2)
    result["label"] = label
    print(f"[{time.strftime('%H:%M:%S')}] run {label}: {headline(result)}")
    return result


def lag_summary(series: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for name in CONSUMERS:
        messages = [s[name]["messages"] for s in series if name in s]
        seconds = [s[name]["seconds"] for s in series if name in s]
        out[name] = {
            "max_messages": max(messages, default=0.0),
            "last_messages": messages[-1] if messages else 0.0,
            "max_seconds": round(max(seconds, default=0.0), 3),
            "last_seconds": round(seconds[-1], 3) if seconds else 0.0,
        }
    return out


# --- summary ---------------------------------------------------------------------------------------


def median_of(runs: list[dict[str, Any]], *path: str) -> float | None:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            values.append(float(value))
    return round(statistics.median(values), 4) if values else None


def summarise(runs: list[dict[str, Any]], args: argparse.Namespace, assets_info: dict[str, Any]) -> dict[str, Any]:
    det = [r for r in runs if r["mode"] == "detector"]
    rep = [r for r in runs if r["mode"] == "replay"]
    streaming = rep or det
    summary: dict[str, Any] = {
        "events_per_s": median_of(streaming, "events_per_s"),
        "detection_push_p95_s": median_of(det, "detection_push", "p95_s"),
        "risk_p95_s": median_of(streaming, "risk", "p95_s"),
        "llm_calls_per_s": median_of(streaming, "llm", "calls_per_s"),
        "unaccounted": sum(int(r["unaccounted"]) for r in runs),
    }
    summary["targets"] = {
        "events_per_s >= 100 (sustained)": bool(
            summary["events_per_s"] is not None and summary["events_per_s"] >= 0.98 * args.cameras * args.fps
        ),
        "detection_push_p95_s < 1": bool(
            summary["detection_push_p95_s"] is not None and summary["detection_push_p95_s"] < 1
        ),
        "risk_p95_s < 2": bool(summary["risk_p95_s"] is not None and summary["risk_p95_s"] < 2),
        "unaccounted = 0": summary["unaccounted"] == 0,
    }
    medians: dict[str, Any] = {}
    for mode, group in (("detector", det), ("replay", rep)):
        if not group:
            continue
        keys = [
            ("events_per_s",),
            ("risk", "p50_s"),
            ("risk", "p95_s"),
            ("risk", "p99_s"),
            ("risk_alerts", "p95_s"),
            ("breakdown", "task_generator", "p50_s"),
            ("breakdown", "task_generator", "p95_s"),
            ("breakdown", "scheduler_queue", "p50_s"),
            ("breakdown", "scheduler_queue", "p95_s"),
            ("breakdown", "llm_call", "p50_s"),
            ("breakdown", "llm_call", "p95_s"),
            ("breakdown", "to_websocket", "p50_s"),
            ("breakdown", "to_websocket", "p95_s"),
            ("groups_per_event",),
            ("risk_any_group", "p95_s"),
            ("result_latency", "p50_s"),
            ("result_latency", "p95_s"),
            ("result_latency", "p99_s"),
            ("result_minus_llm_latency", "p95_s"),
            ("tasks", "tasks_per_s"),
            ("llm", "calls_per_s"),
            ("llm", "utilisation"),
            ("llm", "http_429_per_s"),
            ("llm_latency_s",),
            ("cpu", "machine_busy_share"),
            ("cpu", "other_cores"),
            ("unaccounted",),
        ]
        if mode == "detector":
            keys += [
                ("frames", "pushed_per_s"),
                ("frames", "detected_per_s"),
                ("frames", "dropped_per_s"),
                ("frames", "drop_share"),
                ("detection_push", "p50_s"),
                ("detection_push", "p95_s"),
                ("detection_push", "p99_s"),
                ("detector", "mean_batch"),
                ("detector", "inference_busy_share"),
            ]
        else:
            keys += [("published", "published_per_s")]
        medians[mode] = {".".join(k): median_of(group, *k) for k in keys}
        processes = sorted({p for r in group for p in r["cpu"]["per_process"]})
        medians[mode]["cpu_cores"] = {p: median_of(group, "cpu", "per_process", p, "cpu_cores") for p in processes}
        medians[mode]["peak_rss_mb"] = {p: median_of(group, "cpu", "per_process", p, "peak_rss_mb") for p in processes}
        medians[mode]["lag_max_messages"] = {c: median_of(group, "lag", c, "max_messages") for c in CONSUMERS}
        medians[mode]["lag_max_seconds"] = {c: median_of(group, "lag", c, "max_seconds") for c in CONSUMERS}
    return {
        **summary,
        "medians": medians,
        "setup": {
            "cameras": args.cameras,
            "fps": args.fps,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "tail_s": args.tail,
            "runs": args.runs,
            "keys": KEYS,
            "qps_per_key": QPS,
            "llm_median_s": LLM_MEDIAN_S,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            **assets_info,
        },
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per run (default 60)")
    parser.add_argument("--quick", action="store_true", help="CI smoke: 15 s per run, one run of each kind")
    parser.add_argument("--runs", type=int, default=2, help="repetitions of each kind of run (default 2)")
    parser.add_argument("--modes", default="detector,replay", help="comma-separated: detector, replay")
    parser.add_argument("--cameras", type=int, default=50)
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=None, help="seconds excluded from the measurements")
    parser.add_argument(
        "--tail",
        type=float,
        default=5.0,
        help="seconds the load goes on after the window, unmeasured, so the window's last frames see steady state",
    )
    parser.add_argument("--drain-timeout", type=float, default=45.0)
    parser.add_argument("--out", type=Path, default=OUT_DIR / "system.json")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.runs, args.drain_timeout, args.tail = 15.0, 1, 30.0, 3.0
    if args.warmup is None:
        args.warmup = min(10.0, args.duration / 5)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(modes) - {"detector", "replay"}:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")

    print(f"[{time.strftime('%H:%M:%S')}] loading {VIDEO.name} and the pre-computed detections")
    jpegs = replay.load_jpegs()
    phases, cache, computed_s = replay.detection_events(jpegs)
    assets = Assets(jpegs, phases, replay.Schedule(len(jpegs), args.cameras))
    assets_info = {
        "video_frames": len(jpegs),
        "mean_jpeg_kb": round(sum(map(len, jpegs)) / len(jpegs) / 1024, 1),
        "replay_cache": str(cache.relative_to(REPO)),
        "replay_cache_computed_s": round(computed_s, 1),
        "groups_per_replayed_event": round(
            sum(len(e.groups) for p in phases for e in p) / (len(phases) * len(phases[0])), 3
        ),
    }
    runs = []
    for rep in range(1, args.runs + 1):
        for mode in modes:
            runs.append(asyncio.run(run_once(mode, rep, assets, args)))
    report = summarise(runs, args, assets_info)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    markdown = write_report(report, args.out.with_suffix(".md"))
    print(f"\n{json.dumps({k: report[k] for k in list(report)[:6]}, indent=1)}")
    print(f"→ {args.out}, {markdown}")


if __name__ == "__main__":
    main()
