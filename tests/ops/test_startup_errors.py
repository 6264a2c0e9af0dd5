"""A second start while the ports are taken ends in one line naming the port and the setting that moves it
(exit 2), for every listener: the embedded simulator, the gateway's HTTP and gRPC, metrics, the detector, llmsim."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.entry import run_entry
from tests.support.stack import free_port


@pytest.fixture
def squatter() -> Iterator[int]:
    """A port some other process already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


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
    _assert_one_line(run_entry("riskwatch_embedded", **env), squatter, setting)


def test_llmsim_names_the_busy_port_and_its_flag(squatter: int) -> None:
    _assert_one_line(run_entry("riskwatch_llmsim", "--port", str(squatter)), squatter, "--port")


def test_the_detector_names_the_busy_port_and_the_setting_that_moves_it(squatter: int) -> None:
    _assert_one_line(run_entry("riskwatch_detector", ALGO_GRPC_PORT=str(squatter)), squatter, "ALGO_GRPC_PORT")
