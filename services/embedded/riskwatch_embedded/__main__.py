"""`python -m riskwatch_embedded`: the whole system in one process on the sample video (no Kafka, no Redis)."""

from __future__ import annotations

from riskwatch.cli import main
from riskwatch_embedded.app import run
from riskwatch_gateway.config import GatewaySettings

if __name__ == "__main__":
    raise SystemExit(main(GatewaySettings, run, "riskwatch_embedded"))
