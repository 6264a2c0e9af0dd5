"""`python -m riskwatch_aggregator`: the result aggregator as its own process (streaming mode)."""

from __future__ import annotations

from riskwatch.cli import main
from riskwatch_aggregator.app import run
from riskwatch_aggregator.config import AggregatorSettings

if __name__ == "__main__":
    raise SystemExit(main(AggregatorSettings, run, "riskwatch_aggregator"))
