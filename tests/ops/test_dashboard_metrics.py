"""Every metric the Grafana dashboard and the alert rules query is one the services really export, with those labels."""

from __future__ import annotations

import json
import re

import pytest

from tests.ops import promql

DEFINED = promql.defined_metrics()
QUERIES = [("dashboard", title, expr) for title, expr in promql.dashboard_queries()] + [
    ("alerts.yml", name, expr) for name, expr in promql.rule_queries()
]


def _labels_of(metric: str) -> frozenset[str] | None:
    if metric in promql.PROMETHEUS_SERIES:
        return promql.PROMETHEUS_SERIES[metric] | promql.TARGET_LABELS
    found = DEFINED.get(metric)
    return None if found is None else found.labels | promql.TARGET_LABELS


def test_the_source_scan_finds_the_metrics() -> None:
    # Guards the scanner itself: if it stopped finding definitions every query below would fail confusingly.
    assert {"detection_total", "llm_latency_seconds_bucket", "api_key_success_rate", "kafka_consumer_lag"} <= set(
        DEFINED
    )


def test_the_dashboard_shows_the_names_operators_already_query() -> None:
    used = {s.metric for _, expr in promql.dashboard_queries() for s in promql.selectors(expr)}
    # DESIGN.md "Observability": names users already query, plus what the issue lists for the dashboard.
    expected = {
        "detection_total",
        "llm_latency_seconds_bucket",
        "api_key_success_rate",
        "api_key_cooldown_seconds",
        "kafka_consumer_lag",
        "riskwatch_end_to_end_latency_seconds_bucket",
        "riskwatch_camera_risk_level",
        "detector_latency_seconds_bucket",
        "detector_frames_dropped_total",
    }
    assert expected <= used, f"missing from the dashboard: {sorted(expected - used)}"


@pytest.mark.parametrize(
    ("source", "title", "expr"), QUERIES, ids=[f"{s}:{t}:{i}" for i, (s, t, _) in enumerate(QUERIES)]
)
def test_query_uses_exported_metrics_and_labels(source: str, title: str, expr: str) -> None:
    selectors = promql.selectors(expr)
    assert selectors, f"{source} {title!r}: no metric found in {expr!r}"
    problems = []
    for selector in selectors:
        labels = _labels_of(selector.metric)
        if labels is None:
            problems.append(f"{selector.metric} is not defined by any Counter/Gauge/Histogram in libs/ or services/")
            continue
        unknown = selector.matcher_labels - labels
        if unknown and "*" not in labels:
            problems.append(f"{selector.metric} has no label(s) {sorted(unknown)} (it has {sorted(labels)})")
    metric_labels = set().union(*(_labels_of(s.metric) or frozenset() for s in selectors))
    unknown_grouping = promql.grouping_labels(expr) - metric_labels
    if unknown_grouping and "*" not in metric_labels:
        problems.append(f"grouping by label(s) {sorted(unknown_grouping)} that no queried metric has")
    assert not problems, f"{source} {title!r} ({expr}):\n  " + "\n  ".join(problems)


def test_legends_name_labels_the_query_keeps() -> None:
    data = json.loads(promql.DASHBOARD.read_text(encoding="utf-8"))
    problems = []
    for panel in data["panels"]:
        for target in panel.get("targets", []):
            wanted = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            expr = target["expr"]
            if re.search(r"\b(sum|max|min|avg|count)\b", expr):
                # An aggregation keeps only the labels it groups by.
                kept = promql.grouping_labels(expr)
            else:
                kept = set().union(*(_labels_of(s.metric) or frozenset() for s in promql.selectors(expr)))
            if not wanted <= kept:
                problems.append(f"{panel['title']!r}: legend {sorted(wanted - kept)} not in the result of {expr}")
    assert not problems, "\n".join(problems)


def test_dashboard_panels_are_well_formed() -> None:
    data = json.loads(promql.DASHBOARD.read_text(encoding="utf-8"))
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert data["uid"] and data["title"]
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in data["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"{panel['title']!r} has no query"
        # ${datasource} works both when provisioned and when imported by hand into another Grafana.
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']!r} is wider than the grid"
