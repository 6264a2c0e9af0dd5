"""A Stack whose services each serve Prometheus metrics on a port of their own, for the benchmark to scrape."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.support.stack import Stack, free_port

# Processes whose Prometheus endpoint the benchmark scrapes (the gateway serves /metrics/ on its HTTP port).
METRICS_SERVICES = ("detector", "task-generator", "llm-scheduler", "aggregator")


@dataclass
class BenchStack(Stack):
    """Stack whose services each expose Prometheus metrics on their own port."""

    metrics_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in METRICS_SERVICES:
            self.metrics_ports[name] = free_port()
            self.process_env.setdefault(name, {})["ALGO_METRICS_PORT"] = str(self.metrics_ports[name])
        # The benchmark's cameras register themselves by pushing (off by default since issue 13).
        gateway = self.process_env.setdefault("gateway", {})
        gateway["ALGO_GATEWAY__AUTO_REGISTER_PUSH_CAMERAS"] = "true"
        gateway["ALGO_GATEWAY__MAX_AUTO_REGISTERED_CAMERAS"] = "10000"

    def metrics_url(self, name: str) -> str:
        if name == "gateway":
            return f"http://127.0.0.1:{self.ports['gateway_http']}/metrics/"
        return f"http://127.0.0.1:{self.metrics_ports[name]}/metrics"
