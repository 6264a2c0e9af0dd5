"""`python -m riskwatch_aggregator`: the result aggregator as its own process (streaming mode)."""

from __future__ import annotations

from riskwatch.cli import main
from riskwatch.lifecycle import run_until_signalled
from riskwatch.runtime import connect_bus, make_cache
from riskwatch_aggregator.app import AggregatorApp
from riskwatch_aggregator.config import AggregatorSettings


async def run(settings: AggregatorSettings) -> None:
    bus = await connect_bus(settings)
    cache = make_cache(settings)
    try:
        await run_until_signalled(AggregatorApp(settings, bus, cache))
    finally:
        await bus.close()
        await cache.close()


if __name__ == "__main__":
    raise SystemExit(main(AggregatorSettings, run, "riskwatch_aggregator"))
