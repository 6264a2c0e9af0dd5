"""scripts/verify_api_keys.py against the simulator: a table per key, never a secret, exit 1 below 3 working keys."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from riskwatch_llmsim import KeyPolicy, SimulatorConfig, start_simulator

REPO = Path(__file__).resolve().parents[3]
SECRETS = {f"key-{i}": f"sk-verify-secret-{i}-0123456789" for i in range(1, 5)}


def write_keys(path: Path, base_url: str) -> Path:
    lines = [f"default_base_url: {base_url}", "keys:"]
    lines += [f"  - {{id: {kid}, api_key: {secret}, qps_limit: 5, rpm_limit: 100}}" for kid, secret in SECRETS.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def run_verify(tmp_path: Path, revoked: set[str]) -> subprocess.CompletedProcess[str]:
    config = SimulatorConfig(
        keys={kid: SecretStr(s) for kid, s in SECRETS.items()},
        latency_median_s=0.05,
        per_key={kid: KeyPolicy(revoked=True) for kid in revoked},
    )
    async with await start_simulator(config) as sim:
        keys_file = write_keys(tmp_path / "api_keys.yaml", sim.base_url)
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "scripts/verify_api_keys.py", "--file", str(keys_file)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )


async def test_every_key_is_listed_with_its_result_and_no_secret(tmp_path: Path) -> None:
    done = await run_verify(tmp_path, revoked={"key-2"})
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("key-")}
    assert set(lines) == set(SECRETS)
    assert " error " in lines["key-2"] and "HTTP 401" in lines["key-2"]
    assert all(" ok " in lines[k] for k in ("key-1", "key-3", "key-4"))
    assert "3 of 4 keys work" in done.stdout
    assert not any(secret in done.stdout + done.stderr for secret in SECRETS.values())


async def test_fewer_than_three_working_keys_fails(tmp_path: Path) -> None:
    done = await run_verify(tmp_path, revoked={"key-1", "key-2"})
    assert done.returncode == 1
    assert "2 of 4 keys work (need at least 3)" in done.stdout
