"""Operations: operator scripts, Prometheus rules, Grafana dashboard and compose files."""
