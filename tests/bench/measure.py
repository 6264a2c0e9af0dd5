"""What the benchmark measures with: /proc CPU and memory, Prometheus scrapes, simulator stats, topic reads."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.stack import REPO

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- statistics ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def summary(values: list[float]) -> dict[str, Any]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 4)

    return {
        "count": len(values),
        "p50_s": r(percentile(values, 50)),
        "p95_s": r(percentile(values, 95)),
        "p99_s": r(percentile(values, 99)),
        "max_s": r(max(values) if values else None),
    }


# --- processes -------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def infra_pids() -> dict[str, int]:
    """Kafka's and Redis's pids from `deploy/local/infra.sh status` (empty when they run elsewhere)."""
    try:
        out = subprocess.run(
            ["bash", "deploy/local/infra.sh", "status"],
            check=False,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {m[0]: int(m[1]) for m in re.findall(r"infra: (kafka|redis): running \(pid (\d+)\)", out)}


@dataclass
class ProcessSampler:
    """CPU (cores used over the window) and peak resident memory per named process."""

    pids: dict[str, int]
    start_cpu: dict[str, float] = field(default_factory=dict)
    peak_rss: dict[str, float] = field(default_factory=dict)
    started: float = 0.0

    def begin(self) -> None:
        self.started = time.monotonic()
        self.start_cpu = {name: self._cpu(pid) for name, pid in self.pids.items()}
        self.sample()

    def sample(self) -> dict[str, float]:
        now: dict[str, float] = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):  # the process has exited
                now[name] = round(rss_mb(pid), 1)
                self.peak_rss[name] = max(self.peak_rss.get(name, 0.0), now[name])
        return now

    def end(self) -> dict[str, dict[str, float]]:
        window = time.monotonic() - self.started
        out = {}
        for name, pid in self.pids.items():
            used = self._cpu(pid) - self.start_cpu.get(name, 0.0)
            out[name] = {
                "cpu_cores": round(used / window, 3),
                "peak_rss_mb": round(self.peak_rss.get(name, 0.0), 1),
            }
        return out

    @staticmethod
    def _cpu(pid: int) -> float:
        try:
            return cpu_seconds(pid)
        except OSError:
            return 0.0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, for its utilisation over a window."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return float(sum(fields) - idle), float(sum(fields))


# --- HTTP endpoints --------------------------------------------------------------------------------


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return dict(json.load(reply))


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a Prometheus endpoint as (name, labels, value); empty when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return []
    return [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **match: str) -> float:
    return sum(v for n, labels, v in samples if n == name and all(labels.get(k) == m for k, m in match.items()))


def by_label(samples: list[tuple[str, dict[str, str], float]], name: str, label: str) -> Counter[str]:
    """A counter's total per value of one label (counts, so whole numbers)."""
    out: Counter[str] = Counter()
    for n, labels, v in samples:
        if n == name:
            out[labels.get(label, "")] += round(v)
    return out
