"""Just enough PromQL and prometheus_client source reading to check that queries use metrics the code exports."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = [REPO / "libs" / "riskwatch", *sorted((REPO / "services").glob("*/riskwatch_*"))]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "riskwatch.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"

# Added by Prometheus to every scraped series, or by our scrape config.
TARGET_LABELS = frozenset({"job", "instance", "service"})
# Series Prometheus itself makes, not the services.
PROMETHEUS_SERIES: dict[str, frozenset[str]] = {"up": frozenset()}

_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
    }
)
_METRIC_TYPES = frozenset({"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"})


@dataclass(frozen=True)
class MetricDef:
    """One prometheus_client metric as declared in the source, and the series names it exports."""

    kind: str
    name: str
    labels: frozenset[str]
    where: str
    series: frozenset[str] = field(default_factory=frozenset)


def _series_names(kind: str, name: str) -> frozenset[str]:
    if kind == "Counter":
        base = name.removesuffix("_total")
        return frozenset({f"{base}_total", f"{base}_created"})
    if kind == "Histogram":
        return frozenset({f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"})
    if kind == "Summary":
        return frozenset({name, f"{name}_sum", f"{name}_count", f"{name}_created"})
    if kind == "Info":
        return frozenset({f"{name}_info"})
    return frozenset({name})


def _call_kind(node: ast.Call) -> str | None:
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    return name if name in _METRIC_TYPES else None


def _string_list(node: ast.expr | None) -> frozenset[str] | None:
    if isinstance(node, ast.List | ast.Tuple) and all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts
    ):
        return frozenset(str(e.value) for e in node.elts if isinstance(e, ast.Constant))
    return None


def source_files() -> Iterator[Path]:
    for root in SOURCE_ROOTS:
        for path in sorted(root.rglob("*.py")):
            if "tests" in path.parts or "v1" in path.relative_to(root).parts[:1]:
                continue
            yield path


def defined_metrics() -> dict[str, MetricDef]:
    """Every series name the services can export → the metric that exports it."""
    found: dict[str, MetricDef] = {}
    for path in source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or (kind := _call_kind(node)) is None:
                continue
            if not node.args or not isinstance(node.args[0], ast.Constant) or not isinstance(node.args[0].value, str):
                continue
            name = node.args[0].value
            label_node = node.args[2] if len(node.args) > 2 else None
            for kw in node.keywords:
                if kw.arg == "labelnames":
                    label_node = kw.value
            labels = _string_list(label_node) if label_node is not None else frozenset()
            if labels is None:  # computed label names: cannot check them statically
                labels = frozenset({"*"})
            if kind == "Histogram":
                labels |= {"le"}
            if kind == "Summary":
                labels |= {"quantile"}
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            series = _series_names(kind, name)
            metric = MetricDef(kind, name, labels, where, series)
            for s in series:
                found[s] = metric
    return found


@dataclass(frozen=True)
class Selector:
    metric: str
    matcher_labels: frozenset[str]


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)


def selectors(expr: str) -> list[Selector]:
    """Metric names in `expr` with the label names their matchers use."""
    text = _strip_strings(expr)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    found: list[Selector] = []
    pattern = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?")
    # Grouping clauses hold label names, not metrics.
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    for match in pattern.finditer(text):
        name, braces, call = match.groups()
        if call and not braces:
            continue  # a function or an aggregation
        if name.lower() in _KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        labels = frozenset(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", braces or ""))
        found.append(Selector(name, labels))
    return found


def grouping_labels(expr: str) -> set[str]:
    """Label names in by (...) / without (...) / on (...) clauses."""
    labels: set[str] = set()
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", _strip_strings(expr)):
        labels |= {label.strip() for label in clause.split(",") if label.strip()}
    return labels


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows included."""
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                queries.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(data["panels"])
    return queries


def rule_queries() -> list[tuple[str, str]]:
    """(alert or record name, PromQL) for every rule of alerts.yml."""
    data = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [
        (rule.get("alert") or rule.get("record"), rule["expr"]) for group in data["groups"] for rule in group["rules"]
    ]
