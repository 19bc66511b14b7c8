"""Deploy and rollback on real directories and symlinks."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from relman.activities.environment import EnvironmentActivities, EnvironmentDir
from relman.catalog import Catalog
from relman.contracts import Environment, ErrorType, ReleasePackage, RollbackInput

from .greeter_support import build, deploy, example_catalog


@pytest.fixture
async def packages(tmp_path: Path) -> tuple[Catalog, dict[str, ReleasePackage]]:
    catalog = example_catalog(tmp_path / "data")
    pkgs = {v: await build(catalog, tmp_path / "work", v) for v in ("1.1.0", "1.1.1", "1.3.0")}
    return catalog, pkgs


def current(catalog: Catalog, env: Environment = Environment.STAGING) -> str | None:
    link = catalog.service("greeter").env_dir(env) / "current"
    return os.readlink(link) if link.is_symlink() else None


async def rollback(catalog: Catalog, version: str, restore: str | None, step: str = "rollback") -> object:
    inp = RollbackInput(
        release_id=f"release-greeter-{version}",
        step=step,
        service="greeter",
        environment=Environment.STAGING,
        version=version,
        restore_version=restore,
    )
    return await ActivityEnvironment().run(EnvironmentActivities(catalog).rollback, inp)


async def test_deploy_switches_current_and_rollback_restores_exactly(packages) -> None:
    catalog, pkgs = packages
    first = await deploy(catalog, pkgs["1.1.0"])
    assert first.changed and first.previous_version is None
    assert current(catalog) == "1.1.0"
    base = catalog.service("greeter").env_dir(Environment.STAGING)
    assert (base / "current" / "VERSION").read_text().strip() == "1.1.0"

    second = await deploy(catalog, pkgs["1.1.1"])
    assert second.previous_version == "1.1.0" and current(catalog) == "1.1.1"

    # The workflow lost the deploy's result: the state file still knows what to restore.
    result = await rollback(catalog, "1.1.1", restore=None)
    assert result.changed and current(catalog) == "1.1.0"
    assert (base / "current" / "VERSION").read_text().strip() == "1.1.0"
    again = await rollback(catalog, "1.1.1", restore=None)
    assert not again.changed and current(catalog) == "1.1.0"


async def test_first_deploy_rolled_back_removes_current(packages) -> None:
    catalog, pkgs = packages
    await deploy(catalog, pkgs["1.1.0"])
    await rollback(catalog, "1.1.0", restore=None)
    assert current(catalog) is None


async def test_deploy_is_idempotent(packages) -> None:
    catalog, pkgs = packages
    first = await deploy(catalog, pkgs["1.1.0"])
    retry = await deploy(catalog, pkgs["1.1.0"])  # same key: the recorded result
    assert retry == first
    other = await deploy(catalog, pkgs["1.1.0"], step="deploy-again")  # same version, new key
    assert not other.changed and other.previous_version == "1.1.0"
    # Another release that found 1.1.0 already live undoes nothing when it rolls back.
    inp = RollbackInput(
        release_id="release-greeter-1.1.0-retry",
        step="rollback",
        service="greeter",
        environment=Environment.STAGING,
        version="1.1.0",
        restore_version="1.1.0",
    )
    undo = await ActivityEnvironment().run(EnvironmentActivities(catalog).rollback, inp)
    assert not undo.changed and current(catalog) == "1.1.0"


async def test_rollback_refuses_to_clobber_a_newer_release(packages) -> None:
    catalog, pkgs = packages
    await deploy(catalog, pkgs["1.1.0"])
    await deploy(catalog, pkgs["1.1.1"])
    await deploy(catalog, pkgs["1.3.0"])
    with pytest.raises(ApplicationError) as exc:
        await rollback(catalog, "1.1.1", restore="1.1.0")
    assert exc.value.type == ErrorType.DEPLOY_FAILED and exc.value.non_retryable
    assert current(catalog) == "1.3.0"


async def test_concurrent_deploys_are_serialized(packages) -> None:
    catalog, pkgs = packages
    await deploy(catalog, pkgs["1.1.0"])
    # Either may go first; the second may then go back a version, which is not the point here.
    a, b = await asyncio.gather(
        deploy(catalog, pkgs["1.1.1"], allow_downgrade=True),
        deploy(catalog, pkgs["1.3.0"], allow_downgrade=True),
    )
    # One ran after the other: each saw a consistent predecessor, none was lost.
    assert {a.previous_version, b.previous_version} in ({"1.1.0", "1.1.1"}, {"1.1.0", "1.3.0"})
    assert current(catalog) in {"1.1.1", "1.3.0"}
    assert current(catalog) != (a.previous_version if current(catalog) == b.version else b.previous_version)


async def test_lock_held_too_long_is_refused(packages) -> None:
    catalog, pkgs = packages
    env = EnvironmentDir(catalog.service("greeter").env_dir(Environment.STAGING))
    env.ensure()
    fd = os.open(env.state_dir / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, b"release-other/deploy", 0)
        inp_pkg = pkgs["1.1.0"]
        acts = EnvironmentActivities(catalog, lock_wait=0.3)
        from relman.contracts import DeployInput

        inp = DeployInput(
            release_id="release-greeter-1.1.0",
            step="deploy",
            service="greeter",
            environment=Environment.STAGING,
            version="1.1.0",
            package=inp_pkg,
        )
        with pytest.raises(ApplicationError) as exc:
            await ActivityEnvironment().run(acts.deploy, inp)
        assert exc.value.type == ErrorType.ENVIRONMENT_LOCKED
        assert "release-other/deploy" in exc.value.message
    finally:
        os.close(fd)
    assert current(catalog) is None


async def test_tampered_package_is_not_deployed(packages) -> None:
    catalog, pkgs = packages
    (Path(pkgs["1.3.0"].path) / "app.py").write_text("evil")
    with pytest.raises(ApplicationError) as exc:
        await deploy(catalog, pkgs["1.3.0"])
    assert exc.value.type == ErrorType.PACKAGE_INVALID
    assert current(catalog) is None


async def test_rollback_by_deploy_step(packages) -> None:
    catalog, pkgs = packages
    await deploy(catalog, pkgs["1.1.0"])
    await deploy(catalog, pkgs["1.1.1"], step="deploy-staging")
    acts = EnvironmentActivities(catalog)

    def undo(step: str) -> RollbackInput:
        return RollbackInput(
            release_id="release-greeter-1.1.1",
            step="rollback-staging",
            service="greeter",
            environment=Environment.STAGING,
            version="1.1.1",
            deploy_step=step,
        )

    never_ran = await ActivityEnvironment().run(acts.rollback, undo("deploy-production"))
    assert not never_ran.changed and current(catalog) == "1.1.1"
    done = await ActivityEnvironment().run(acts.rollback, undo("deploy-staging"))
    assert done.changed and done.version == "1.1.0" and current(catalog) == "1.1.0"
