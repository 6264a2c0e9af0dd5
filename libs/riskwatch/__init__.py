"""riskwatch shared library: settings, event bus, cache, telemetry, lifecycle and the generated contracts."""
