"""The fault suite's machinery: private infrastructure, a restartable stack, steady load, a ledger, a WebSocket watcher.

The ledger is topic based. Each published DetectionEvent is identified by its event id and each of its groups by
the task id `<event_id>/<group_id>`. The task generator runs its shipped policy, and its TaskDecisions records on
task-decisions say what became of every group: sent (then a task must be on assessment-tasks and end in a result, a
verdict or a typed failure with a reason), or skipped, superseded by a newer frame's task, or expired, with the
reason. A group with no decision and no task is unaccounted. Duplicates on the wire are allowed (at-least-once) and
counted; after a crash a redelivered event may be decided again, differently, and either record accounts for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import websockets
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from riskwatch import events, synthetic
from riskwatch.cache import RedisCache, keys
from riskwatch.domain import RiskLevel
from riskwatch.v1 import events_pb2
from tests.support.stack import (
    CONSUMED_TOPICS,
    REPO,
    Stack,
    free_port,
    init_topics,
    topic_field,
    wait_for_port,
    write_sim_api_keys,
)

INFRA_SCRIPT = REPO / "deploy" / "local" / "infra.sh"
KEYS = 10
GROUPS = ("g1", "g2")
# Distances cycling per scene: the simulator judges < 0.5 high, < 1.5 medium, else none (verdicts.py).
DISTANCES = (0.3, 1.0, 3.0, 0.4, 2.5)

# Our own Kafka clients' complaints while the broker is down go here, silenced: the ledger is what speaks.
CLIENT_LOG = logging.getLogger("tests.faults.kafka-clients")
CLIENT_LOG.setLevel(logging.CRITICAL)

MODULES: dict[str, tuple[str, ...]] = {
    "aggregator": ("riskwatch_aggregator",),
    "llm-scheduler": ("riskwatch_scheduler", "llm-scheduler"),
    "task-generator": ("riskwatch_scheduler", "task-generator"),
    "gateway": ("riskwatch_gateway",),
    "detector": ("riskwatch_detector",),
}
READY_PORT = {"gateway": "gateway_grpc", "detector": "detector_grpc"}


# ---- infrastructure -----------------------------------------------------------------------------------------------


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


# ---- the stack ----------------------------------------------------------------------------------------------------


@dataclass
class FaultStack(Stack):
    """Stack on the private infrastructure, the shipped task-generator policy, and restarts."""

    infra: PrivateInfra | None = None
    keys_file: Path | None = None
    readers: dict[str, TopicLog] = field(default_factory=dict)
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
            self.readers[topic] = TopicLog(self.infra.bootstrap, topic)

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


# ---- reading topics -----------------------------------------------------------------------------------------------


class TopicLog:
    """Every record of a topic, from the beginning, caught up to the high watermarks on demand (no group)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.records: list[tuple[bytes | None, bytes]] = []
        self._bootstrap = bootstrap
        self._consumer: Consumer | None = None
        self._partitions: list[int] = []
        self._lock = threading.Lock()

    def _open(self) -> Consumer | None:
        admin = AdminClient({"bootstrap.servers": self._bootstrap})
        meta = admin.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return None
        consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": f"faults-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "fetch.max.bytes": 40 * 1024 * 1024,
                # Watermark queries wait behind a pending long-poll fetch on the same connection: keep it short.
                "fetch.wait.max.ms": 10,
                "logger": CLIENT_LOG,
            }
        )
        self._partitions = sorted(meta.partitions)
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in self._partitions])
        return consumer

    def catch_up(self, timeout: float = 30.0) -> int:
        """Read up to the current high watermark of every partition; the number of records read."""
        with self._lock:
            if self._consumer is None:
                self._consumer = self._open()
                if self._consumer is None:
                    return 0
            consumer = self._consumer
            targets = {
                p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
                for p in self._partitions
            }
            positions = {p: -1 for p in self._partitions}
            read = 0
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                behind = [p for p in self._partitions if targets[p] > 0 and positions[p] < targets[p]]
                if behind:
                    got = [tp.offset for tp in consumer.position([TopicPartition(self.topic, p) for p in behind])]
                    for p, offset in zip(behind, got, strict=True):
                        positions[p] = offset
                    if all(positions[p] >= targets[p] for p in behind):
                        break
                else:
                    break
                for msg in consumer.consume(500, 0.5):
                    if msg.error() is None:
                        self.records.append((msg.key(), msg.value() or b""))
                        read += 1
            return read

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


