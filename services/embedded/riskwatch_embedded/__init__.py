"""riskwatch embedded mode: every stage in one process."""
