"""CLI argument errors: a one-line reason and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from relman.starter import app

ROOT = Path(__file__).resolve().parents[2]
GOOD = ROOT / "examples" / "releases" / "greeter-1.1.0.yaml"

runner = CliRunner()


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Nothing listens here: a command that got past argument checks fails fast and says so.
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("RELMAN_DATA_DIR", str(tmp_path / "data"))


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.lower().startswith("error")]
    assert len(lines) == 1, output
    return lines[0]


def test_manifest_not_found() -> None:
    code, out = invoke("start", "/nonexistent/release.yaml")
    assert code == 1
    assert error_line(out) == "error: manifest /nonexistent/release.yaml not found"


def test_malformed_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("service: greeter\nversion: [1.0\n")
    code, out = invoke("start", str(bad))
    assert code == 1
    assert "is not valid YAML at line" in error_line(out)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("- just\n- a list\n", "must be a mapping"),
        ("service: greeter\n", "version: Field required"),
        (GOOD.read_text().replace("version: 1.1.0", "version: latest"), "version: String should match"),
        (GOOD.read_text() + "commands: [rm, -rf, /]\n", "commands: Extra inputs are not permitted"),
    ],
)
def test_invalid_manifest_names_the_field(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    code, out = invoke("start", str(path))
    assert code == 1
    assert reason in error_line(out)


@pytest.mark.parametrize("rating", ["0", "6", "five"])
def test_rating_out_of_range(rating: str) -> None:
    code, out = invoke("feedback", "release-greeter-1.1.0", "--as", "alice", "--rating", rating)
    assert code == 2
    assert "--rating" in out


@pytest.mark.parametrize("command", ["pause", "resume", "promote", "abort", "override-window"])
def test_operator_commands_need_a_reason(command: str) -> None:
    code, out = invoke(command, "release-greeter-1.1.0", "--as", "alice")
    assert code == 2
    assert "Missing option '--reason'" in out


def test_reject_needs_a_reason_and_approve_a_user() -> None:
    assert "Missing option '--reason'" in invoke("reject", "r-1", "--as", "bob")[1]
    assert "Missing option '--as'" in invoke("approve", "r-1")[1]
    code, out = invoke("approve", "r-1", "--as", "bob", "--gate", "lunch")
    assert code == 2 and "--gate" in out


def test_bad_user_name_is_refused_before_connecting() -> None:
    code, out = invoke("pause", "release-greeter-1.1.0", "--as", "Robert'); DROP", "--reason", "x")
    assert code == 1
    assert error_line(out).startswith("error: by: String should match pattern")
    code, out = invoke("abort", "release-greeter-1.1.0", "--as", "alice", "--reason", "   ")
    assert code == 1 and error_line(out).startswith("error: reason: ")


def test_unreachable_server_is_one_line() -> None:
    code, out = invoke("status", "release-greeter-1.1.0")
    assert code == 1
    assert error_line(out).startswith("error: cannot reach Temporal at 127.0.0.1:1")


def test_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELMAN_CMDB_URL", "nonsense")
    code, out = invoke("cmdb", "cis")
    assert code == 1
    assert error_line(out).startswith("error: RELMAN_CMDB_URL: ")


def test_window_add_checks_times() -> None:
    args = ["cmdb", "window", "add", "--kind", "blackout", "--reason", "x", "--as", "alice"]
    code, out = invoke(*args, "--start", "tomorrow", "--end", "2030-01-01")
    assert code == 2 and "--start" in out
    code, out = invoke(*args, "--start", "2030-01-02", "--end", "2030-01-01")
    assert code == 1 and "end must be after start" in error_line(out)


def _commands(group: TyperGroup, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, cmd in group.commands.items():
        if isinstance(cmd, TyperGroup):
            found += _commands(cmd, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


ALL_COMMANDS = _commands(typer.main.get_group(app))
READ_COMMANDS = [("status",), ("list",), ("metrics",), ("cmdb", "cis"), ("cmdb", "ci"), ("cmdb", "changes")]


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: " ".join(c) or "relman")
def test_help_on_every_command(command: tuple[str, ...]) -> None:
    code, out = invoke(*command, "--help")
    assert code == 0 and "Usage: relman" in out


@pytest.mark.parametrize("command", [*READ_COMMANDS, ("cmdb", "windows")], ids=" ".join)
def test_json_on_every_read_command(command: tuple[str, ...]) -> None:
    assert "--json" in invoke(*command, "--help")[1]


def test_console_script_exits_cleanly_with_a_code() -> None:
    """`python -m relman.starter` leaves through os._exit with the command's code."""
    env = {**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    done = subprocess.run(
        [sys.executable, "-m", "relman.starter", "start", "/nonexistent.yaml"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "error: manifest /nonexistent.yaml not found"
    done = subprocess.run(
        [sys.executable, "-m", "relman.starter", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "approve" in done.stdout


def test_worker_names_a_bad_catalog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import logging

    import structlog

    bad = tmp_path / "catalog.yaml"
    bad.write_text("services: {greeter: {bogus: 1}}\n")
    monkeypatch.setenv("RELMAN_CATALOG", str(bad))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code, out = invoke("worker")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
    assert code == 1
    assert error_line(out).startswith("error: RELMAN_CATALOG: catalog.yaml: services.greeter")