# ---- load ---------------------------------------------------------------------------------------------------------


def crop_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = np.full((96, 128, 3), 90, dtype=np.uint8) + rng.integers(0, 12, size=(96, 128, 3), dtype=np.uint8)
    cv2.rectangle(image, (10, 40), (60, 80), (40, 40, 200), thickness=-1)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 75])
    assert ok
    return bytes(encoded.tobytes())


def scene_of(frame_id: int) -> int:
    """The load's scene (members and distances) at a frame: in each 6 frames (3 s at 2 FPS) two quick changes, 0.5 s
    apart — under the shipped 1 s minimum interval, so one waits and is superseded — then three repeats (no_change)."""
    return frame_id // 6 * 3 + min(frame_id % 6, 2)


def detection_event(
    camera_id: str, camera_index: int, frame_id: int, crop: bytes, *, scene: int | None = None
) -> events_pb2.DetectionEvent:
    """A frame with two stable groups (g1, g2) whose member tracks and features change with `scene` (default: the
    frame), cycling through the risk levels."""
    scene = frame_id if scene is None else scene
    event = synthetic.detection_event(camera_id, frame_id, model="faults-synthetic")
    for g, group_id in enumerate(GROUPS):
        tracks = (100 * scene + 2 * g + 1, 100 * scene + 2 * g + 2)
        distance = DISTANCES[(scene + camera_index + g) % len(DISTANCES)]
        synthetic.add_pair(event, group_id, tracks, slot=g, distance=distance, density=0.5, crop=crop)
    return event


class Load:
    """Publishes DetectionEvents straight to detection-results: `cameras` cameras at `fps` each, idempotently."""

    def __init__(self, bootstrap: str, topic: str, cameras: list[str], fps: float) -> None:
        self.topic = topic
        self.cameras = cameras
        self.fps = fps
        self.event_ids: list[str] = []
        self.task_ids: list[str] = []
        self.delivered = 0
        self.errors: list[str] = []
        self._crop = crop_jpeg(len(cameras))
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 300000,
                "logger": CLIENT_LOG,
            }
        )

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.errors.append(str(err))
        else:
            self.delivered += 1

    async def run(self, duration: float) -> None:
        started = time.monotonic()
        frame = 0
        while time.monotonic() - started < duration:
            frame += 1
            for index, camera in enumerate(self.cameras):
                event = detection_event(camera, index, frame, self._crop, scene=scene_of(frame))
                self.event_ids.append(event.event_id)
                self.task_ids.extend(events.task_id(event.event_id, g.group_id) for g in event.groups)
                while True:
                    try:
                        self._producer.produce(
                            self.topic, key=camera, value=event.SerializeToString(), on_delivery=self._on_delivery
                        )
                        break
                    except BufferError:
                        self._producer.poll(0.05)
            self._producer.poll(0)
            await asyncio.sleep(max(0.0, started + frame / self.fps - time.monotonic()))

    def flush(self, timeout: float = 120.0) -> int:
        """Wait for every delivery; the number still undelivered."""
        return int(self._producer.flush(timeout))


# ---- WebSocket clients --------------------------------------------------------------------------------------------


@dataclass
class WsWatcher:
    """One WebSocket client subscribed to every camera for the whole case, reconnecting if the gateway goes away."""

    http_port: int
    cameras: set[str]
    connections: int = 0
    # camera -> [(connection number, message)]
    states: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=lambda: defaultdict(list))
    alerts: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=lambda: defaultdict(list))
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WsWatcher:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(30):
            while self.connections == 0:
                await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        url = f"ws://127.0.0.1:{self.http_port}/ws"
        while True:
            try:
                async with websockets.connect(url, max_size=None, open_timeout=5) as ws:
                    await ws.send(json.dumps({"type": "subscribe", "cameras": "*", "detections": False}))
                    self.connections += 1
                    conn = self.connections
                    async for raw in ws:
                        message = json.loads(raw)
                        camera = message.get("camera_id")
                        if camera not in self.cameras:
                            continue
                        if message.get("type") == "risk_state":
                            self.states[camera].append((conn, message))
                        elif message.get("type") == "alert" and not message.get("replay"):
                            self.alerts[camera].append((conn, message))
            except (OSError, websockets.ConnectionClosed, websockets.InvalidHandshake, TimeoutError):
                await asyncio.sleep(0.3)

    def last_version(self, camera: str) -> int:
        states = self.states.get(camera)
        return int(states[-1][1]["version"]) if states else 0

    def violations(self) -> list[str]:
        """Duplicates or regressions a client would notice."""
        problems = []
        for camera, states in self.states.items():
            previous: tuple[int, int] | None = None
            for conn, message in states:
                version = int(message["version"])
                if previous is not None:
                    prev_conn, prev_version = previous
                    # Within one connection strictly increasing; a reconnect may repeat the current state once.
                    if version < prev_version or (version == prev_version and conn == prev_conn):
                        problems.append(f"{camera}: risk_state version {version} after {prev_version}")
                previous = (conn, version)
        for camera, alerts in self.alerts.items():
            seen = Counter(message["task_id"] for _conn, message in alerts)
            problems += [f"{camera}: alert {task} sent {n} times" for task, n in seen.items() if n > 1]
        return problems


