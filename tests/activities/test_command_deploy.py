"""Command environments (`type: command`): real subprocesses of a fake target, real files.

The target (`fake_target.py`) keeps the version that "runs" in a file and logs every call,
so each test sees which commands relman ran, with which arguments, and what it concluded.
The supervisor-backed target is exercised end to end in tests/workflows/test_release_supervisor.py.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from relman.activities import command_deploy
from relman.activities.command_deploy import CommandFailed, parse_current
from relman.activities.environment import EnvironmentActivities
from relman.catalog import Catalog, CatalogError
from relman.contracts import DeployResult, Environment, ErrorType, ReleasePackage, RollbackInput

from .greeter_support import build, custom_catalog, deploy

FAKE = Path(__file__).with_name("fake_target.py")
TOKEN = "s3cr3t-deploy-token"


def command_env(state: Path, base: str, **extra: Any) -> dict[str, Any]:
    def argv(kind: str, *args: str) -> list[str]:
        return ["{python}", str(FAKE), kind, str(state), *args]

    return {
        "type": "command",
        "base_dir": base,
        "deploy": argv("deploy", "{version}", "{previous_version}"),
        "rollback": argv("rollback", "{version}", "{previous_version}"),
        "current": argv("current"),
        "timeout": 20,
        **extra,
    }


def catalog_with(tmp_path: Path, **staging: Any) -> Catalog:
    return custom_catalog(
        tmp_path,
        secrets=["DEPLOY_TOKEN"],
        environments={
            "staging": command_env(tmp_path / "target", "{data_dir}/envs/greeter/staging", **staging),
            "production": {"base_dir": "{data_dir}/envs/greeter/production"},
        },
    )


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEPLOY_TOKEN", TOKEN)
    return tmp_path / "target"


@pytest.fixture
async def packages(tmp_path: Path, target: Path) -> tuple[Catalog, dict[str, ReleasePackage]]:
    catalog = catalog_with(tmp_path, undeploy=["{python}", str(FAKE), "undeploy", str(target), "{version}"])
    pkgs = {v: await build(catalog, tmp_path / "work", v) for v in ("1.1.0", "1.1.1", "1.1.2")}
    return catalog, pkgs


def calls(target: Path) -> list[str]:
    log = target / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def misbehave(target: Path, **behaviour: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    (target / "behaviour.json").write_text(json.dumps(behaviour))


def mirror(catalog: Catalog) -> str | None:
    link = catalog.service("greeter").env_dir(Environment.STAGING) / "current"
    return os.readlink(link) if link.is_symlink() else None


def running(target: Path) -> str | None:
    path = target / "running"
    return path.read_text().strip() if path.exists() else None


async def rollback(
    catalog: Catalog, version: str, release: str | None = None, deploy_step: str = "deploy"
) -> DeployResult:
    inp = RollbackInput(
        release_id=release or f"release-greeter-{version}",
        step=f"rollback-{deploy_step}",
        service="greeter",
        environment=Environment.STAGING,
        version=version,
        deploy_step=deploy_step,
    )
    result: DeployResult = await ActivityEnvironment().run(EnvironmentActivities(catalog).rollback, inp)
    return result


# --- the catalog ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "argv", "expected"),
    [
        ("current", ["{python}", "x.py", "{version}"], "unknown placeholder(s) ['version']"),
        ("deploy", ["{python}", "x.py", "{commit}"], "unknown placeholder(s) ['commit']"),
        ("rollback", ["{python}", "x.py", "{junit}"], "unknown placeholder(s) ['junit']"),
        ("deploy", ["{python}", "x.py", "{ver\nsion}"], "unknown placeholder(s)"),
        ("deploy", "helm upgrade --install greeter", "not a string"),
        ("deploy", ["{version}", "x"], "only {python} may be a placeholder"),
        ("current", ["no-such-program-here"], "not found on PATH"),
    ],
)
def test_bad_commands_are_refused_at_load(
    tmp_path: Path, target: Path, field: str, argv: Any, expected: str
) -> None:
    with pytest.raises(CatalogError) as err:
        catalog_with(tmp_path, **{field: argv})
    assert f"environments.staging.{field}" in str(err.value) and expected in str(err.value)


def test_the_kind_decides_which_commands_belong(tmp_path: Path, target: Path) -> None:
    with pytest.raises(CatalogError, match="type: command needs current"):
        catalog_with(tmp_path, current=None)
    with pytest.raises(CatalogError, match="deploy, rollback, current: only an environment of type: command"):
        catalog_with(tmp_path, type="directory")
    with pytest.raises(CatalogError, match="timeout"):
        catalog_with(tmp_path, timeout=3600)
    # Every placeholder of the documented set is accepted where it belongs.
    every = ["{python}", str(FAKE), "{version}", "{previous_version}", "{package_dir}", "{release_dir}"]
    deploy_argv = [*every, "{env_dir}", "{service}", "{environment}"]
    catalog = catalog_with(tmp_path, deploy=deploy_argv, rollback=every)
    assert catalog.service("greeter").environments[Environment.STAGING].type == "command"
    assert catalog.service("greeter").environments[Environment.PRODUCTION].type == "directory"


def test_parse_current() -> None:
    assert parse_current("1.2.3\n") == "1.2.3"
    assert parse_current("  \n") is None
    with pytest.raises(CommandFailed, match="2 lines"):
        parse_current("1.2.3\n1.2.4\n")
    with pytest.raises(CommandFailed, match="not a version"):
        parse_current("latest\n")


# --- deploys and rollbacks ------------------------------------------------------------------


async def test_deploy_runs_the_command_checks_current_and_mirrors(packages, target: Path) -> None:
    catalog, pkgs = packages
    first = await deploy(catalog, pkgs["1.1.0"])
    assert (first.version, first.previous_version, first.changed) == ("1.1.0", None, True)
    assert running(target) == "1.1.0" and mirror(catalog) == "1.1.0"
    # Staged for {release_dir}, as a directory environment's would be.
    base = catalog.service("greeter").env_dir(Environment.STAGING)
    assert (base / "1.1.0" / "VERSION").read_text().strip() == "1.1.0"
    assert calls(target) == ["current", "deploy 1.1.0", "current"]

    second = await deploy(catalog, pkgs["1.1.1"], step="deploy-2")
    assert (second.previous_version, running(target), mirror(catalog)) == ("1.1.0", "1.1.1", "1.1.1")
    assert calls(target)[3:] == ["current", "deploy 1.1.1 1.1.0", "current"]
    assert (base / ".relman" / "runs" / "switch.log").read_text() == "deploy done: 1.1.1\n"


async def test_current_printing_another_version_fails_naming_both(packages, target: Path) -> None:
    catalog, pkgs = packages
    await deploy(catalog, pkgs["1.1.0"])
    # The deploy "succeeds" but the target keeps running 1.1.0 as far as `current` says.
    misbehave(target, current_prints="1.1.0")
    with pytest.raises(ApplicationError) as err:
        await deploy(catalog, pkgs["1.1.1"], step="deploy-2")
    message = err.value.message
    assert "after deploying 1.1.1, current printed 1.1.0 instead of 1.1.1" in message
    assert err.value.type == ErrorType.DEPLOY_FAILED and err.value.non_retryable
    assert mirror(catalog) == "1.1.0"  # the mirror says what `current` says, never a hope
    misbehave(target, current_prints="not a version")
    with pytest.raises(ApplicationError, match="current command printed 'not a version', which is not a"):
        await deploy(catalog, pkgs["1.1.1"], step="deploy-3")


async def test_failing_command_is_one_line_with_the_secret_masked(packages, target: Path) -> None:
    catalog, pkgs = packages
    misbehave(target, fail="deploy")
    with pytest.raises(ApplicationError) as err:
        await deploy(catalog, pkgs["1.1.0"])
    message = err.value.message
    assert "\n" not in message and TOKEN not in message
    assert message == (
        "greeter/staging: deploy command failed (exit 3: error: deploy refused by the cluster (token ***))"
    )
    assert err.value.type == ErrorType.DEPLOY_FAILED and err.value.non_retryable
    details = err.value.details[0]
    assert TOKEN not in details["tail"] and "connecting with token ***" in details["tail"]
    assert TOKEN not in Path(details["log"]).read_text()
    assert mirror(catalog) is None and running(target) is None


async def test_a_timeout_names_the_limit(tmp_path: Path, target: Path) -> None:
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text("import time\ntime.sleep(30)\n")
    catalog = catalog_with(tmp_path, deploy=[sys.executable, str(sleeper)], timeout=0.5)
    package = await build(catalog, tmp_path / "work", "1.1.0")
    with pytest.raises(ApplicationError, match=r"deploy command failed \(timed out after 0.5s, no output\)"):
        await deploy(catalog, package)


async def test_retry_returns_the_record_and_a_killed_attempt_is_redone(
    packages, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog, pkgs = packages
    first = await deploy(catalog, pkgs["1.1.0"])
    assert await deploy(catalog, pkgs["1.1.0"]) == first  # the answer was lost: same result
    assert calls(target) == ["current", "deploy 1.1.0", "current", "current"]  # checked, not redone

    # A worker dies after the deploy command switched the target, before it was verified.
    real_verify = command_deploy.CommandTarget._verify

    async def killed(self: Any, expected: str | None, after: str) -> None:
        raise RuntimeError("worker killed")

    monkeypatch.setattr(command_deploy.CommandTarget, "_verify", killed)
    with pytest.raises(RuntimeError, match="worker killed"):
        await deploy(catalog, pkgs["1.1.1"], step="deploy-2")
    assert running(target) == "1.1.1" and mirror(catalog) == "1.1.0"
    monkeypatch.setattr(command_deploy.CommandTarget, "_verify", real_verify)
    retried = await deploy(catalog, pkgs["1.1.1"], step="deploy-2")
    # What it replaced is on record, the command ran again (idempotent), then was verified.
    assert (retried.previous_version, retried.changed) == ("1.1.0", True)
    assert calls(target)[-3:] == ["current", "deploy 1.1.1 1.1.0", "current"]
    assert mirror(catalog) == "1.1.1"
    result = await rollback(catalog, "1.1.1", deploy_step="deploy-2")
    assert result.version == "1.1.0" and running(target) == "1.1.0"


async def test_rollback_runs_the_command_with_the_named_version(packages, target: Path) -> None:
    catalog, pkgs = packages
    await deploy(catalog, pkgs["1.1.0"])
    await deploy(catalog, pkgs["1.1.1"])
    result = await rollback(catalog, "1.1.1")
    assert (result.version, result.previous_version, result.changed) == ("1.1.0", "1.1.1", True)
    assert calls(target)[-3:] == ["current", "rollback 1.1.0 1.1.1", "current"]
    assert running(target) == "1.1.0" and mirror(catalog) == "1.1.0"
    again = await rollback(catalog, "1.1.1")
    assert not again.changed and calls(target)[-1] == "current"  # nothing to undo twice
    # A rollback the target does not carry out fails, naming both.
    await deploy(catalog, pkgs["1.1.1"], step="deploy-b")
    misbehave(target, current_prints="1.1.1")
    with pytest.raises(
        ApplicationError, match=re.escape("after rolling back to 1.1.0, current printed 1.1.1 instead")
    ):
        await rollback(catalog, "1.1.1", deploy_step="deploy-b")


async def test_rollback_refuses_to_go_over_a_third_version(packages, target: Path) -> None:
    catalog, pkgs = packages
    await deploy(catalog, pkgs["1.1.0"])
    await deploy(catalog, pkgs["1.1.1"])
    await deploy(catalog, pkgs["1.1.2"])  # another release went on top
    before = calls(target)
    with pytest.raises(
        ApplicationError, match=re.escape("now serves 1.1.2, not 1.1.1; refusing to roll back over it")
    ):
        await rollback(catalog, "1.1.1")
    assert calls(target)[len(before) :] == ["current"] and running(target) == "1.1.2"
    # Another release's rollback of a version it never deployed touches nothing either.
    result = await rollback(catalog, "1.1.1", release="release-greeter-other")
    assert not result.changed and running(target) == "1.1.2"


async def test_downgrade_refused_before_any_command(packages, target: Path) -> None:
    catalog, pkgs = packages
    await deploy(catalog, pkgs["1.1.1"])
    refusal = "refusing to downgrade greeter in staging from 1.1.1 to 1.1.0"
    with pytest.raises(ApplicationError, match=re.escape(refusal)):
        await deploy(catalog, pkgs["1.1.0"])
    assert "deploy 1.1.0" not in " ".join(calls(target))
    allowed = await deploy(catalog, pkgs["1.1.0"], step="deploy-down", allow_downgrade=True)
    assert allowed.previous_version == "1.1.1" and running(target) == "1.1.0"


async def test_first_deploy_undone_by_undeploy_or_refused_without_it(
    packages, target: Path, tmp_path: Path
) -> None:
    catalog, pkgs = packages
    await deploy(catalog, pkgs["1.1.0"])
    result = await rollback(catalog, "1.1.0")
    assert result.changed and running(target) is None and mirror(catalog) is None
    assert calls(target)[-3:] == ["current", "undeploy 1.1.0", "current"]

    (tmp_path / "bare").mkdir()
    bare = catalog_with(tmp_path / "bare")  # no undeploy command
    package = await build(bare, tmp_path / "work2", "1.1.0")
    await deploy(bare, package)
    with pytest.raises(ApplicationError, match="without an undeploy command there is no rollback to nothing"):
        await rollback(bare, "1.1.0")
