"""The fault suite's stack: every service on the private infrastructure with the shipped task-generator policy,
restartable one by one, plus task generators of a test's own."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.faults.infra import QUIET_READER, PrivateInfra
from tests.support.stack import (
    CONSUMED_TOPICS,
    REPO,
    Stack,
    init_topics,
    topic_field,
    wait_for_port,
    write_sim_api_keys,
)
from tests.support.topics import TopicReader

KEYS = 10
MODULES: dict[str, tuple[str, ...]] = {
    "aggregator": ("riskwatch_aggregator",),
    "llm-scheduler": ("riskwatch_scheduler", "llm-scheduler"),
    "task-generator": ("riskwatch_scheduler", "task-generator"),
    "gateway": ("riskwatch_gateway",),
    "detector": ("riskwatch_detector",),
}
READY_PORT = {"gateway": "gateway_grpc", "detector": "detector_grpc"}


@dataclass
class FaultStack(Stack):
    """Stack on the private infrastructure, the shipped task-generator policy, and restarts."""

    infra: PrivateInfra | None = None
    keys_file: Path | None = None
    readers: dict[str, TopicReader] = field(default_factory=dict)
    # Processes this suite signalled on purpose and has not restarted yet.
    deliberate: set[str] = field(default_factory=set)

    def env(self) -> dict[str, str]:
        assert self.infra is not None
        env = super().env()
        env.update(
            {
                "ALGO_KAFKA_BOOTSTRAP_SERVERS": self.infra.bootstrap,
                "ALGO_REDIS__URL": self.infra.redis_url,
                # A killed member's partitions move after the session timeout: the broker's minimum, not 45 s.
                "ALGO_KAFKA__CONSUMER_PROPERTIES": json.dumps(
                    {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}
                ),
                # The final state is then exactly the latest verdict per group.
                "ALGO_AGGREGATOR__DEESCALATE_HOLD_S": "0",
                "ALGO_LOG_LEVEL": "INFO",
            }
        )
        if self.keys_file is not None:
            env["ALGO_API_KEYS_FILE"] = str(self.keys_file)
        env.update(self.extra_env)
        return env

    def start_services(self) -> None:
        for old in self.log_dir.glob("*.log"):
            old.unlink()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.keys_file = self.log_dir / "api_keys.yaml"
        settings = [
            "default_model: riskwatch-sim-vl",
            "cooling: {min_cooldown: 0.5, max_cooldown: 5.0}",
            # The simulator's timeout fault hangs; give up soon and fail over instead of waiting 30 s.
            "request_timeout_s: 2.0",
        ]
        sim_keys = write_sim_api_keys(self.keys_file, self.ports["llmsim"], keys=KEYS, qps=10, settings=settings)
        self.init_topics()
        self.start(
            "llmsim",
            "riskwatch_llmsim",
            "--port",
            str(self.ports["llmsim"]),
            "--latency-median",
            "0.2",
            "--keys",
            sim_keys,
            "--log-level",
            "WARNING",
            port="llmsim",
        )
        for name in ("aggregator", "llm-scheduler", "task-generator", "gateway"):
            self.restart(name)
        wait_for_port(self.ports["gateway_http"], proc=self.procs["gateway"])
        assert self.infra is not None
        for topic in self.all_topics():
            self.readers[topic] = TopicReader(topic, self.infra.bootstrap, QUIET_READER)

    def restart(self, name: str) -> None:
        self.deliberate.discard(name)
        self.start(name, *MODULES[name], port=READY_PORT.get(name))
        if name == "gateway":
            wait_for_port(self.ports["gateway_http"], proc=self.procs["gateway"])

    def ensure_running(self) -> list[str]:
        """Restart whatever a previous case left dead; the names restarted."""
        dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
        for name in dead:
            if name == "llmsim":
                raise RuntimeError("the LLM simulator died")
            self.restart(name)
        return dead

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def log_size(self, name: str) -> int:
        path = self.log_path(name)
        return path.stat().st_size if path.exists() else 0

    def log_since(self, name: str, offset: int) -> str:
        with self.log_path(name).open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def signal(self, name: str, sig: int, timeout: float = 60.0) -> int:
        """Send `sig` and wait for the exit; the exit code."""
        proc = self.procs[name]
        self.deliberate.add(name)
        proc.send_signal(sig)
        return proc.wait(timeout=timeout)

    def died_unexpectedly(self) -> dict[str, int]:
        """Services that exited although nobody here signalled them (e.g. another run on the machine did)."""
        return {
            name: code
            for name, proc in self.procs.items()
            if (code := proc.poll()) is not None and name not in self.deliberate
        }

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()

    async def control_llm(self, patch: dict[str, Any]) -> None:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{self.ports['llmsim']}/_control"
            async with http.post(url, json=patch) as response:
                assert response.status == 200, await response.text()

    async def llm_stats(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.ports['llmsim']}/_stats"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            return dict(await response.json())


def probe_env(stack: FaultStack, probe: str) -> dict[str, str]:
    """The environment of a task generator of a test's own: its own single-partition topics (created here, with
    their dead-letter topics) and group; the stack's task-decisions topic."""
    env = stack.env()
    for topic in CONSUMED_TOPICS:
        env[f"ALGO_KAFKA__TOPICS__{topic_field(topic)}__NAME"] = f"{probe}-{topic}"
        env[f"ALGO_KAFKA__TOPICS__{topic_field(topic)}__PARTITIONS"] = "1"
    env["ALGO_KAFKA__CONSUMER_GROUPS__TASK_GENERATOR"] = f"{probe}-taskgen"
    init_topics(env)
    return env


def start_task_generator(stack: FaultStack, env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
    """A task generator of a test's own (its own topics and group in `env`), beside the stack's services."""
    with (stack.log_dir / log).open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "riskwatch_scheduler", "task-generator"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
