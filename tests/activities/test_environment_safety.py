"""Deploys that clean up after killed copies and refuse to go back a version by accident.

The killed copy is real: a subprocess stages a package into the environment, stalls after its
first file (the injected fault: `shutil.copyfile` sleeps), and gets SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from relman.activities.environment import (
    DIGEST_FILE,
    INCOMING_LOCKS,
    STATE_DIR,
    EnvironmentDir,
    is_downgrade,
    version_key,
)
from relman.catalog import Catalog
from relman.contracts import Environment, ErrorType, ReleasePackage

from .greeter_support import build, deploy, example_catalog

pytestmark = pytest.mark.timeout(60)

STALLED_COPY = """
import shutil, sys, time
from pathlib import Path
from relman.activities.environment import EnvironmentDir
from relman.contracts import ReleasePackage

real = shutil.copyfile
def stalled(src, dst, *args, **kwargs):
    out = real(src, dst, *args, **kwargs)
    print("copying", flush=True)
    time.sleep(600)
    return out
shutil.copyfile = stalled
EnvironmentDir(Path(sys.argv[1]), "greeter/production").stage(ReleasePackage.model_validate_json(sys.argv[2]))
"""


@pytest.fixture
async def packages(tmp_path: Path) -> tuple[Catalog, dict[str, ReleasePackage]]:
    catalog = example_catalog(tmp_path / "data")
    pkgs = {v: await build(catalog, tmp_path / "work", v) for v in ("1.1.0", "1.1.1", "1.3.0")}
    return catalog, pkgs


def prod(catalog: Catalog) -> Path:
    return catalog.service("greeter").env_dir(Environment.PRODUCTION)


def current(catalog: Catalog) -> str | None:
    link = prod(catalog) / "current"
    return os.readlink(link) if link.is_symlink() else None


def incoming(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.name.startswith(".incoming-"))


@pytest.fixture
def stalled_copy() -> Iterator[object]:
    """Start copies that stall after their first file; kills any still alive at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(base: Path, package: ReleasePackage) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", STALLED_COPY, str(base), package.model_dump_json()],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "copying", "the copy did not start"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    if files != sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != DIGEST_FILE):
        return False
    return all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


async def test_next_deploy_removes_a_killed_copy(packages, stalled_copy) -> None:
    catalog, pkgs = packages
    await deploy(catalog, pkgs["1.1.0"], Environment.PRODUCTION)
    base = prod(catalog)
    kill(stalled_copy(base, pkgs["1.3.0"]))
    [leftover] = incoming(base)
    assert leftover.startswith(".incoming-1.3.0-") and any((base / leftover).iterdir())
    assert not (base / leftover / DIGEST_FILE).exists(), "a half copy, as SIGKILL leaves it"
    # Things that look alike but are not relman's leftovers stay as they are.
    (base / ".incoming-notes").write_text("mine")
    os.symlink("1.1.0", base / ".incoming-1.1.0-deadbeef")

    result = await deploy(catalog, pkgs["1.3.0"], Environment.PRODUCTION)

    assert result.changed and result.previous_version == "1.1.0" and current(catalog) == "1.3.0"
    assert incoming(base) == [".incoming-1.1.0-deadbeef", ".incoming-notes"]
    assert os.readlink(base / ".incoming-1.1.0-deadbeef") == "1.1.0"
    assert not list((base / STATE_DIR / INCOMING_LOCKS).iterdir()), "lock files go with their copies"
    assert same_tree(Path(pkgs["1.3.0"].path), base / "1.3.0")
    assert (base / "1.3.0" / DIGEST_FILE).read_text().strip() == pkgs["1.3.0"].digest
    assert same_tree(Path(pkgs["1.1.0"].path), base / "1.1.0"), "the previous release is untouched"


async def test_a_copy_in_progress_is_left_alone(packages, stalled_copy) -> None:
    catalog, pkgs = packages
    base = prod(catalog)
    await deploy(catalog, pkgs["1.1.0"], Environment.PRODUCTION)
    alive = stalled_copy(base, pkgs["1.3.0"])
    [copying] = incoming(base)

    await deploy(catalog, pkgs["1.1.1"], Environment.PRODUCTION)
    assert incoming(base) == [copying] and alive.poll() is None
    assert current(catalog) == "1.1.1"

    kill(alive)
    assert EnvironmentDir(base).remove_leftovers() == [copying]
    assert incoming(base) == []


