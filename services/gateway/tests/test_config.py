"""Gateway settings from config/*.yaml: the shipped defaults load, a bad file names file, field and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from riskwatch.config import load_settings
from riskwatch.errors import ConfigError
from riskwatch_gateway.config import GatewaySettings, SourceKind, SourceRefused, source_kind

REPO_CONFIG = Path(__file__).resolve().parents[3] / "config"


def test_shipped_configuration_loads() -> None:
    settings = load_settings(GatewaySettings, REPO_CONFIG)
    assert [c.id for c in settings.camera_list] == ["cam-01"]
    camera = settings.camera_list[0]
    assert (camera.source, camera.fps, camera.loop) == ("var/data/vtest.avi", 2.0, True)
    assert (settings.gateway.grpc_port, settings.gateway.http_port) == (50051, 8000)
    assert settings.gateway.auth_token is None


def test_bad_camera_file_names_file_field_and_reason(tmp_path: Path) -> None:
    (tmp_path / "cameras.yaml").write_text("cameras:\n  - id: cam-01\n    source: push\n    fps: 0\n")
    with pytest.raises(ConfigError) as error:
        load_settings(GatewaySettings, tmp_path)
    message = str(error.value)
    assert "cameras.yaml" in message and "cameras[0].fps" in message and "greater than 0" in message


def test_duplicate_camera_ids_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "cameras.yaml").write_text("cameras:\n  - {id: a, source: push}\n  - {id: a, source: push}\n")
    with pytest.raises(ConfigError, match="more than once"):
        load_settings(GatewaySettings, tmp_path)


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "gateway.yaml").write_text("http_port: 9000\n")
    monkeypatch.setenv("ALGO_GATEWAY__AUTH_TOKEN", "from-env")
    settings = load_settings(GatewaySettings, tmp_path)
    assert settings.gateway.http_port == 9000
    assert settings.gateway.auth_token is not None
    assert settings.gateway.auth_token.get_secret_value() == "from-env"
    assert "from-env" not in repr(settings)


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("push", SourceKind.PUSH),
        ("device:0", SourceKind.DEVICE),
        ("rtsp://h/s", SourceKind.URL),
        ("http://h/mjpg", SourceKind.URL),
        ("var/data/vtest.avi", SourceKind.FILE),
    ],
)
def test_source_kinds(source: str, kind: SourceKind) -> None:
    assert source_kind(source) is kind


def test_shipped_sources_settings_admit_the_sample_video_and_nothing_outside() -> None:
    settings = load_settings(GatewaySettings, REPO_CONFIG)
    sources = settings.gateway.sources
    assert (sources.allow_devices, sources.allowed_hosts, sources.max_cameras) == (False, [], 64)
    assert sources.allowed_source("var/data/vtest.avi") == str(Path("var/data/vtest.avi").resolve())
    with pytest.raises(SourceRefused, match="outside the media roots"):
        sources.allowed_source("var/data/../../etc/hosts.avi")


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ("/etc/passwd", "outside the media roots"),
        ("var/data/notes.txt", "file type"),
        ("device:0", "devices are disabled"),
        ("tcp://0.0.0.0:9000?listen=1", "scheme"),
    ],
)
def test_a_camera_file_naming_a_refused_source_fails_with_the_camera_and_rule(
    tmp_path: Path, source: str, rule: str
) -> None:
    (tmp_path / "cameras.yaml").write_text(f"cameras:\n  - {{id: cam-bad, source: '{source}'}}\n")
    with pytest.raises(ConfigError, match=f"cam-bad.*source not allowed: {rule}"):
        load_settings(GatewaySettings, tmp_path)
