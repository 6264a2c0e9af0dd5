"""scripts/start_streaming_services.sh and stop_streaming_services.sh, as an operator runs them."""

from __future__ import annotations

import importlib
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.ops.support import (
    ALL,
    PORTS,
    REPO,
    START,
    STOP,
    ScriptStack,
    alive,
    base_env,
    children,
    free_offset,
    gone,
    metrics,
    pids,
    port_free,
    run,
)

# --- without Kafka: argument handling, idempotent stop, safety -------------------------------------


@pytest.mark.parametrize("script", [START, STOP], ids=["start", "stop"])
def test_help_and_bad_arguments(script: Path, tmp_path: Path) -> None:
    env = base_env(tmp_path)
    shown = run(script, "--help", env=env)
    assert shown.returncode == 0
    assert "logs/streaming" in shown.stdout and "--all" in shown.stdout
    assert run(script, "--bogus", env=env).returncode == 2
    unknown = run(script, "no-such-service", env=env)
    assert unknown.returncode == 2 and "unknown service" in unknown.stderr


def test_stop_with_nothing_running_succeeds(tmp_path: Path) -> None:
    result = run(STOP, "--all", env=base_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("not running") == len(ALL)


def test_stop_removes_a_stale_pid_file_and_never_signals_an_unrelated_process(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "aggregator.pid").write_text(f"{dead.pid}\n")
    # A pid file pointing at a live process that is not the service (a pid reused after a reboot).
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "scheduler.pid").write_text(f"{bystander.pid}\n")
        result = run(STOP, env=base_env(tmp_path))
        assert result.returncode == 0, result.stderr
        assert not (tmp_path / "aggregator.pid").exists()
        assert not (tmp_path / "scheduler.pid").exists()
        assert "stale" in result.stdout
        assert bystander.poll() is None, "the stop script signalled a process that is not a riskwatch service"
    finally:
        bystander.kill()
        bystander.wait()


