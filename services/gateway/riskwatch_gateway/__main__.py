"""Run the gateway: the whole system in one process (default), or only the gateway when streaming."""

from __future__ import annotations

import argparse
import asyncio
import sys

from riskwatch.config import load_settings
from riskwatch.errors import ConfigError
from riskwatch.lifecycle import run_until_signalled
from riskwatch.runtime import make_cache
from riskwatch.telemetry import logs
from riskwatch.telemetry.metrics import serve as serve_metrics
from riskwatch_gateway.config import GatewaySettings
from riskwatch_gateway.detect import DetectorClient
from riskwatch_gateway.gateway import Gateway


def where_to_watch(gateway: Gateway) -> str:
    host = gateway.settings.gateway.grpc_host
    host = "127.0.0.1" if host in ("0.0.0.0", "[::]", "::") else host
    return "\n".join(
        [
            f"  dashboard:  {gateway.http_url}/",
            f'  WebSocket:  {gateway.websocket_url}   (send {{"type":"subscribe","cameras":"*"}})',
            f"  REST:       {gateway.http_url}/api/cameras",
            f"  gRPC:       {host}:{gateway.grpc_port}   (grpcurl -plaintext {host}:{gateway.grpc_port} list)",
        ]
    )


async def run_streaming(settings: GatewaySettings) -> None:
    detector = DetectorClient(settings.gateway.detector_address, settings.gateway.detector_timeout_s)
    cache = make_cache(settings)
    gateway = Gateway(settings, detector, cache)

    class _Service:
        async def start(self) -> None:
            await gateway.start()
            print(
                f"riskwatch gateway (streaming; detector at {detector.address}):\n{where_to_watch(gateway)}", flush=True
            )

        async def stop(self) -> None:
            await gateway.stop()
            await detector.close()
            await cache.close()

    await run_until_signalled(_Service())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m riskwatch_gateway", description=__doc__)
    parser.add_argument("--config-dir", help="directory of the YAML files (default: $ALGO_CONFIG_DIR or config)")
    parser.add_argument("--validate-config", action="store_true", help="check the configuration and exit")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(GatewaySettings, args.config_dir)
    except ConfigError as exc:
        print(f"invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if args.validate_config:
        print(f"configuration OK: {len(settings.camera_list)} camera(s)")
        return 0
    logs.configure(settings.log_level, settings.log_json, settings.log_file)
    serve_metrics(settings.metrics_port)
    if settings.enable_kafka_streaming:
        asyncio.run(run_streaming(settings))
    else:
        # Every stage in this process; the lead's module builds them and then this gateway.
        from riskwatch_gateway import embedded  # noqa: PLC0415 - loads every stage; not needed when streaming

        asyncio.run(embedded.run_embedded(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