# ---- the ledger ---------------------------------------------------------------------------------------------------


FAILURE_NAMES = {
    events_pb2.FAILURE_KIND_DEADLINE_EXCEEDED: "deadline_exceeded",
    events_pb2.FAILURE_KIND_INVALID_REPLY: "invalid_reply",
    events_pb2.FAILURE_KIND_NO_USABLE_KEYS: "no_usable_keys",
    events_pb2.FAILURE_KIND_LLM_ERROR: "llm_error",
}


def outcome_of(result: events_pb2.AssessmentResult) -> str:
    kind = result.WhichOneof("outcome")
    if kind == "verdict":
        return "verdict"
    if kind == "failure" and result.failure.kind in FAILURE_NAMES and result.failure.message:
        return FAILURE_NAMES[result.failure.kind]
    return "untyped"


def agreement_key(result: events_pb2.AssessmentResult) -> tuple[Any, ...]:
    if result.WhichOneof("outcome") == "verdict":
        return ("verdict", result.verdict.risk_level, tuple(result.verdict.risk_types))
    return ("failure", result.failure.kind)


DECISION_NAMES = {
    events_pb2.DECISION_SENT: "sent",
    events_pb2.DECISION_SKIPPED: "skipped",
    events_pb2.DECISION_SUPERSEDED: "superseded",
    events_pb2.DECISION_EXPIRED: "expired",
}


@dataclass
class Ledger:
    events_published: int = 0
    events_missing: list[str] = field(default_factory=list)
    event_copies: int = 0
    groups_expected: int = 0
    # Groups with neither a decision nor a task on the wire.
    undecided: list[str] = field(default_factory=list)
    # Decisions a reader cannot account with: no kind, no reason, or superseded by a task that does not exist.
    bad_decisions: list[str] = field(default_factory=list)
    # "<decision>:<reason>" -> groups, for the groups not sent.
    decisions: Counter[str] = field(default_factory=Counter)
    tasks_sent: int = 0
    # Decided "sent" but the task is not on assessment-tasks.
    tasks_missing: list[str] = field(default_factory=list)
    task_copies: int = 0
    tasks_without_result: list[str] = field(default_factory=list)
    result_copies: int = 0
    disagreements: list[str] = field(default_factory=list)
    untyped: list[str] = field(default_factory=list)
    unexpected_results: list[str] = field(default_factory=list)
    # Results of the tasks sent: "verdict" or the failure kind.
    outcomes: Counter[str] = field(default_factory=Counter)
    # (camera, group) pairs of the load never sent to the LLM at all.
    groups_never_sent: list[str] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)
    # (camera, group) -> the verdict of the latest frame that got one
    final: dict[tuple[str, str], events_pb2.AssessmentResult] = field(default_factory=dict)
    results: list[events_pb2.AssessmentResult] = field(default_factory=list)

    @property
    def unaccounted(self) -> int:
        return (
            len(self.events_missing)
            + len(self.undecided)
            + len(self.bad_decisions)
            + len(self.tasks_missing)
            + len(self.tasks_without_result)
            + len(self.untyped)
        )

    @property
    def complete(self) -> bool:
        gaps = (self.events_missing, self.undecided, self.bad_decisions, self.tasks_missing, self.tasks_without_result)
        return not any(gaps)

    def summary(self) -> dict[str, Any]:
        return {
            "events_published": self.events_published,
            "events_missing": len(self.events_missing),
            "duplicate_events_on_wire": self.event_copies,
            "groups_expected": self.groups_expected,
            "groups_undecided": len(self.undecided),
            "bad_decisions": len(self.bad_decisions),
            "groups_not_sent": dict(self.decisions.most_common()),
            "tasks_sent": self.tasks_sent,
            "tasks_missing": len(self.tasks_missing),
            "duplicate_tasks_on_wire": self.task_copies,
            "tasks_without_result": len(self.tasks_without_result),
            "duplicate_results_on_wire": self.result_copies,
            "disagreeing_duplicates": len(self.disagreements),
            "untyped_results": len(self.untyped),
            "unexpected_results": len(self.unexpected_results),
            "outcomes": dict(self.outcomes),
            "groups_never_sent": len(self.groups_never_sent),
            "dead_letters": self.dead_letters,
            "unaccounted": self.unaccounted,
            "examples": {
                "events_missing": self.events_missing[:5],
                "undecided": self.undecided[:5],
                "bad_decisions": self.bad_decisions[:5],
                "tasks_missing": self.tasks_missing[:5],
                "tasks_without_result": self.tasks_without_result[:5],
                "disagreements": self.disagreements[:5],
                "untyped": self.untyped[:5],
                "groups_never_sent": self.groups_never_sent[:5],
            },
        }


