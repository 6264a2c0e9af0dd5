"""`python -m riskwatch_gateway`: the streaming gateway (cameras, WebSocket, REST, gRPC, dashboard), its own process."""

from __future__ import annotations

from riskwatch.cli import main
from riskwatch_gateway.app import run
from riskwatch_gateway.config import GatewaySettings

if __name__ == "__main__":
    raise SystemExit(main(GatewaySettings, run, "riskwatch_gateway"))
