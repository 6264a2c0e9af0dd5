"""The compose files and the Dockerfile hold together without Docker: structure, ports, volumes and real settings;
and they are safe to start as they are: loopback ports, required secrets from the environment, none committed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from riskwatch.config import CommonSettings, load_settings
from riskwatch_aggregator.config import AggregatorSettings
from riskwatch_detector.config import DetectorSettings
from riskwatch_gateway.config import GatewaySettings
from riskwatch_scheduler.config import SchedulerSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SERVICES_FILE = DEPLOY / "docker-compose.yml"
INFRA_FILE = DEPLOY / "docker-compose.infra.yml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
MONITORING = yaml.safe_load((REPO / "config" / "monitoring.yaml").read_text(encoding="utf-8"))
# Bind-mounted data that `make assets` fetches (absent from a fresh checkout).
ASSET_DIRS = {REPO / "models", REPO / "var" / "data"}
ENV_EXAMPLE = DEPLOY / ".env.example"
# `${NAME:?message}`: compose refuses to start while NAME is unset or empty.
REQUIRED_VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*):\?[^}]*\}")
SECRETS = {"RISKWATCH_GATEWAY_TOKEN", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}

# The settings class each command loads.
SETTINGS_BY_MODULE: dict[str, type[CommonSettings] | None] = {
    "riskwatch_scheduler": SchedulerSettings,
    "riskwatch_aggregator": AggregatorSettings,
    "riskwatch_detector": DetectorSettings,
    "riskwatch_gateway": GatewaySettings,
    "scripts/init_kafka_topics.py": CommonSettings,
    "riskwatch_llmsim": None,  # configured by flags, reads no ALGO_* variables
}


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


def _project(path: Path) -> dict[str, Any]:
    """The services, volumes and networks of a compose file with its `include`s merged in."""
    data = _load(path)
    merged: dict[str, Any] = {"services": {}, "volumes": {}, "networks": {}}
    for included in data.get("include", []):
        sub = _project(path.parent / (included if isinstance(included, str) else included["path"]))
        for key, section in merged.items():
            section.update(sub.get(key) or {})
    for key, section in merged.items():
        section.update(data.get(key) or {})
    return merged


SERVICES = _load(SERVICES_FILE)["services"]
PROJECT = _project(SERVICES_FILE)


def _module(service: dict[str, Any]) -> str:
    command = service.get("command") or []
    if "-m" in command:
        return str(command[command.index("-m") + 1])
    return next(str(c) for c in command if str(c).endswith(".py"))


def _interpolated(value: str) -> str:
    """`value` as compose would pass it with every required variable set (to a URL-safe test value)."""
    return REQUIRED_VARIABLE.sub(lambda m: f"test-{m.group(1).lower().replace('_', '-')}", value)


def _bind_addresses(service: dict[str, Any]) -> list[str]:
    """The host address each published port is bound to ("" when none is given: every interface)."""
    return [str(entry).rsplit(":", 2)[0] if str(entry).count(":") == 2 else "" for entry in service.get("ports", [])]


def _published(service: dict[str, Any]) -> dict[int, int]:
    """container port → host port."""
    mapping = {}
    for entry in service.get("ports", []):
        host, container = str(entry).rsplit(":", 1)
        mapping[int(container)] = int(host.rsplit(":", 1)[-1])
    return mapping


def _field_path_problem(settings: type[BaseModel], env_name: str) -> str | None:
    """None when ALGO_X__Y names settings field x, then its nested field y; else what is wrong."""
    model: type[BaseModel] | None = settings
    for part in env_name.removeprefix("ALGO_").lower().split("__"):
        if model is None:
            return f"{env_name}: {part!r} is below a field that is not a settings model"
        field = model.model_fields.get(part)
        if field is None:
            return f"{env_name}: {model.__name__} has no field {part!r}"
        annotation = field.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return None


@pytest.mark.parametrize("path", [SERVICES_FILE, INFRA_FILE], ids=lambda p: p.name)
def test_every_service_has_an_image_and_well_formed_ports_and_volumes(path: Path) -> None:
    project = _project(path)
    host_ports: dict[int, str] = {}
    for name, service in project["services"].items():
        assert service.get("image") or service.get("build"), f"{name}: neither image nor build"
        if "build" in service:
            build = service["build"]
            assert (path.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE, name
        for container, host in _published(service).items():
            assert 0 < container < 65536 and 0 < host < 65536, f"{name}: port {host}:{container}"
            assert host not in host_ports, f"host port {host} published by both {host_ports.get(host)} and {name}"
            host_ports[host] = name
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith((".", "/")):
                resolved = (path.parent / source).resolve()
                assert resolved.exists() or resolved in ASSET_DIRS, f"{name}: bind mount {source} does not exist"
            else:
                assert source in project["volumes"], f"{name}: volume {source} is not declared"
        depends = service.get("depends_on") or {}
        for other in depends if isinstance(depends, list) else depends.keys():
            assert other in project["services"], f"{name} depends on unknown service {other}"


@pytest.mark.parametrize("name", sorted(SERVICES), ids=str)
def test_service_environment_names_real_settings_and_validates(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    service = SERVICES[name]
    module = _module(service)
    assert module in SETTINGS_BY_MODULE, f"{name}: unknown command module {module}"
    settings_cls = SETTINGS_BY_MODULE[module]
    env = {k: _interpolated(str(v)) for k, v in (service.get("environment") or {}).items()}
    algo = {k: v for k, v in env.items() if k.startswith("ALGO_")}
    if settings_cls is None:
        assert not algo, f"{name} reads no ALGO_* variables: {sorted(algo)}"
        return
    problems = [p for k in algo if (p := _field_path_problem(settings_cls, k))]
    assert not problems, "\n".join(problems)
    # And the values are valid: load the settings exactly as the container would (its config/, this environment).
    for key in [k for k in os.environ if k.startswith("ALGO_")]:
        monkeypatch.delenv(key)
    for key, value in algo.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(settings_cls, REPO / "config")
    if "ALGO_METRICS_PORT" in algo:
        port = settings.metrics_port
        assert _published(service).get(port) == port, f"{name}: metrics port {port} is not published as itself"


def test_streaming_services_use_the_monitored_metrics_ports_and_kafka_mode() -> None:
    names = {"gateway": "gateway", "detector": "detector", "task_generator": "task-generator"}
    names |= {"llm_scheduler": "llm-scheduler", "aggregator": "aggregator"}
    for key, port in MONITORING["metrics_ports"].items():
        env = SERVICES[names[key]]["environment"]
        assert env["ALGO_METRICS_PORT"] == str(port), key
        assert env["ALGO_ENABLE_KAFKA_STREAMING"] == "true", key
        assert len(env["ALGO_KAFKA_BOOTSTRAP_SERVERS"].split(",")) == 3, f"{key}: bootstrap should list every broker"


def test_infra_runs_three_kraft_brokers_that_agree() -> None:
    services = _project(INFRA_FILE)["services"]
    brokers = {name: s for name, s in services.items() if name.startswith("kafka-") and name != "kafka-ui"}
    assert len(brokers) == 3
    node_ids = set()
    for name, broker in brokers.items():
        env = broker["environment"]
        node_ids.add(int(env["KAFKA_NODE_ID"]))
        voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert sorted(v.split("@")[1].split(":")[0] for v in voters) == sorted(brokers), name
        assert f"{env['KAFKA_NODE_ID']}@{name}:" in env["KAFKA_CONTROLLER_QUORUM_VOTERS"], name
        external = re.search(r"EXTERNAL://localhost:(\d+)", env["KAFKA_ADVERTISED_LISTENERS"])
        assert external and _published(broker)[19092] == int(external.group(1)), f"{name}: advertised port"
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2 and int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3
        assert any(str(v).endswith(":/var/lib/kafka/data") for v in broker["volumes"]), f"{name}: no data volume"
    assert node_ids == {1, 2, 3}
    assert _published(brokers["kafka-1"])[19092] == 9092, "the first broker is where host clients bootstrap"
    ui = services["kafka-ui"]["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"]
    assert sorted(s.split(":")[0] for s in ui.split(",")) == sorted(brokers)


def test_infra_redis_persists_and_monitoring_is_wired() -> None:
    services = _project(INFRA_FILE)["services"]
    redis = services["redis"]
    assert "--appendonly yes" in " ".join(redis["command"])
    assert any(str(v).endswith(":/data") for v in redis["volumes"])

    prometheus = services["prometheus"]
    assert _published(prometheus) == {9090: MONITORING["prometheus"]["host_port"]}
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]

    grafana = services["grafana"]
    assert _published(grafana) == {3000: MONITORING["grafana"]["host_port"]}
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in grafana["volumes"]}
    provider = _load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "riskwatch.yml")["providers"][0]
    dashboards_dir = provider["options"]["path"]
    assert (DEPLOY / mounts[dashboards_dir]).resolve() == (DEPLOY / "grafana" / "dashboards").resolve()
    assert (DEPLOY / mounts["/etc/grafana/provisioning"]).resolve() == (DEPLOY / "grafana" / "provisioning").resolve()
    datasource = _load(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"


def test_dockerfile_installs_every_workspace_member() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    members = sorted(p.parent.relative_to(REPO).as_posix() for p in (REPO / "services").glob("*/pyproject.toml"))
    for member in ["libs", *members]:
        assert f"COPY {member}/pyproject.toml {member}/" in text, f"Dockerfile does not copy {member}/pyproject.toml"
    assert "uv sync --frozen --all-packages --no-dev" in text
    assert "grpc_tools.protoc" in text, "the image must generate the protobuf code (it is not committed)"
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", ".env", ".git"} <= set(ignore), "secrets and local environments must stay out of the image"


def test_docker_compose_accepts_the_files_when_available() -> None:
    docker = shutil.which("docker")
    has_compose = docker is not None and (
        subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0
    )
    if not has_compose:
        pytest.skip("docker compose is not installed; the structural tests above still ran")
    assert docker is not None
    for path in (INFRA_FILE, SERVICES_FILE):
        result = subprocess.run(
            [docker, "compose", "-f", str(path), "config", "--quiet"], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{path.name}: {result.stderr}"


@pytest.mark.parametrize("path", [SERVICES_FILE, INFRA_FILE], ids=lambda p: p.name)
def test_every_published_port_is_bound_to_loopback(path: Path) -> None:
    for name, service in _project(path)["services"].items():
        for entry, address in zip(service.get("ports", []), _bind_addresses(service), strict=True):
            assert address == "127.0.0.1", f"{name}: {entry!r} is published beyond this host"


def test_secrets_are_required_from_the_environment_and_none_is_committed() -> None:
    services = PROJECT["services"]
    lines = [
        *SERVICES_FILE.read_text(encoding="utf-8").splitlines(),
        *INFRA_FILE.read_text(encoding="utf-8").splitlines(),
    ]
    texts = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    assert set(REQUIRED_VARIABLE.findall(texts)) == SECRETS
    # Any other ${...} (e.g. ${X:-default}) would start with a default: only required ones are used.
    assert len(re.findall(r"\$\{", texts)) == len(REQUIRED_VARIABLE.findall(texts))

    redis = services["redis"]
    command = " ".join(redis["command"])
    assert '--requirepass "$$REDIS_PASSWORD"' in command
    required = REQUIRED_VARIABLE.fullmatch(redis["environment"]["REDIS_PASSWORD"])
    assert required is not None and required.group(1) == "REDIS_PASSWORD"
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"]), "the healthcheck must authenticate"

    for name, service in SERVICES.items():
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        if "ALGO_REDIS__URL" in env:
            assert env["ALGO_REDIS__URL"].startswith("redis://:${REDIS_PASSWORD:?"), f"{name}: Redis without password"

    gateway = SERVICES["gateway"]["environment"]
    assert gateway["ALGO_GATEWAY__HTTP_HOST"] == "0.0.0.0"
    assert gateway["ALGO_GATEWAY__AUTH_TOKEN"].startswith("${RISKWATCH_GATEWAY_TOKEN:?"), "gateway without token"

    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_env_example_names_every_secret_with_no_value() -> None:
    entries = [line for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines() if line and line[0] != "#"]
    assert {line.partition("=")[0] for line in entries} == SECRETS
    assert all(line.endswith("=") for line in entries), "no secret value may be committed"
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert "**/.env" in ignore, "deploy/.env must stay out of the image"


def test_metrics_listen_inside_containers_and_prometheus_scrapes_them_by_name() -> None:
    names = {"gateway": "gateway", "detector": "detector", "task_generator": "task-generator"}
    names |= {"llm_scheduler": "llm-scheduler", "aggregator": "aggregator"}
    scrape = _load(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]
    targets = {t for job in scrape for static in job["static_configs"] for t in static["targets"]}
    for key, port in MONITORING["metrics_ports"].items():
        env = SERVICES[names[key]]["environment"]
        assert env["ALGO_METRICS_HOST"] == "0.0.0.0", f"{key}: Prometheus cannot reach a loopback metrics port"
        assert f"{names[key]}:{port}" in targets, f"prometheus.yml does not scrape {names[key]}:{port}"
    assert not [t for t in targets if t.startswith("host.docker.internal")]
