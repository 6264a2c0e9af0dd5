"""The shared `python -m <service>` entry (parse flags, load settings failing fast, set up logs and metrics, run),
and the Kafka options every operator script under scripts/ takes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from riskwatch.config import CommonSettings, load_settings
from riskwatch.errors import ConfigError
from riskwatch.telemetry import logs, metrics

S = TypeVar("S", bound=CommonSettings)
log = logging.getLogger(__name__)


def main(
    settings_cls: type[S], run: Callable[[S], Coroutine[Any, Any, None]], name: str, argv: Sequence[str] | None = None
) -> int:
    """Exit status: 0 after a graceful stop, 2 for invalid configuration."""
    parser = argparse.ArgumentParser(prog=f"python -m {name}", description=(sys.modules["__main__"].__doc__ or ""))
    parser.add_argument("--config-dir", type=Path, default=None, help="directory of the YAML files (default: config)")
    parser.add_argument("--validate-config", action="store_true", help="check the configuration and exit")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(settings_cls, args.config_dir)
    except ConfigError as exc:
        print(f"{name}: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if args.validate_config:
        print(f"{name}: configuration OK ({settings.config_dir})")
        return 0
    logs.configure(settings.log_level, settings.log_json, settings.log_file)
    metrics.serve(settings.metrics_port)
    log.info("%s starting (%s mode)", name, "streaming" if settings.enable_kafka_streaming else "embedded")
    try:
        asyncio.run(run(settings))
    except ConfigError as exc:  # found only once running, e.g. topics missing from the cluster
        print(f"{name}: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    return 0


def add_kafka_options(parser: argparse.ArgumentParser) -> None:
    """--config-dir and --bootstrap-servers, as every operator script takes them."""
    parser.add_argument("--config-dir", default=None, help="directory of kafka.yaml (default: config)")
    parser.add_argument(
        "--bootstrap-servers", default=None, help="Kafka brokers (default: ALGO_KAFKA_BOOTSTRAP_SERVERS or kafka.yaml)"
    )


def kafka_settings(args: argparse.Namespace) -> tuple[CommonSettings, str]:
    """The settings of `add_kafka_options`' flags and the brokers to use; exits with status 2, naming the file, field
    and reason, when the configuration is invalid."""
    try:
        settings = load_settings(CommonSettings, args.config_dir)
    except ConfigError as exc:
        print(f"invalid configuration:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    return settings, args.bootstrap_servers or settings.bootstrap_servers
