"""The command line builds the configuration from flags and serves until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from riskwatch_llmsim.__main__ import main
from riskwatch_llmsim.config import SimulatorConfig, add_arguments, settings_from_args


def config_from_flags(argv: list[str]) -> SimulatorConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(parser.parse_args(argv)).simulator


def test_flags_become_configuration() -> None:
    config = config_from_flags(
        [
            "--keys", "key-001=sim-key-001,key-002=sim-key-002",
            "--qps", "5", "--rpm", "0", "--seed", "4", "--fault-5xx", "0.1",
            "--revoked", "key-002", "--latency-median", "0.2", "--invalid-json-modes", "prose,fenced",
        ]
    )  # fmt: skip
    assert sorted(config.keys) == ["key-001", "key-002"]
    assert config.keys["key-001"].get_secret_value() == "sim-key-001"
    assert (config.qps, config.rpm, config.seed, config.fault_5xx) == (5, None, 4, 0.1)
    assert config.policy_for("key-002").revoked
    assert config.latency_median_s == 0.2
    assert [mode.value for mode in config.invalid_json_modes] == ["prose", "fenced"]


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "llmsim.yaml"
    path.write_text("keys: {key-001: sim-key-001}\nqps: 3\nfault_5xx: 0.2\nper_key: {key-001: {rpm: 30}}\n")
    config = config_from_flags(["--config", str(path), "--fault-5xx", "0.05"])
    assert (config.qps, config.fault_5xx) == (3, 0.05)
    assert config.policy_for("key-001").rpm == 30


def test_invalid_flags_exit_2_without_echoing_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--keys", "key-001=tok-SECRET,key-002=tok-SECRET"]) == 2
    assert main(["--fault-5xx", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "tok-SECRET" not in err
    assert "fault_5xx" in err


async def test_serves_until_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "riskwatch_llmsim", "--port", "0", "--latency-median", "0",
        "--keys", "key-001=sim-key-001",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        line = (await asyncio.wait_for(process.stderr.readline(), timeout=10)).decode()
        match = re.search(r"listening on (http://\S+)/v1", line)
        assert match, line
        async with aiohttp.ClientSession() as session, session.get(match.group(1) + "/healthz") as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_validate_config_checks_the_file_and_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "llmsim.yaml"
    path.write_text("keys: {key-001: tok-SECRET}\nqps: 0\n")
    assert main(["--config", str(path), "--validate-config"]) == 2
    err = capsys.readouterr().err
    assert f"{path} or its flags: qps: Input should be greater than 0" in err
    assert "tok-SECRET" not in err
    path.write_text("keys: {key-001: tok-SECRET}\nqps: 3\n")
    assert main(["--config", str(path), "--validate-config"]) == 0
    assert f"configuration OK ({path})" in capsys.readouterr().out


def test_unreadable_config_file_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "llmsim.yaml"
    path.write_text("keys: {key-001: tok-SECRET\n")
    assert main(["--config", str(path)]) == 2
    assert main(["--config", str(tmp_path / "absent.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{path} line 2: not valid YAML" in err
    assert "absent.yaml: cannot be read" in err
    assert "tok-SECRET" not in err