def _records(stack: FaultStack, topic: str, cameras: set[str]) -> Iterable[bytes]:
    """Values of `topic` (a default topic name) keyed by one of `cameras`."""
    for key, value in stack.readers[stack.topics[topic]].records:
        if key is not None and key.decode() in cameras:
            yield value


def _supersedes(newer: str, task: str) -> bool:
    """Whether task id `newer` is a later frame of `task`'s group (what replacing it must mean)."""
    if "/" not in newer or _group_of(newer) != _group_of(task):
        return False
    return _frame_of(newer) > _frame_of(task)


def _frame_of(task_id: str) -> int:
    """The frame of a task id "<camera>:<frame>/<group>"."""
    return int(task_id.rsplit("/", 1)[0].rsplit(":", 1)[1])


def _group_of(task_id: str) -> str:
    """ "<camera>/<group>" of a task id "<camera>:<frame>/<group>"."""
    event_id, group_id = task_id.rsplit("/", 1)
    return f"{event_id.rsplit(':', 1)[0]}/{group_id}"


def account(stack: FaultStack, load: Load) -> Ledger:
    """Read every topic to its end and account for each event, group, task and result of this case's cameras."""
    for reader in stack.readers.values():
        reader.catch_up()
    cameras = set(load.cameras)
    ledger = Ledger(events_published=len(load.event_ids), groups_expected=len(load.task_ids))
    expected = set(load.task_ids)

    seen_events = Counter(
        events_pb2.DetectionEvent.FromString(v).event_id for v in _records(stack, "detection-results", cameras)
    )
    ledger.events_missing = [e for e in load.event_ids if e not in seen_events]
    ledger.event_copies = sum(n - 1 for n in seen_events.values())

    seen_tasks = Counter(
        events_pb2.AssessmentTask.FromString(v).task_id for v in _records(stack, "assessment-tasks", cameras)
    )
    ledger.task_copies = sum(n - 1 for n in seen_tasks.values())

    decided: dict[str, list[events_pb2.GroupDecision]] = defaultdict(list)
    for value in _records(stack, "task-decisions", cameras):
        for decision in events_pb2.TaskDecisions.FromString(value).groups:
            decided[decision.task_id].append(decision)
    sent: list[str] = []
    for task in load.task_ids:
        decisions = decided.get(task, [])
        # After a crash an event may be decided again; the latest record (one camera, one partition: in order)
        # is the one that stands. A task on the wire was sent whatever was decided later.
        latest = decisions[-1] if decisions else None
        if task in seen_tasks or (latest is not None and latest.decision == events_pb2.DECISION_SENT):
            sent.append(task)
            if task not in seen_tasks:
                ledger.tasks_missing.append(task)
            continue
        if latest is None:
            ledger.undecided.append(task)
            continue
        name = DECISION_NAMES.get(latest.decision)
        replaced_by = latest.superseded_by
        if name == "superseded" and not (replaced_by in expected and _supersedes(replaced_by, task)):
            name = None  # replaced by a task the load never had, of another group, or not later
        if name is None or not latest.reason:
            ledger.bad_decisions.append(f"{task}: {latest}")
            continue
        ledger.decisions[f"{name}:{latest.reason}"] += 1
    ledger.tasks_sent = len(sent)
    ledger.groups_never_sent = sorted({_group_of(t) for t in load.task_ids} - {_group_of(t) for t in sent})

    by_task: dict[str, list[events_pb2.AssessmentResult]] = defaultdict(list)
    for value in _records(stack, "risk-assessment-results", cameras):
        result = events_pb2.AssessmentResult.FromString(value)
        by_task[result.task_id].append(result)
        ledger.results.append(result)
    ledger.unexpected_results = [task for task in by_task if task not in expected]
    ledger.tasks_without_result = [task for task in sent if task in seen_tasks and task not in by_task]
    for task, results in by_task.items():
        ledger.result_copies += len(results) - 1
        ledger.outcomes[outcome_of(results[0])] += 1
        if len({agreement_key(r) for r in results}) > 1:
            ledger.disagreements.append(f"{task}: {[outcome_of(r) for r in results]}")
        if any(outcome_of(r) == "untyped" for r in results):
            ledger.untyped.append(task)
        for result in results:
            if result.WhichOneof("outcome") != "verdict":
                continue
            key = (result.camera_id, result.group_id)
            current = ledger.final.get(key)
            if current is None or events.seconds(result.capture_time) > events.seconds(current.capture_time):
                ledger.final[key] = result

    for topic in CONSUMED_TOPICS:
        dlq = stack.readers[f"{stack.topics[topic]}.dlq"]
        ledger.dead_letters[topic] = sum(1 for key, _v in dlq.records if key is not None and key.decode() in cameras)
    return ledger


