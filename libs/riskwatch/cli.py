"""The shared `python -m <service>` entry (parse flags, load settings failing fast, set up logs and metrics, run),
for a service with one entry point or with sub-commands, and the Kafka options every operator script takes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from riskwatch.config import CommonSettings, load_settings
from riskwatch.errors import ConfigError, PortInUse
from riskwatch.telemetry import logs, metrics

log = logging.getLogger(__name__)


class RunSettings(Protocol):
    """What the entry needs of any settings: where logs and metrics go, and which files were read."""

    @property
    def log_level(self) -> str: ...

    @property
    def log_json(self) -> bool: ...

    @property
    def log_file(self) -> Path | None: ...

    @property
    def metrics_port(self) -> int: ...

    @property
    def metrics_host(self) -> str: ...

    def config_files(self) -> list[Path]: ...


R = TypeVar("R", bound=RunSettings)
S = TypeVar("S", bound=CommonSettings)


@dataclass(frozen=True, slots=True)
class Command(Generic[R]):
    """One entry point: its flags, how its settings are loaded from them (ConfigError when invalid), what runs."""

    run: Callable[[R], Coroutine[Any, Any, None]]
    load: Callable[[argparse.Namespace], R]
    add_arguments: Callable[[argparse.ArgumentParser], None]
    help: str | None = None

    @classmethod
    def from_settings(
        cls, settings_cls: type[S], run: Callable[[S], Coroutine[Any, Any, None]], help: str | None = None
    ) -> Command[S]:
        """A service configured by config/*.yaml and ALGO_* variables: `--config-dir`."""
        return Command(run, lambda args: load_settings(settings_cls, args.config_dir), add_config_dir, help)


def add_config_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-dir", type=Path, default=None, help="directory of the YAML files (default: config)")


def main(
    settings_cls: type[S], run: Callable[[S], Coroutine[Any, Any, None]], name: str, argv: Sequence[str] | None = None
) -> int:
    """Exit status: 0 after a graceful stop, 2 for invalid configuration (or usage)."""
    return run_command(name, Command.from_settings(settings_cls, run), argv)


def main_commands(name: str, commands: Mapping[str, Command[Any]], argv: Sequence[str] | None = None) -> int:
    """`python -m <name> <command> [flags]` for a package with several entry points; same exit statuses as main."""
    parser = _parser(name)
    choices = parser.add_subparsers(dest="command", metavar="|".join(commands), required=True)
    for command_name, command in commands.items():
        sub = choices.add_parser(command_name, help=command.help, description=command.help)
        _add_common(sub, command)
    args = parser.parse_args(argv)
    return _start(f"{name} {args.command}", commands[args.command], args)


def run_command(name: str, command: Command[Any], argv: Sequence[str] | None = None) -> int:
    parser = _parser(name)
    _add_common(parser, command)
    return _start(name, command, parser.parse_args(argv))


def _parser(name: str) -> argparse.ArgumentParser:
    main_module = sys.modules.get("__main__")
    return argparse.ArgumentParser(prog=f"python -m {name}", description=getattr(main_module, "__doc__", None))


def _add_common(parser: argparse.ArgumentParser, command: Command[Any]) -> None:
    command.add_arguments(parser)
    parser.add_argument("--validate-config", action="store_true", help="check every configuration file and exit")


def _start(name: str, command: Command[R], args: argparse.Namespace) -> int:
    try:
        settings = command.load(args)
    except ConfigError as exc:
        print(f"{name}: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if args.validate_config:
        files = ", ".join(str(path) for path in settings.config_files()) or "flags only"
        print(f"{name}: configuration OK ({files})")
        return 0
    logs.configure(settings.log_level, settings.log_json, settings.log_file)
    try:
        metrics.serve(settings.metrics_port, settings.metrics_host)
        if isinstance(settings, CommonSettings):
            log.info("%s starting (%s mode)", name, "streaming" if settings.enable_kafka_streaming else "embedded")
        asyncio.run(command.run(settings))
    except PortInUse as exc:  # one line naming the port and the setting that moves it
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
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
