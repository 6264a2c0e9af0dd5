"""Finding 5 (compose and metrics): metrics bind loopback unless told otherwise, and kafka.yaml cannot weaken the
delivery guarantees (acks, idempotence, manual commits). The compose files: tests/ops/test_compose_files.py."""

from __future__ import annotations

import asyncio
import logging
import shutil
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from riskwatch.bus.base import Consumer, Record
from riskwatch.bus.kafka import KafkaBus
from riskwatch.config import CommonSettings, load_settings
from riskwatch.config.kafka import CONSUMER_GUARANTEES, PRODUCER_GUARANTEES
from riskwatch.errors import ConfigError, PortInUse
from riskwatch.runtime import make_cache
from riskwatch.telemetry import metrics
from tests.support.stack import BOOTSTRAP, free_port

REPO = Path(__file__).resolve().parents[2]


def _config_dir(tmp_path: Path, kafka_yaml: str) -> Path:
    for path in (REPO / "config").glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "kafka.yaml").write_text(kafka_yaml, encoding="utf-8")
    return tmp_path


def test_metrics_bind_loopback_by_default_and_metrics_host_moves_them() -> None:
    assert load_settings(CommonSettings, REPO / "config").metrics_host == "127.0.0.1"
    port = free_port()
    metrics.serve(port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert b"riskwatch_stage_records_total" in response.read()
    with pytest.raises(PortInUse, match=f"127.0.0.1:{port}.*ALGO_METRICS_PORT"):
        metrics.serve(port)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("client_properties", "acks", "0"),
        ("client_properties", "enable.idempotence", "false"),
        ("consumer_properties", "enable.auto.commit", "true"),
        ("consumer_properties", "enable.auto.offset.store", "true"),
        ("consumer_properties", "isolation.level", "read_uncommitted"),
        ("client_properties", "Enable.Auto.Commit", "true"),
        ("consumer_properties", "group.id", "someone-else"),
    ],
)
def test_kafka_yaml_cannot_override_a_delivery_guarantee(tmp_path: Path, section: str, key: str, value: str) -> None:
    config = _config_dir(tmp_path, f'{section}:\n  {key}: "{value}"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(CommonSettings, config)
    message = str(caught.value)
    assert "kafka.yaml" in message and section in message and key in message, message


def test_kafka_yaml_may_still_tune_and_secure_the_clients(tmp_path: Path) -> None:
    config = _config_dir(
        tmp_path,
        'client_properties:\n  security.protocol: "SASL_SSL"\n  linger.ms: "20"\n'
        'consumer_properties:\n  session.timeout.ms: "10000"\n',
    )
    settings = load_settings(CommonSettings, config)
    assert settings.kafka.client_properties["security.protocol"] == "SASL_SSL"
    assert PRODUCER_GUARANTEES["acks"] == "all" and PRODUCER_GUARANTEES["enable.idempotence"] is True
    assert CONSUMER_GUARANTEES["enable.auto.commit"] is False


def test_a_redis_password_never_shows_in_settings_or_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ALGO_REDIS__URL", "redis://:s3cret-pw@redis:6379/0")
    monkeypatch.setenv("ALGO_ENABLE_KAFKA_STREAMING", "true")
    settings = load_settings(CommonSettings, REPO / "config")
    assert settings.redis.url.get_secret_value() == "redis://:s3cret-pw@redis:6379/0"
    assert settings.redis.display_url == "redis://:***@redis:6379/0"
    assert "s3cret-pw" not in repr(settings) and "s3cret-pw" not in settings.model_dump_json()
    with caplog.at_level(logging.INFO):
        make_cache(settings)
    assert "redis://:***@redis:6379/0" in caplog.text and "s3cret-pw" not in caplog.text


@pytest.mark.infra
async def test_the_bus_applies_the_guarantees_after_any_properties(topic_factory: Callable[..., str]) -> None:
    # Past kafka.yaml's check (e.g. a caller building the bus itself), auto-commit would still commit unhandled
    # records: the bus applies its own settings last, so they are redelivered.
    topic = topic_factory(partitions=1)
    group = f"g-{uuid.uuid4().hex}"
    weakening = {"enable.auto.commit": "true", "enable.auto.offset.store": "true", "auto.commit.interval.ms": "50"}
    bus = KafkaBus(BOOTSTRAP, {"acks": "0", "enable.idempotence": "false"}, weakening)
    try:
        for i in range(3):
            await bus.publish(topic, "cam", str(i).encode())
        first = bus.consumer(group, [topic])
        assert len(await _poll(first, 3)) == 3
        await asyncio.sleep(1.0)  # several auto-commit intervals, had auto-commit been on
        await first.close()
        second = bus.consumer(group, [topic])
        assert [int(r.value) for r in await _poll(second, 3)] == [0, 1, 2]
        await second.close()
    finally:
        await bus.close()


async def _poll(consumer: Consumer, count: int) -> list[Record]:
    got: list[Record] = []
    async with asyncio.timeout(30):
        while len(got) < count:
            got.extend(await consumer.poll(timeout_s=0.5))
    return got
