"""CLI argument errors: a one-line reason and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from relman.cli import app
from relman.client import load_plan
from relman.config import load_settings
from relman.contracts import AcceptanceCriteria, Component, Delegation, Gate, ReleasePlan, RolloutStage
from relman.errors import RelmanError
from relman.identity.keys import ensure_keys, verify_signature

ROOT = Path(__file__).resolve().parents[2]
GOOD = ROOT / "examples" / "releases" / "greeter-1.1.0.yaml"
RID = "release-greeter-1.1.0"
OFFLINE = "error: cannot reach Temporal at 127.0.0.1:1"

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


def test_a_manifest_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("service: greeter\nversion: 1.1.0\nrequested_by: pat\ntitle: café\n".encode("latin-1"))
    code, out = invoke("start", str(latin1))
    assert code == 1
    assert error_line(out) == (
        f"error: manifest {latin1} is not UTF-8 text (byte 0xe9 on line 4); save it as UTF-8"
    )


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
        (
            GOOD.read_text().replace("version: 1.1.0", "version: latest"),
            "version: must be a semantic version",
        ),
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
    assert error_line(out) == (
        "error: by: must be lower-case letters, digits, '.', '_' or '-', 2-64 characters"
    )
    code, out = invoke("abort", "release-greeter-1.1.0", "--as", "alice", "--reason", "   ")
    assert code == 1 and error_line(out).startswith("error: reason: ")


def test_override_window_checks_window_and_step_before_connecting() -> None:
    args = ["override-window", RID, "--as", "carol", "--reason", "security fix"]
    code, out = invoke(*args, "--step", "Go Live")
    assert code == 1 and error_line(out).startswith("error: step: must be lower-case letters")
    code, out = invoke(*args, "--window", "w" * 201)
    assert code == 1 and error_line(out).startswith("error: window: String should have at most 200")
    code, out = invoke(*args, "--window", "q4-freeze", "--step", "go-live")
    assert code == 1 and error_line(out).startswith(OFFLINE)


def test_vote_text_is_checked_before_connecting() -> None:
    code, out = invoke("approve", RID, "--as", "bob", "--comment", "ok\napprove oli: LGTM")
    assert code == 1
    assert error_line(out) == (
        "error: comment: must not contain control characters or escape sequences (found '\\n')"
    )
    code, out = invoke("reject", RID, "--as", "bob", "--reason", "   ")
    assert code == 1 and error_line(out).startswith("error: reason: String should have at least 1 character")
    code, out = invoke("approve", RID, "--as", "Bob")
    assert code == 1 and error_line(out).startswith("error: approver: must be lower-case letters")


def test_on_behalf_of_needs_a_delegation() -> None:
    code, out = invoke("approve", RID, "--as", "dave", "--on-behalf-of", "carol")
    assert code == 1
    assert (
        error_line(out)
        == "error: --on-behalf-of needs --delegation FILE, the delegation carol signed for you"
    )


def _delegation(delegator: str = "carol", delegate: str = "dave") -> str:
    return Delegation(
        delegator=delegator,
        delegate=delegate,
        services=["greeter"],
        gates=[Gate.PLAN],
        not_after=datetime(2099, 1, 1, tzinfo=UTC),
    ).model_dump_json()


@pytest.mark.parametrize(
    ("content", "extra", "reason"),
    [
        (None, [], "error: delegation {path} not found"),
        ("{not json", [], "error: delegation {path} is not valid JSON: "),
        ("{}", [], "error: delegation {path}: delegator: Field required"),
        (_delegation(delegate="erin"), [], "error: the delegation in {path} lets erin vote, not dave"),
        (_delegation(), ["--on-behalf-of", "bob"], "error: the delegation in {path} is from carol, not bob"),
        (_delegation(), ["--on-behalf-of", "carol"], OFFLINE),
        (_delegation(), [], OFFLINE),
    ],
)
def test_delegation_file_is_checked_before_connecting(
    tmp_path: Path, content: str | None, extra: list[str], reason: str
) -> None:
    path = tmp_path / "delegation.json"
    if content is not None:
        path.write_text(content)
    code, out = invoke("approve", RID, "--as", "dave", "--delegation", str(path), *extra)
    assert code == 1
    assert error_line(out).startswith(reason.format(path=path))


DELEGATE = ["delegate", "--as", "carol", "--to", "dave", "--service", "greeter", "--gate", "plan"]


def test_delegate_arguments(tmp_path: Path) -> None:
    out_file = str(tmp_path / "d.json")
    code, out = invoke(*DELEGATE, "-o", out_file)
    assert code == 2 and "Missing option '--until'" in out
    code, out = invoke(*DELEGATE[:5], "--gate", "plan", "--until", "2099-01-01", "-o", out_file)
    assert code == 2 and "Missing option '--service'" in out
    code, out = invoke(*DELEGATE, "--gate", "lunch", "--until", "2099-01-01", "-o", out_file)
    assert code == 2 and "--gate" in out
    code, out = invoke(*DELEGATE, "--until", "soon", "-o", out_file)
    assert code == 2 and "--until" in out
    code, out = invoke(*DELEGATE, "--until", "2020-01-01", "-o", out_file)
    assert code == 1 and error_line(out) == (
        "error: --until 2020-01-01 00:00:00Z has passed; a delegation must end in the future"
    )
    code, out = invoke(*DELEGATE[:3], "--to", "carol", *DELEGATE[5:], "--until", "2099-01-01", "-o", out_file)
    assert code == 1 and error_line(out) == "error: a delegation names two different people"
    code, out = invoke(*DELEGATE, "--service", "Greeter", "--until", "2099-01-01", "-o", out_file)
    assert code == 1 and error_line(out).startswith("error: services.1: must be lower-case letters")
    code, out = invoke(*DELEGATE, "--until", "2099-01-01", "-o", out_file)
    assert code == 1 and error_line(out).startswith("error: no key for carol at ")
    assert not Path(out_file).exists()


def test_delegate_writes_a_delegation_signed_by_the_delegator(tmp_path: Path) -> None:
    carol = ensure_keys(load_settings().keys_dir, ["carol"])["carol"]
    path = tmp_path / "d.json"
    code, out = invoke(
        *DELEGATE,
        "--service",
        "greeter",
        "--gate",
        "marginal",
        "--until",
        "2099-01-01T12:00",
        "-o",
        str(path),
    )
    assert code == 0, out
    assert out.strip() == (
        f"wrote {path}: dave may vote for carol on greeter at the plan, marginal gate(s) "
        f"until 2099-01-01 12:00:00Z (signed with key {carol.key_id})"
    )
    d = Delegation.model_validate_json(path.read_text())
    assert (d.delegator, d.delegate, d.services, d.gates) == (
        "carol",
        "dave",
        ["greeter"],
        [Gate.PLAN, Gate.MARGINAL],
    )
    assert d.not_after == datetime(2099, 1, 1, 12, tzinfo=UTC)
    assert d.proof is not None and d.proof.key_id == carol.key_id
    statement = d.statement("*", d.proof.issued_at, d.proof.nonce)
    assert verify_signature(carol.public, d.proof.signature, statement.canonical())


def test_amend_plan_arguments(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("stages: [{name: canary, percent: 5, bake_seconds: 30}]\n")
    code, out = invoke("amend-plan", RID, str(plan), "--as", "bob")
    assert code == 2 and "Missing option '--reason'" in out
    code, out = invoke("amend-plan", RID, "--as", "bob", "--reason", "smaller canary")
    assert code == 2 and "Missing argument 'plan_file'" in out
    code, out = invoke("amend-plan", RID, str(plan), "--as", "Bob", "--reason", "smaller canary")
    assert code == 1 and error_line(out).startswith("error: by: must be lower-case letters")
    code, out = invoke("amend-plan", RID, str(plan), "--as", "bob", "--reason", "red\x1b[31m")
    assert code == 1 and error_line(out).startswith("error: reason: must not contain control characters")
    code, out = invoke("amend-plan", RID, str(plan), "--as", "bob", "--reason", "smaller canary")
    assert code == 1 and error_line(out).startswith(OFFLINE)


CURRENT = ReleasePlan(
    components=[Component(name="greeter", version="1.1.0")],
    stages=[
        RolloutStage(name="canary", percent=1, bake_seconds=60),
        RolloutStage(name="all", percent=100, bake_seconds=0),
    ],
    acceptance=AcceptanceCriteria(min_pass_rate=0.99, max_error_rate=0.01, max_latency_ms=300),
    backout_plan="Switch back.",
    revision=3,
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("stages: [\n", "is not valid YAML at line 2: "),
        ("- a list\n", "must be a mapping of plan fields"),
        ("stages: []\n", "stages: List should have at least 1 item"),
        (
            "stages: [{name: canary, percent: 150, bake_seconds: 0}]\n",
            "stages.0.percent: Input should be less",
        ),
        ("acceptance: {max_error_rate: lots}\n", "acceptance.max_error_rate: Input should be a valid number"),
        ("bake: 0\n", "bake: Extra inputs are not permitted"),
        ('backout_plan: "undo\\x1b[31m"\n', "backout_plan: must not contain control characters"),
    ],
)
def test_load_plan_names_the_problem(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(RelmanError) as exc:
        load_plan(path, CURRENT)
    assert str(exc.value).startswith(f"plan {path}") and reason in str(exc.value)


def test_load_plan_keeps_what_the_file_leaves_out(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        "plan:\n"
        "  stages: [{name: canary, percent: 5, bake_seconds: 30}]\n"
        "  acceptance: {max_error_rate: 0.005}\n"
        "  revision: 9\n"
    )
    plan = load_plan(path, CURRENT)
    assert [(s.name, s.percent, s.bake_seconds) for s in plan.stages] == [("canary", 5, 30)]
    assert plan.acceptance == AcceptanceCriteria(min_pass_rate=0.99, max_error_rate=0.005, max_latency_ms=300)
    assert (plan.components, plan.backout_plan, plan.revision) == (CURRENT.components, "Switch back.", 3)
    with pytest.raises(RelmanError, match=r"^plan /nonexistent/plan\.yaml not found$"):
        load_plan(Path("/nonexistent/plan.yaml"), CURRENT)


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
