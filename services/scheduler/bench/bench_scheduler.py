"""`make bench-scheduler`: the LLM scheduler against 10 simulated keys × 10 QPS, offered more than the quota.

Tasks are offered at --rate per second for --duration seconds through real Kafka to a real scheduler process;
the simulator answers with a 1 s median latency and enforces each key's limit with 429s. Measured over the
steady window (after --warmup): achieved calls/s against the quota, 429s our pacing caused, scheduler CPU per
call, and queue delay (task offered → LLM call started). Writes bench-results/scheduler.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

from riskwatch import events
from riskwatch.bus.kafka import KafkaBus
from riskwatch.v1 import events_pb2
from riskwatch_llmsim.testing import SAMPLE_JPEG
from tests.support.stack import BOOTSTRAP, REPO, Stack, write_sim_api_keys
from tests.support.topics import TopicReader, TopicRecord

KEYS = 10
QPS = 10


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=5) as reply:
        return dict(json.load(reply))


def task(i: int, camera: str) -> events_pb2.AssessmentTask:
    now = time.time()
    features = events_pb2.GroupFeatures(pedestrians=2 + i % 5, vehicles=i % 2, density=0.5 + (i % 7) / 4)
    return events_pb2.AssessmentTask(
        task_id=f"bench-{i}",
        event_id=f"{camera}:{i}",
        camera_id=camera,
        frame_id=i,
        group_id=f"g-{i % 4}",
        member_track_ids=[1, 2, 3],
        features=features,
        crop_jpeg=SAMPLE_JPEG,
        priority=0.5,
        capture_time=events.timestamp(now),
        created_time=events.timestamp(now),
        deadline=events.timestamp(now + 60),
    )


async def offer(bus: KafkaBus, topic: str, rate: float, duration: float) -> int:
    """Publish tasks at `rate`/s, spread over 50 cameras, without waiting for each ack in turn."""
    sent = 0
    started = time.monotonic()
    pending: set[asyncio.Future[None]] = set()
    while (elapsed := time.monotonic() - started) < duration:
        due = int(elapsed * rate) + 1
        while sent < due:
            t = task(sent, f"cam-{sent % 50:02d}")
            pending.add(asyncio.ensure_future(bus.publish(topic, t.camera_id, t.SerializeToString())))
            sent += 1
        pending = {f for f in pending if not f.done()}
        await asyncio.sleep(0.005)
    await asyncio.gather(*pending)
    return sent


def collect_results(topic: str, expected: int, timeout: float) -> list[events_pb2.AssessmentResult]:
    """One result per task id (the last one read), once `expected` task ids have one or `timeout` passed."""
    results: dict[str, events_pb2.AssessmentResult] = {}

    decoded = 0

    def enough(records: list[TopicRecord]) -> bool:
        nonlocal decoded
        for record in records[decoded:]:
            result = events_pb2.AssessmentResult.FromString(record.value)
            results[result.task_id] = result
        decoded = len(records)
        return len(results) >= expected

    with TopicReader(topic) as reader:
        reader.read_until(enough, timeout)
    return list(results.values())


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else (values[0] if values else 0.0)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stack = Stack(log_dir=REPO / "bench-results" / "logs" / "scheduler")
    keys_file = stack.log_dir / "api_keys.yaml"
    write_sim_api_keys(keys_file, stack.ports["llmsim"], keys=KEYS, qps=QPS)
    stack.extra_env.update({"ALGO_API_KEYS_FILE": str(keys_file), "ALGO_LOG_LEVEL": "WARNING"})
    stack.init_topics()
    stack.start(
        "llmsim",
        "riskwatch_llmsim",
        "--port",
        str(stack.ports["llmsim"]),
        "--latency-median",
        str(args.latency),
        "--qps",
        str(QPS),
        "--rpm",
        str(QPS * 60),
        "--log-level",
        "WARNING",
        port="llmsim",
    )
    scheduler = stack.start("llm-scheduler", "riskwatch_scheduler", "llm-scheduler")
    bus = KafkaBus(BOOTSTRAP)
    try:
        await asyncio.sleep(3)  # let the scheduler join its group
        offering = asyncio.create_task(offer(bus, stack.topics["assessment-tasks"], args.rate, args.duration))
        await asyncio.sleep(args.warmup)
        calls0, cpu0, t0 = stats(stack.ports["llmsim"])["totals"], cpu_seconds(scheduler.pid), time.monotonic()
        await asyncio.sleep(args.duration - args.warmup)
        calls1, cpu1, t1 = stats(stack.ports["llmsim"])["totals"], cpu_seconds(scheduler.pid), time.monotonic()
        sent = await offering
        results = await asyncio.to_thread(
            collect_results, stack.topics["risk-assessment-results"], sent, args.duration * 2 + 60
        )
        final = stats(stack.ports["llmsim"])
    finally:
        await bus.close()
        stack.stop_all()
    window = t1 - t0
    calls = calls1["ok"] - calls0["ok"]
    answered = [r for r in results if r.WhichOneof("outcome") == "verdict"]
    delays = [
        events.seconds(r.completed_time) - events.seconds(r.capture_time) - r.llm_latency_ms / 1000 for r in answered
    ]
    quota = KEYS * QPS
    return {
        "offered_per_s": args.rate,
        "duration_s": args.duration,
        "tasks_offered": sent,
        "results": len(results),
        "verdicts": len(answered),
        "failures": len(results) - len(answered),
        "achieved_calls_per_s": round(calls / window, 2),
        "quota_calls_per_s": quota,
        "utilisation": round(calls / window / quota, 4),
        "client_429s": final["totals"]["http_429"],
        "cpu_ms_per_call": round((cpu1 - cpu0) * 1000 / max(calls, 1), 3),
        "queue_delay_p50_s": round(percentile(delays, 50), 3),
        "queue_delay_p95_s": round(percentile(delays, 95), 3),
        "simulator_peak_concurrent": final.get("peak_concurrent"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=120.0, help="tasks offered per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of offering")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds excluded from the rate measurement")
    parser.add_argument("--latency", type=float, default=1.0, help="simulated LLM median latency, seconds")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "scheduler.json")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    width = max(map(len, report))
    for name, value in report.items():
        print(f"{name:<{width}}  {value}")
    print(f"targets: utilisation ≥ 0.97, client_429s = 0, cpu_ms_per_call ≤ 2.0 → {args.out}")


if __name__ == "__main__":
    main()
