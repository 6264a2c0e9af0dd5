"""Embedded mode's settings: every stage's, loaded together once from one config dir (each file read once), so
start-up and `--validate-config` fail on any of them before anything starts."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from riskwatch.config import load_all
from riskwatch_aggregator.config import AggregatorSettings
from riskwatch_detector.config import DetectorSettings
from riskwatch_gateway.config import GatewaySettings
from riskwatch_scheduler.config import LlmSchedulerSettings


@dataclass(frozen=True, slots=True)
class EmbeddedSettings:
    """The gateway's settings decide the process's own (mode, logs, metrics); each stage gets its own."""

    gateway: GatewaySettings
    detector: DetectorSettings
    scheduler: LlmSchedulerSettings
    aggregator: AggregatorSettings

    @classmethod
    def load(cls, config_dir: Path | str | None = None) -> EmbeddedSettings:
        book = load_all(config_dir, GatewaySettings, DetectorSettings, LlmSchedulerSettings, AggregatorSettings)
        return cls(book[GatewaySettings], book[DetectorSettings], book[LlmSchedulerSettings], book[AggregatorSettings])

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EmbeddedSettings:
        return cls.load(args.config_dir)

    @property
    def log_level(self) -> str:
        return self.gateway.log_level

    @property
    def log_json(self) -> bool:
        return self.gateway.log_json

    @property
    def log_file(self) -> Path | None:
        return self.gateway.log_file

    @property
    def metrics_port(self) -> int:
        return self.gateway.metrics_port

    @property
    def metrics_host(self) -> str:
        return self.gateway.metrics_host

    def config_files(self) -> list[Path]:
        files = [
            path for s in (self.gateway, self.detector, self.scheduler, self.aggregator) for path in s.config_files()
        ]
        return list(dict.fromkeys(files))
