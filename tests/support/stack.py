"""Start riskwatch's streaming services as real processes for end-to-end and fault tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = os.environ.get("ALGO_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
REDIS_URL = os.environ.get("RW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
VIDEO = REPO / "var" / "data" / "vtest.avi"
# config/kafka.yaml's topics by their default names (the settings field is the name with "_" for "-").
TOPICS = ("detection-results", "assessment-tasks", "risk-assessment-results", "task-decisions")
# The topics a stage consumes, so the ones with a dead-letter topic.
CONSUMED_TOPICS = TOPICS[:3]


def topic_field(topic: str) -> str:
    """The settings field of a topic's default name, as ALGO_KAFKA__TOPICS__<field> spells it."""
    return topic.upper().replace("-", "_")


def init_topics(env: dict[str, str]) -> None:
    """Create the topics (and dead-letter topics) that `env`'s configuration names, as an operator would."""
    script = [sys.executable, "scripts/init_kafka_topics.py"]
    subprocess.run(script, cwd=REPO, env=env, check=True, capture_output=True, timeout=120)


def write_sim_api_keys(path: Path, llmsim_port: int, *, keys: int, qps: int, settings: Sequence[str] = ()) -> str:
    """An api_keys.yaml of `keys` keys for the LLM simulator on `llmsim_port`, `qps` calls/s each (plus top-level
    `settings` lines); returns the simulator's `--keys` argument that accepts exactly those keys."""
    lines = [f"default_base_url: http://127.0.0.1:{llmsim_port}/v1", "selection_strategy: least_loaded", *settings]
    lines.append("keys:")
    lines += [
        f"  - {{id: key-{i:03d}, api_key: sim-key-{i:03d}, qps_limit: {qps}, rpm_limit: {qps * 60}}}"
        for i in range(1, keys + 1)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return ",".join(f"key-{i:03d}=sim-key-{i:03d}" for i in range(1, keys + 1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class Stack:
    """One isolated pipeline: its own topics, consumer groups, Redis prefix and ports."""

    log_dir: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Environment on top of the run's: for every process, and per process name.
    extra_env: dict[str, str] = field(default_factory=dict)
    process_env: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("gateway_grpc", "gateway_http", "detector_grpc", "llmsim"):
            self.ports[name] = free_port()

    @property
    def topics(self) -> dict[str, str]:
        """Each topic's default name -> this run's name."""
        return {t: f"{t}-{self.run_id}" for t in TOPICS}

    def all_topics(self) -> list[str]:
        """This run's topics and dead-letter topics."""
        return [*self.topics.values(), *(f"{self.topics[t]}.dlq" for t in CONSUMED_TOPICS)]

    @property
    def redis_prefix(self) -> str:
        return f"rw-{self.run_id}:"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "ALGO_ENABLE_KAFKA_STREAMING": "true",
                "ALGO_KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
                "ALGO_KAFKA__CONSUMER_GROUPS__TASK_GENERATOR": f"taskgen-{self.run_id}",
                "ALGO_KAFKA__CONSUMER_GROUPS__SCHEDULER": f"scheduler-{self.run_id}",
                "ALGO_KAFKA__CONSUMER_GROUPS__AGGREGATOR": f"aggregator-{self.run_id}",
                # The suites on this stack count tasks of calm scenes: every group is sent, danger or not.
                "ALGO_TASKGEN__SEND_NEW_GROUPS": "always",
                "ALGO_REDIS__URL": REDIS_URL,
                "ALGO_REDIS__KEY_PREFIX": self.redis_prefix,
                "ALGO_METRICS_PORT": "0",
                "ALGO_GRPC_PORT": str(self.ports["detector_grpc"]),
                "ALGO_GATEWAY__GRPC_PORT": str(self.ports["gateway_grpc"]),
                "ALGO_GATEWAY__HTTP_PORT": str(self.ports["gateway_http"]),
                "ALGO_GATEWAY__DETECTOR_ADDRESS": f"127.0.0.1:{self.ports['detector_grpc']}",
                "ALGO_CAMERAS__CAMERAS": "[]",
                "RW_LLM_BASE_URL": f"http://127.0.0.1:{self.ports['llmsim']}/v1",
                "YOLO_OFFLINE": "1",
                "YOLO_AUTOINSTALL": "0",
                "YOLO_CONFIG_DIR": str(REPO / "var" / "ultralytics"),
            }
        )
        for topic, name in self.topics.items():
            env[f"ALGO_KAFKA__TOPICS__{topic_field(topic)}__NAME"] = name
            env[f"ALGO_KAFKA__TOPICS__{topic_field(topic)}__PARTITIONS"] = "4"
        env.update(self.extra_env)
        return env

    def init_topics(self) -> None:
        init_topics(self.env())

    def start(self, name: str, *args: str, port: str | None = None) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = self.env() | self.process_env.get(name, {})
        with (self.log_dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.procs[name] = proc
        if port is not None:
            wait_for_port(self.ports[port], timeout=120, proc=proc)
        return proc

    def start_all(self) -> None:
        self.init_topics()
        self.start(
            "llmsim", "riskwatch_llmsim", "--port", str(self.ports["llmsim"]), "--latency-median", "0.2", port="llmsim"
        )
        self.start("aggregator", "riskwatch_aggregator")
        self.start("llm-scheduler", "riskwatch_scheduler", "llm-scheduler")
        self.start("task-generator", "riskwatch_scheduler", "task-generator")
        self.start("detector", "riskwatch_detector", port="detector_grpc")
        self.start("gateway", "riskwatch_gateway", port="gateway_grpc")
        wait_for_port(self.ports["gateway_http"], proc=self.procs["gateway"])

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logs(self) -> str:
        return "\n".join(f"===== {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.log_dir.glob("*.log"))
