"""A private Kafka broker and Redis server for the fault suite, and how our own clients live with them going away."""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.stack import REPO, free_port

INFRA_SCRIPT = REPO / "deploy" / "local" / "infra.sh"

# Our own Kafka clients' complaints while the broker is down go here, silenced: the ledger is what speaks.
CLIENT_LOG = logging.getLogger("tests.faults.kafka-clients")
CLIENT_LOG.setLevel(logging.CRITICAL)
# The same for the topic readers (their properties are strings, so librdkafka's own log level).
QUIET_READER = {"log_level": "0", "fetch.max.bytes": str(40 * 1024 * 1024)}


@dataclass
class PrivateInfra:
    """A Kafka broker and a Redis server of our own (deploy/local/infra.sh on free ports), restartable at will."""

    directory: Path
    kafka_port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def _run(self, command: str) -> None:
        env = dict(os.environ)
        env.update(
            {
                "RW_INFRA_DIR": str(self.directory),
                "RW_KAFKA_PORT": str(self.kafka_port),
                "RW_KAFKA_CONTROLLER_PORT": str(self.controller_port),
                "RW_REDIS_PORT": str(self.redis_port),
            }
        )
        done = subprocess.run(
            ["bash", str(INFRA_SCRIPT), command], env=env, capture_output=True, text=True, timeout=180, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"infra.sh {command} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def kafka_start(self) -> None:
        self._run("kafka-start")

    def kafka_stop(self) -> None:
        self._run("kafka-stop")

    def redis_start(self) -> None:
        self._run("redis-start")

    def redis_stop(self) -> None:
        self._run("redis-stop")

    def start(self) -> None:
        if self.directory.exists():
            subprocess.run(["rm", "-rf", str(self.directory)], check=True)
        self.directory.mkdir(parents=True)
        self.kafka_start()
        self.redis_start()

    def stop(self) -> None:
        for stop in (self.kafka_stop, self.redis_stop):
            try:
                stop()
            except RuntimeError as exc:
                print(exc)
