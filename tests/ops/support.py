"""Run the operator scripts on an isolated stack: free ports (RW_PORT_OFFSET), own topics, groups and Redis prefix."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from tests.support.stack import BOOTSTRAP, CONSUMED_TOPICS, REDIS_URL, TOPICS, topic_field

REPO = Path(__file__).resolve().parents[2]
START = REPO / "scripts" / "start_streaming_services.sh"
STOP = REPO / "scripts" / "stop_streaming_services.sh"

ALL = ["llmsim", "aggregator", "scheduler", "task_generator", "detector", "gateway"]
# Base ports (before RW_PORT_OFFSET) each service listens on once it is up; the first is its metrics port.
PORTS = {
    "llmsim": [8400],
    "aggregator": [9105],
    "scheduler": [9104],
    "task_generator": [9103],
    "detector": [9102, 50052],
    "gateway": [9101, 50051, 8000],
}


def run(script: Path, *args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its parent to reap it has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux): kill -0 is all there is
        return True


def gone(pids: list[int], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_offset() -> int:
    """An offset that moves every port of the stack onto free ports, so a running `make up` is not disturbed."""
    ports = [p for ps in PORTS.values() for p in ps]
    for _ in range(200):
        offset = random.randrange(2000, 15000)
        if all(port_free(p + offset) for p in ports):
            return offset
    raise RuntimeError("no free set of ports found")


def base_env(log_dir: Path, offset: int = 0) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"RW_LOG_DIR": str(log_dir), "RW_PORT_OFFSET": str(offset)})
    return env


def pids(log_dir: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text().strip()) for p in log_dir.glob("*.pid")}


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


@dataclass
class ScriptStack:
    """The whole stack as the start script runs it, isolated from anything else on this host."""

    log_dir: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    offset: int = field(default_factory=free_offset)

    @property
    def topics(self) -> dict[str, str]:
        return {topic_field(topic): f"{topic}-ops-{self.run_id}" for topic in TOPICS}

    def port(self, name: str, index: int = 0) -> int:
        return PORTS[name][index] + self.offset

    @property
    def env(self) -> dict[str, str]:
        env = base_env(self.log_dir, self.offset)
        env.update({f"ALGO_KAFKA__TOPICS__{k}__NAME": v for k, v in self.topics.items()})
        env.update({f"ALGO_KAFKA__TOPICS__{k}__PARTITIONS": "2" for k in self.topics})
        env.update(
            {
                "ALGO_KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
                "ALGO_KAFKA__CONSUMER_GROUPS__TASK_GENERATOR": f"ops-taskgen-{self.run_id}",
                "ALGO_KAFKA__CONSUMER_GROUPS__SCHEDULER": f"ops-scheduler-{self.run_id}",
                "ALGO_KAFKA__CONSUMER_GROUPS__AGGREGATOR": f"ops-aggregator-{self.run_id}",
                "ALGO_REDIS__URL": REDIS_URL,
                "ALGO_REDIS__KEY_PREFIX": f"rw-ops-{self.run_id}:",
                "ALGO_CAMERAS__CAMERAS": "[]",
                "YOLO_OFFLINE": "1",
            }
        )
        return env

    def create_topics(self) -> None:
        subprocess.run(
            [sys.executable, "scripts/init_kafka_topics.py"],
            cwd=REPO,
            env=self.env,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(START, *args, env=self.env)

    def stop(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(STOP, *args, env=self.env)

    def logs(self) -> str:
        return "\n".join(f"===== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.log_dir.glob("*.log"))

    def delete_topics(self) -> None:
        names = [*self.topics.values(), *(f"{self.topics[topic_field(t)]}.dlq" for t in CONSUMED_TOPICS)]
        admin = AdminClient({"bootstrap.servers": BOOTSTRAP})  # kept referenced until the futures resolve
        for future in admin.delete_topics(names, operation_timeout=10).values():
            try:
                future.result(timeout=15)
            except Exception as exc:  # cleanup only: a leftover test topic is harmless
                print(f"could not delete a test topic: {exc}")
