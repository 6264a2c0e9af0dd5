"""Command line: `python -m riskwatch_llmsim --port 8400 --keys key-001=sim-key-001` serves until a signal."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .config import InvalidJsonMode, SimulatorConfig
from .server import start_simulator

logger = logging.getLogger("riskwatch_llmsim")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m riskwatch_llmsim",
        description="OpenAI-compatible vision-LLM simulator. Flags override --config; unset flags keep "
        "the file's (or the built-in) value.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8400, help="0 picks a free port (default 8400)")
    parser.add_argument("--config", type=Path, help="YAML or JSON file holding SimulatorConfig fields")
    parser.add_argument("--keys", help="label=token pairs, comma-separated: key-001=sim-key-001,key-002=...")
    parser.add_argument("--strict-keys", action="store_true", default=None, help="401 for unlisted tokens")
    parser.add_argument("--qps", type=float, help="default per-key requests per second (0 = unlimited)")
    parser.add_argument("--rpm", type=float, help="default per-key requests per minute (0 = unlimited)")
    parser.add_argument("--grace", type=float, dest="rate_limit_grace_s", help="rate-limit grace in seconds")
    parser.add_argument("--latency-median", type=float, dest="latency_median_s", help="seconds (default 1.0)")
    parser.add_argument("--latency-sigma", type=float, dest="latency_sigma", help="lognormal sigma (0.35)")
    parser.add_argument("--latency-max", type=float, dest="latency_max_s", help="latency cap in seconds (30)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--fault-5xx", type=float, dest="fault_5xx", help="probability of a 500/503")
    parser.add_argument("--fault-timeout", type=float, dest="fault_timeout", help="probability of a hang")
    parser.add_argument("--fault-invalid-json", type=float, dest="fault_invalid_json", help="probability")
    parser.add_argument(
        "--invalid-json-modes",
        help=f"comma-separated subset of {','.join(mode.value for mode in InvalidJsonMode)}",
    )
    parser.add_argument("--timeout-hang", type=float, dest="timeout_hang_s", help="hang length in seconds")
    parser.add_argument("--revoked", help="comma-separated key labels answering 401")
    parser.add_argument("--models", help="comma-separated accepted model names (default: any)")
    parser.add_argument("--log-level", default="INFO")
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Layer the flags over the --config file; raises ValueError/ValidationError if invalid."""
    data: dict[str, Any] = {}
    if args.config is not None:
        loaded = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of SimulatorConfig fields")
        data.update(loaded)
    for name in (
        "strict_keys",
        "rate_limit_grace_s",
        "latency_median_s",
        "latency_sigma",
        "latency_max_s",
        "seed",
        "fault_5xx",
        "fault_timeout",
        "fault_invalid_json",
        "timeout_hang_s",
    ):
        value = getattr(args, name)
        if value is not None:
            data[name] = value
    for name in ("qps", "rpm"):
        value = getattr(args, name)
        if value is not None:
            data[name] = value if value > 0 else None
    if args.keys:
        keys = dict(data.get("keys") or {})
        for pair in _split(args.keys):
            label, sep, token = pair.partition("=")
            if not sep:
                raise ValueError(f"--keys: expected label=token, got an entry without '=' (label {label!r})")
            keys[label.strip()] = token.strip()
        data["keys"] = keys
    if args.invalid_json_modes:
        data["invalid_json_modes"] = _split(args.invalid_json_modes)
    if args.models:
        data["models"] = _split(args.models)
    if args.revoked:
        per_key = dict(data.get("per_key") or {})
        for label in _split(args.revoked):
            per_key[label] = {**per_key.get(label, {}), "revoked": True}
        data["per_key"] = per_key
    return SimulatorConfig.model_validate(data)


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


async def serve(config: SimulatorConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    simulator = await start_simulator(config, host, port)
    logger.info(
        "llmsim listening on %s (keys: %s; qps %s, rpm %s per key; latency median %.3fs sigma %.2f; "
        "faults 5xx %.3f timeout %.3f invalid_json %.3f)",
        simulator.base_url,
        ", ".join(sorted(config.keys)) or "none, any token accepted",
        "unlimited" if config.qps is None else f"{config.qps:g}",
        "unlimited" if config.rpm is None else f"{config.rpm:g}",
        config.latency_median_s,
        config.latency_sigma,
        config.fault_5xx,
        config.fault_timeout,
        config.fault_invalid_json,
    )
    try:
        await stop.wait()
    finally:
        logger.info("llmsim stopping")
        await simulator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ValidationError as error:
        # include_input=False: a rejected value may be a token
        for item in error.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in item["loc"]) or "config"
            print(f"llmsim: invalid configuration: {where}: {item['msg']}", file=sys.stderr)
        return 2
    except (OSError, ValueError, yaml.YAMLError) as error:
        print(f"llmsim: invalid configuration: {error}", file=sys.stderr)
        return 2
    asyncio.run(serve(config, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