async def test_restaging_a_version_replaces_it_whole(packages) -> None:
    catalog, pkgs = packages
    base = prod(catalog)
    await deploy(catalog, pkgs["1.1.0"], Environment.PRODUCTION)
    await deploy(catalog, pkgs["1.1.1"], Environment.PRODUCTION)
    # A stale 1.1.0 directory (another build of it) is replaced, not patched.
    (base / "1.1.0" / DIGEST_FILE).write_text("0" * 64 + "\n")
    (base / "1.1.0" / "stale.txt").write_text("old build")
    EnvironmentDir(base).stage(pkgs["1.1.0"])
    assert same_tree(Path(pkgs["1.1.0"].path), base / "1.1.0") and incoming(base) == []


async def test_a_downgrade_is_refused_in_one_line(packages) -> None:
    catalog, pkgs = packages
    await deploy(catalog, pkgs["1.3.0"], Environment.PRODUCTION)
    with pytest.raises(ApplicationError) as exc:
        await deploy(catalog, pkgs["1.1.1"], Environment.PRODUCTION)
    err = exc.value
    assert err.type == ErrorType.INVALID_REQUEST and err.non_retryable
    assert err.message == (
        "refusing to downgrade greeter in production from 1.3.0 to 1.1.1; "
        "set allow_downgrade: true in the manifest to do it on purpose"
    )
    assert current(catalog) == "1.3.0"
    assert not (prod(catalog) / "1.1.1").exists(), "refused before copying anything"
    # Staging is an environment too, and judged on its own.
    assert (await deploy(catalog, pkgs["1.1.1"])).changed


async def test_a_downgrade_on_purpose_goes_through(packages) -> None:
    catalog, pkgs = packages
    await deploy(catalog, pkgs["1.3.0"], Environment.PRODUCTION)
    result = await deploy(catalog, pkgs["1.1.0"], Environment.PRODUCTION, allow_downgrade=True)
    assert result.changed and result.previous_version == "1.3.0" and current(catalog) == "1.1.0"


async def test_redeploying_the_same_version_stays_idempotent(packages) -> None:
    catalog, pkgs = packages
    first = await deploy(catalog, pkgs["1.3.0"], Environment.PRODUCTION)
    retry = await deploy(catalog, pkgs["1.3.0"], Environment.PRODUCTION)
    assert retry == first
    again = await deploy(catalog, pkgs["1.3.0"], Environment.PRODUCTION, step="deploy-again")
    assert not again.changed and again.previous_version == "1.3.0"


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.0.0", "1.0.1"),
        ("1.9.0", "1.10.0"),
        ("2.9.9", "10.0.0"),
        ("3.0.3", "3.1.0"),
        ("1.0.0-alpha", "1.0.0"),
        ("1.0.0-rc.1", "1.0.0"),
        # semver.org §11's own chain
        ("1.0.0-alpha", "1.0.0-alpha.1"),
        ("1.0.0-alpha.1", "1.0.0-alpha.beta"),
        ("1.0.0-alpha.beta", "1.0.0-beta"),
        ("1.0.0-beta", "1.0.0-beta.2"),
        ("1.0.0-beta.2", "1.0.0-beta.11"),
        ("1.0.0-beta.11", "1.0.0-rc.1"),
        ("2.4.1", "2.5.0-rc.1"),
    ],
)
def test_versions_compare_by_semver_precedence(older: str, newer: str) -> None:
    assert version_key(older) < version_key(newer)  # type: ignore[operator]
    assert is_downgrade(newer, older) and not is_downgrade(older, newer)


@pytest.mark.parametrize(("a", "b"), [("2.0.0", "2.0.0"), ("2.0.0+build.1", "2.0.0"), ("2.0.0+a", "2.0.0+b")])
def test_equal_precedence_is_not_a_downgrade(a: str, b: str) -> None:
    assert not is_downgrade(a, b) and not is_downgrade(b, a)


def test_what_is_not_a_version_is_never_called_a_downgrade() -> None:
    assert version_key("main") is None
    assert not is_downgrade("main", "1.0.0") and not is_downgrade(None, "1.0.0")
    assert is_downgrade("3.0.3", "2.0.0")
