"""`python -m riskwatch_detector`: the detector's gRPC server as its own process."""

from __future__ import annotations

from riskwatch.cli import main
from riskwatch_detector.app import run
from riskwatch_detector.config import DetectorSettings

if __name__ == "__main__":
    raise SystemExit(main(DetectorSettings, run, "riskwatch_detector"))