def test_start_refuses_a_port_another_program_holds(tmp_path: Path) -> None:
    offset = free_offset()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 9103 + offset))
        squatter.listen()
        result = run(START, "task_generator", env=base_env(tmp_path, offset))
    assert result.returncode == 1
    assert f"{9103 + offset}" in result.stderr and "already in use" in result.stderr
    assert not (tmp_path / "task_generator.pid").exists()


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run([shellcheck, str(START), str(STOP)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


WINDOWS_SCRIPTS = ("start_streaming_services", "stop_streaming_services")


def syntax_errors(source: str, grammar: str) -> list[str]:
    """Where tree-sitter's PowerShell or Batch grammar cannot parse `source` (error or missing nodes)."""
    from tree_sitter import Language, Node, Parser  # noqa: PLC0415

    module = {"powershell": "tree_sitter_powershell", "batch": "tree_sitter_batch"}[grammar]
    parser = Parser(Language(importlib.import_module(module).language()))
    found: list[str] = []

    def visit(node: Node) -> None:
        if node.type == "ERROR" or node.is_missing:
            line, column = node.start_point
            found.append(f"line {line + 1}, column {column + 1}: {node.type} {node.text!r:.60}")
        elif node.has_error:
            for child in node.children:
                visit(child)

    visit(parser.parse(source.encode()).root_node)
    return found


def test_the_syntax_check_sees_a_broken_script() -> None:
    assert syntax_errors("function Start-It {\n  if ($x) { Write-Host 'x' }\n", "powershell")
    assert syntax_errors("$Catalog = @{ a = @(1, 2 }", "powershell")
    assert not syntax_errors("$Catalog = @{ a = @(1, 2) }\n", "powershell")


@pytest.mark.parametrize("name", WINDOWS_SCRIPTS)
def test_windows_scripts_parse(name: str) -> None:
    bat = (REPO / "scripts" / f"{name}.bat").read_text(encoding="utf-8")
    assert f"{name}.ps1" in bat and "%*" in bat, f"{name}.bat should run {name}.ps1 with its arguments"
    assert syntax_errors(bat, "batch") == []
    ps1 = REPO / "scripts" / f"{name}.ps1"
    assert syntax_errors(ps1.read_text(encoding="utf-8"), "powershell") == []
    pwsh = shutil.which("pwsh")
    if pwsh is not None:  # PowerShell's own parser too, where it is installed
        check = (
            "$e=$null; [System.Management.Automation.Language.Parser]::ParseFile("
            f"'{ps1}', [ref]$null, [ref]$e) | Out-Null; if ($e) {{ $e | ForEach-Object {{ $_.ToString() }}; exit 1 }}"
        )
        result = subprocess.run([pwsh, "-NoProfile", "-Command", check], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_windows_scripts_know_the_same_services_commands_and_ports_as_the_shell_scripts() -> None:
    start = (REPO / "scripts" / "start_streaming_services.ps1").read_text(encoding="utf-8")
    catalog = {
        name: (args, [int(p) for p in ports.split(",")])
        for name, args, ports in re.findall(
            r"^\s*(\w+)\s*=\s*@\{ Args = @\(([^)]*)\);.*Ports = @\(([\d, ]+)\) \}", start, re.MULTILINE
        )
    }
    assert sorted(catalog) == sorted(ALL)
    assert {name: ports for name, (_, ports) in catalog.items()} == PORTS
    shell = START.read_text(encoding="utf-8")
    for name, (args, _) in catalog.items():
        words = [w.strip(" '") for w in args.split(",")]
        module_args = " ".join(w for w in words if not w.isdigit() and w != "--port")
        assert re.search(rf"^\s*{name}\) echo \"{re.escape(module_args)}", shell, re.MULTILINE), (name, module_args)
    stop = (REPO / "scripts" / "stop_streaming_services.ps1").read_text(encoding="utf-8")
    (order,) = re.findall(r"^\$Order = @\(([^)]*)\)", stop, re.MULTILINE)
    assert sorted(w.strip(" '") for w in order.split(",")) == sorted(ALL)


# --- against the real Kafka and Redis ------------------------------------------------------------


@pytest.mark.infra
def test_start_is_idempotent_and_stop_is_graceful(script_stack: ScriptStack) -> None:
    stack, log_dir = script_stack, script_stack.log_dir

    # 1. Everything runs, with a pid file, a log and its ports each.
    started = stack.start("--all")
    assert started.returncode == 0, started.stdout + started.stderr + stack.logs()
    running = pids(log_dir)
    assert sorted(running) == sorted(ALL), started.stdout
    for name, pid in running.items():
        assert alive(pid), f"{name} died"
        assert (log_dir / f"{name}.log").stat().st_size > 0
        for index in range(len(PORTS[name])):
            assert not port_free(stack.port(name, index)), f"{name} does not listen on {stack.port(name, index)}"
        if name != "llmsim":
            assert "# HELP" in metrics(stack.port(name)), f"{name} serves no metrics"
    python = {name: children(pid) for name, pid in running.items()}  # the processes under `uv run`

    # 2. Starting again changes nothing.
    again = stack.start("--all")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already running") == len(ALL)
    assert pids(log_dir) == running

    # 3. A service that does not stop in time is killed, python process included; it can be started again.
    forced = stack.stop("llmsim", "--timeout", "0")
    assert forced.returncode == 0 and "SIGKILL" in forced.stderr, forced.stdout + forced.stderr
    assert gone([running["llmsim"], *python["llmsim"]]), "uv or its python process survived SIGKILL"
    assert not (log_dir / "llmsim.pid").exists()
    restarted = stack.start("llmsim")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    running["llmsim"] = pids(log_dir)["llmsim"]
    python["llmsim"] = children(running["llmsim"])

    # 4. A graceful stop: SIGTERM, every stage drains and commits, nothing is left behind.
    stopped = stack.stop("--all")
    assert stopped.returncode == 0, stopped.stderr
    assert "SIGKILL" not in stopped.stderr, stopped.stderr
    assert stopped.stdout.count("stopped") == len(ALL)
    assert not list(log_dir.glob("*.pid"))
    everything = [*running.values(), *(p for ps in python.values() for p in ps)]
    assert gone(everything), f"processes still running: {[p for p in everything if alive(p)]}"
    for stage in ("task_generator", "scheduler", "aggregator"):
        assert "offsets committed" in (log_dir / f"{stage}.log").read_text(), f"{stage} did not stop gracefully"

    # 5. Stopping again is harmless.
    twice = stack.stop("--all")
    assert twice.returncode == 0 and twice.stdout.count("not running") == len(ALL)