async def redis_states(
    stack: FaultStack, cameras: Iterable[str]
) -> tuple[dict[str, events_pb2.CameraRiskState], list[str]]:
    """Each camera's state in Redis, and the task ids its alert stream holds more than once."""
    assert stack.infra is not None
    cache = RedisCache(stack.infra.redis_url, prefix=stack.redis_prefix)
    states = {}
    repeated = []
    try:
        for camera in cameras:
            data = await cache.get(keys.camera_state(camera))
            states[camera] = events_pb2.CameraRiskState.FromString(data or b"")
            alerts = Counter(
                events_pb2.AssessmentResult.FromString(a).task_id
                for a in await cache.stream_tail(keys.camera_alerts(camera), 1000)
            )
            repeated += [f"{task} x{n} in the alert stream" for task, n in alerts.items() if n > 1]
    finally:
        await cache.close()
    return states, repeated


def state_mismatches(ledger: Ledger, states: dict[str, events_pb2.CameraRiskState]) -> list[str]:
    """Where the camera state in Redis is not the latest verdict per group of the results topic."""
    problems = []
    for camera, state in states.items():
        got = {g.group_id: (g.verdict.risk_level, tuple(g.verdict.risk_types)) for g in state.groups}
        want = {
            group: (r.verdict.risk_level, tuple(r.verdict.risk_types))
            for (cam, group), r in ledger.final.items()
            if cam == camera
        }
        if got != want:
            problems.append(f"{camera}: redis {got} != latest verdicts {want}")
        if want and state.max_level != max((w[0] for w in want.values()), key=RiskLevel.from_proto):
            problems.append(f"{camera}: max_level {state.max_level}")
    return problems


# ---- one case -----------------------------------------------------------------------------------------------------


@dataclass
class CaseReport:
    name: str
    ledger: Ledger
    state_problems: list[str]
    ws_problems: list[str]
    ws_behind: list[str]
    timings: dict[str, float]
    notes: dict[str, Any] = field(default_factory=dict)

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{self.name}.json").write_text(json.dumps(self.to_json(), indent=2))

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.name,
            "ledger": self.ledger.summary(),
            "state_problems": self.state_problems[:10],
            "ws_problems": self.ws_problems[:10],
            "ws_behind": self.ws_behind[:10],
            "timings_s": {k: round(v, 1) for k, v in self.timings.items()},
            "notes": self.notes,
        }


Fault = Callable[[], Awaitable[None]]


