"""A second start while the ports are taken ends in one line naming the port and the setting that moves it (exit
2), for every listener: the embedded simulator, the gateway's HTTP and gRPC servers, metrics, and llmsim."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def squatter() -> Iterator[int]:
    """A port some other process already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _run(module: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("ALGO_", "RW_LLM_BASE_URL"))}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _embedded_ports() -> dict[str, str]:
    """Every listener of embedded mode on a free port, so only the one under test collides."""
    return {
        "RW_LLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "ALGO_GATEWAY__HTTP_PORT": str(free_port()),
        "ALGO_GATEWAY__GRPC_PORT": str(free_port()),
        "ALGO_METRICS_PORT": str(free_port()),
    }


def _assert_one_line(result: subprocess.CompletedProcess[str], port: int, setting: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    # The last line says it all (grpc's own C core may log its bind failure before it).
    last = result.stderr.strip().splitlines()[-1]
    assert f"cannot listen on 127.0.0.1:{port}" in last and setting in last, result.stderr[-3000:]


@pytest.mark.parametrize(
    "setting",
    ["RW_LLM_BASE_URL", "ALGO_GATEWAY__HTTP_PORT", "ALGO_GATEWAY__GRPC_PORT", "ALGO_METRICS_PORT"],
    ids=["simulator", "http", "grpc", "metrics"],
)
def test_embedded_mode_names_the_busy_port_and_the_setting_that_moves_it(squatter: int, setting: str) -> None:
    env = _embedded_ports()
    env[setting] = f"http://127.0.0.1:{squatter}/v1" if setting == "RW_LLM_BASE_URL" else str(squatter)
    _assert_one_line(_run("riskwatch_embedded", **env), squatter, setting)


def test_llmsim_names_the_busy_port_and_its_flag(squatter: int) -> None:
    _assert_one_line(_run("riskwatch_llmsim", "--port", str(squatter)), squatter, "--port")
