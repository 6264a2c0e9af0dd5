"""A real Prometheus scrapes the stack started by the operator scripts: every dashboard and alert query returns data."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops import promql
from tests.ops.support import REPO, ScriptStack, port_free
from tests.support.clients import add_push_camera, push_frames
from tests.support.frames import video_frames

PROM = REPO / "deploy" / "prometheus"
VIDEO = REPO / "var" / "data" / "vtest.avi"
# Series that exist only once their event has happened (a dead letter, a dropped frame, a skipped group);
# a short healthy run has none, so their queries may come back empty here.
EVENT_DRIVEN = ("riskwatch_dead_letter_total", "detector_frames_dropped_total", "riskwatch_groups_skipped_total")
EVENT_DRIVEN_MATCHERS = ('outcome="dropped_busy"',)

pytestmark = pytest.mark.infra


def _free_port() -> int:
    for port in range(19090, 19190):
        if port_free(port):
            return port
    raise RuntimeError("no free port for Prometheus")


def _get(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def prometheus(script_stack: ScriptStack, tmp_path: Path) -> Iterator[str]:
    """Prometheus with the project's jobs and rules, scraping the isolated stack every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: run `make install` (Debian's prometheus package)")
    port = _free_port()
    config = yaml.safe_load((PROM / "prometheus.local.yml").read_text(encoding="utf-8"))
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
    config["rule_files"] = [str(PROM / "alerts.yml")]
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            if job["job_name"] == "prometheus":
                static["targets"] = [f"127.0.0.1:{port}"]
            else:
                static["targets"] = [
                    f"127.0.0.1:{int(t.rsplit(':', 1)[1]) + script_stack.offset}" for t in static["targets"]
                ]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Prometheus did not start:\n{(tmp_path / 'prometheus.log').read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _without_threshold(expr: str) -> str:
    """The alert expression without its final comparison: what must return data even when nothing fires."""
    return re.sub(r"\s*(==|!=|>=|<=|>|<)\s*-?[0-9.]+\s*$", "", expr.strip())


def _may_be_empty(expr: str) -> bool:
    return any(m in expr for m in EVENT_DRIVEN) or any(m in expr for m in EVENT_DRIVEN_MATCHERS)


def _traffic(stack: ScriptStack) -> None:
    """Synthetic events through Kafka (every stage after the detector), and real frames through the gateway."""
    pipeline = subprocess.run(
        [sys.executable, "scripts/test_streaming_pipeline.py", *("--mode", "e2e", "--duration", "2"), "--json"],
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert pipeline.returncode == 0, pipeline.stdout + pipeline.stderr
    assert json.loads(pipeline.stdout)["missing"] == 0
    camera = f"ops-{stack.run_id}"
    frames = video_frames(VIDEO, 4, camera, every=5, start=100)
    asyncio.run(add_push_camera(stack.port("gateway", 1), camera))
    responses = asyncio.run(push_frames(stack.port("gateway", 1), frames, interval_s=0.2))
    assert len(responses) == len(frames)


def test_every_dashboard_and_alert_query_returns_data(script_stack: ScriptStack, prometheus: str) -> None:
    started = script_stack.start("--all")
    assert started.returncode == 0, started.stdout + started.stderr + script_stack.logs()
    _traffic(script_stack)

    # Every service is scraped...
    jobs = {"riskwatch-gateway", "riskwatch-detector", "riskwatch-task-generator"}
    jobs |= {"riskwatch-llm-scheduler", "riskwatch-aggregator"}
    deadline = time.monotonic() + 20
    while True:
        samples = _get(prometheus, "/api/v1/query", query="up")["data"]["result"]
        up = {r["metric"]["job"]: r["value"][1] for r in samples}
        if all(up.get(job) == "1" for job in jobs):
            break
        assert time.monotonic() < deadline, f"targets not up: {up}"
        time.sleep(0.5)
    time.sleep(3)  # a few scrapes, so rate() windows hold two samples

    # ...the rules load and evaluate without errors...
    groups = _get(prometheus, "/api/v1/rules")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == len(promql.rule_queries())
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]

    # ...and every query has data.
    queries = [(f"dashboard {t!r}", e) for t, e in promql.dashboard_queries()]
    queries += [(f"alert {name}", _without_threshold(e)) for name, e in promql.rule_queries()]
    empty, allowed_empty = [], []
    for where, expr in queries:
        result = _get(prometheus, "/api/v1/query", query=expr)
        assert result["status"] == "success", f"{where}: {result}"
        if not result["data"]["result"]:
            (allowed_empty if _may_be_empty(expr) else empty).append(f"{where}: {expr}")
    print("empty until their event happens:\n  " + "\n  ".join(allowed_empty))
    assert not empty, "queries without data from the running services:\n  " + "\n  ".join(empty)
