"""riskwatch."""