async def run_case(
    stack: FaultStack,
    name: str,
    fault: Fault,
    *,
    duration: float = 12.0,
    cameras: int = 6,
    fps: float = 2.0,
    settle_timeout: float = 90.0,
) -> CaseReport:
    """Steady load for `duration` s while `fault()` runs; then wait until everything is accounted for (or timeout)."""
    began = time.monotonic()
    restarted = stack.ensure_running()
    case_cameras = [f"{name}-{stack.run_id}-c{i}" for i in range(cameras)]
    assert stack.infra is not None
    load = Load(stack.infra.bootstrap, stack.topics["detection-results"], case_cameras, fps)
    timings: dict[str, float] = {}
    async with WsWatcher(stack.ports["gateway_http"], set(case_cameras)) as ws:
        load_task = asyncio.create_task(load.run(duration))
        try:
            await fault()
            timings["fault_done"] = time.monotonic() - began
            await load_task
        finally:
            if not load_task.done():
                load_task.cancel()
        undelivered = await asyncio.to_thread(load.flush)
        timings["load_done"] = time.monotonic() - began
        assert undelivered == 0 and not load.errors, (undelivered, load.errors[:5])

        deadline = time.monotonic() + settle_timeout
        progress = []
        while True:
            polled = time.monotonic()
            ledger = await asyncio.to_thread(account, stack, load)
            progress.append(
                [
                    round(polled - began, 1),
                    round(time.monotonic() - polled, 1),
                    len(ledger.events_missing),
                    len(ledger.tasks_missing),
                    len(ledger.tasks_without_result),
                ]
            )
            state_problems: list[str] = []
            ws_behind: list[str] = []
            if ledger.complete:
                timings.setdefault("ledger_complete", time.monotonic() - began)
                states, repeated_alerts = await redis_states(stack, case_cameras)
                state_problems = state_mismatches(ledger, states) + repeated_alerts
                ws_behind = [
                    f"{c}: ws saw version {ws.last_version(c)}, redis has {s.version}"
                    for c, s in states.items()
                    if ws.last_version(c) != s.version
                ]
                if not state_problems:
                    timings.setdefault("state_ok", time.monotonic() - began)
                if not state_problems and not ws_behind:
                    break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        timings["settled"] = time.monotonic() - began
    report = CaseReport(name, ledger, state_problems, ws.violations(), ws_behind, timings)
    report.notes["restarted_before_case"] = restarted
    # [s since start, s to read the topics, events missing, tasks missing, tasks without result] per poll
    report.notes["settle_progress"] = progress[:3] + progress[-3:] if len(progress) > 6 else progress
    report.notes["died_unexpectedly"] = stack.died_unexpectedly()
    report.notes["ws_connections"] = ws.connections
    # The ledger of each case lands beside the run's logs.
    await asyncio.to_thread(report.write, stack.log_dir.parent)
    print(json.dumps(report.to_json(), indent=2))
    return report


def assert_case(report: CaseReport, *, allow_failures: Iterable[str] = ()) -> None:
    """What every case must hold: nothing unaccounted or dead-lettered, no WS duplicate, the right final state."""
    ledger = report.ledger
    summary = json.dumps(report.to_json(), indent=1)
    assert not report.notes.get("died_unexpectedly"), f"a service exited during the case unasked: {summary}"
    assert ledger.unaccounted == 0, summary
    assert not ledger.groups_never_sent, summary
    assert not ledger.disagreements, summary
    assert not ledger.unexpected_results, summary
    assert sum(ledger.dead_letters.values()) == 0, summary
    assert not report.ws_problems, summary
    assert not report.state_problems, summary
    assert not report.ws_behind, summary
    allowed = {"verdict", *allow_failures}
    assert set(ledger.outcomes) <= allowed, summary


async def after(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def kill_and_restart(stack: FaultStack, name: str, sig: int = signal.SIGKILL, at: float = 4.0) -> dict[str, Any]:
    """At `at` s into the load, signal `name`, wait for it to exit, restart it; what its log said on the way out."""
    await after(at)
    mark = stack.log_size(name)
    started = time.monotonic()
    code = await asyncio.to_thread(stack.signal, name, sig)
    exited = time.monotonic() - started
    log = stack.log_since(name, mark)
    await asyncio.to_thread(stack.restart, name)
    return {"exit_code": code, "exit_s": round(exited, 2), "log": log}
