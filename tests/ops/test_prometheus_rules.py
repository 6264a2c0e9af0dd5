"""Prometheus: scrape configs and alert rules are valid, every alert has promtool unit tests, the files agree."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "deploy" / "prometheus"
SCRAPE_CONFIGS = [PROM / "prometheus.yml", PROM / "prometheus.local.yml"]
MONITORING = yaml.safe_load((REPO / "config" / "monitoring.yaml").read_text(encoding="utf-8"))
# config/monitoring.yaml's service names → the scrape job names.
JOBS = {
    "gateway": "riskwatch-gateway",
    "detector": "riskwatch-detector",
    "task_generator": "riskwatch-task-generator",
    "llm_scheduler": "riskwatch-llm-scheduler",
    "aggregator": "riskwatch-aggregator",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: run `make install` (Debian's prometheus package provides it)")
    return found


def _promtool(promtool: str, *args: str) -> None:
    result = subprocess.run([promtool, *args], cwd=PROM, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in _load(PROM / "alerts.yml")["groups"] for r in g["rules"] if "alert" in r}


@pytest.mark.parametrize("config", SCRAPE_CONFIGS, ids=lambda p: p.name)
def test_promtool_accepts_the_scrape_config(promtool: str, config: Path) -> None:
    _promtool(promtool, "check", "config", config.name)


def test_promtool_accepts_the_rules(promtool: str) -> None:
    _promtool(promtool, "check", "rules", "alerts.yml")


def test_promtool_unit_tests_of_the_rules_pass(promtool: str) -> None:
    _promtool(promtool, "test", "rules", "alerts_test.yml")


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    tests = _load(PROM / "alerts_test.yml")["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = set(_alerts())
    assert alerts - firing == set(), f"alerts never tested firing: {sorted(alerts - firing)}"
    assert alerts - quiet == set(), f"alerts never tested staying quiet: {sorted(alerts - quiet)}"


def test_the_required_alerts_exist() -> None:
    # The alerts operators asked for (DESIGN.md "Observability", issue 7).
    required = {"ApiKeySuccessRateLow", "KafkaConsumerLagHigh", "LlmLatencyP95High", "ServiceDown", "DeadLetterGrowing"}
    assert required <= set(_alerts())


def test_alert_thresholds_match_config_monitoring_yaml() -> None:
    alerts = _alerts()
    configured = MONITORING["alerts"]
    assert set(configured) == set(alerts), "config/monitoring.yaml lists a different set of alerts"
    for name, expected in configured.items():
        rule = alerts[name]
        if "threshold" in expected:
            numbers = [float(n) for n in re.findall(r"[<>]=?\s*([0-9.]+)\s*$", rule["expr"].strip())]
            assert numbers == [float(expected["threshold"])], f"{name}: {rule['expr']!r} vs {expected}"
        assert rule.get("for") == expected.get("for"), f"{name}: for {rule.get('for')} vs {expected.get('for')}"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@pytest.mark.parametrize("config", SCRAPE_CONFIGS, ids=lambda p: p.name)
def test_every_service_is_scraped_on_its_metrics_port(config: Path) -> None:
    jobs = {job["job_name"]: job for job in _load(config)["scrape_configs"]}
    for service, port in MONITORING["metrics_ports"].items():
        job = jobs.get(JOBS[service])
        assert job is not None, f"{config.name}: no job {JOBS[service]}"
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        assert [t.rsplit(":", 1)[1] for t in targets] == [str(port)], f"{config.name} {JOBS[service]}: {targets}"
    assert _load(config)["rule_files"] == ["alerts.yml"]
    assert _load(config)["global"]["scrape_interval"] == MONITORING["prometheus"]["scrape_interval"]


def test_start_script_uses_the_same_metrics_ports() -> None:
    script = (REPO / "scripts" / "start_streaming_services.sh").read_text(encoding="utf-8")
    body = script[script.index("metrics_port_of() {") :]
    body = body[: body.index("\n}\n")]
    ports = dict(re.findall(r"(\w+)\) port (\d+)", body))
    expected = {("scheduler" if k == "llm_scheduler" else k): str(v) for k, v in MONITORING["metrics_ports"].items()}
    assert ports == expected
