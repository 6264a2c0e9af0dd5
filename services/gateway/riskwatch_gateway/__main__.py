"""`python -m riskwatch_gateway`: the whole system in one process (default), or only the gateway when streaming."""

from __future__ import annotations

from riskwatch.cli import main
from riskwatch.lifecycle import run_until_signalled
from riskwatch.runtime import make_cache
from riskwatch_gateway.config import GatewaySettings
from riskwatch_gateway.detect import DetectorClient
from riskwatch_gateway.gateway import Gateway


class StreamingGateway:
    """The gateway alone, calling the detector over gRPC and following risk state in Redis."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.detector = DetectorClient(settings.gateway.detector_address, settings.gateway.detector_timeout_s)
        self.cache = make_cache(settings)
        self.gateway = Gateway(settings, self.detector, self.cache)

    async def start(self) -> None:
        await self.gateway.start()
        print(
            f"riskwatch gateway (streaming; detector at {self.detector.address}):\n{self.gateway.where_to_watch()}",
            flush=True,
        )

    async def stop(self) -> None:
        await self.gateway.stop()
        await self.detector.close()
        await self.cache.close()


async def run(settings: GatewaySettings) -> None:
    if settings.enable_kafka_streaming:
        await run_until_signalled(StreamingGateway(settings))
    else:
        from riskwatch_gateway.embedded import run_embedded  # noqa: PLC0415 - loads every stage

        await run_embedded(settings)


if __name__ == "__main__":
    raise SystemExit(main(GatewaySettings, run, "riskwatch_gateway"))
