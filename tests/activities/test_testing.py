"""Test activity: the example's own pytest suites run against staging; JUnit is parsed."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from relman import contracts
from relman.activities.testing import TestActivities, parse_junit
from relman.contracts import AcceptanceCriteria, ErrorType, ReleasePackage
from tests.helpers import assert_eventually

from .greeter_support import Recorder, build, custom_catalog, deploy, example_catalog


def make_input(package: ReleasePackage, min_pass_rate: float = 1.0) -> contracts.TestInput:
    return contracts.TestInput(
        release_id=f"release-greeter-{package.version}",
        step="test",
        service="greeter",
        version=package.version,
        package=package,
        acceptance=AcceptanceCriteria(min_pass_rate=min_pass_rate),
    )


async def test_good_release_passes_its_suites(tmp_path: Path) -> None:
    catalog = example_catalog(tmp_path / "data")
    package = await build(catalog, tmp_path / "work", "1.1.0")
    await deploy(catalog, package)
    env = Recorder()
    report = await env.run(TestActivities(catalog, tmp_path / "work").run_tests, make_input(package))
    assert report.accepted
    by_name = {s.name: s for s in report.suites}
    assert by_name["unit"].passed == 4 and by_name["unit"].failed == 0
    assert by_name["integration"].passed == 4  # http 2, flag-driven serving 2
    assert env.heartbeats, "long activities heartbeat"
    junit = tmp_path / "work" / "release-greeter-1.1.0" / "tests" / "test" / "unit" / "junit.xml"
    assert parse_junit(junit, "unit").passed == 4
    # The staging copy stays pristine (no caches or bytecode written into it).
    staging = catalog.service("greeter").env_dir("staging") / "1.1.0"
    assert not list(staging.rglob("__pycache__"))


async def test_buggy_release_fails_with_test_names(tmp_path: Path) -> None:
    catalog = example_catalog(tmp_path / "data")
    package = await build(catalog, tmp_path / "work", "1.2.0")
    await deploy(catalog, package)
    with pytest.raises(ApplicationError) as exc:
        await Recorder().run(TestActivities(catalog).run_tests, make_input(package))
    err = exc.value
    assert err.type == ErrorType.TESTS_FAILED and err.non_retryable
    assert "test_this_release_greets_correctly" in err.message
    assert "test_greet_over_http" in err.message
    report = err.details[0]
    assert report["accepted"] is False
    unit = next(s for s in report["suites"] if s["name"] == "unit")
    assert unit["failed"] == 1 and unit["passed"] == 3


async def test_pass_rate_threshold(tmp_path: Path) -> None:
    catalog = custom_catalog(
        tmp_path,
        tests=[
            {
                "name": "unit",
                "command": ["{python}", "-m", "pytest", "-q", "tests/unit", "--junitxml={junit}"],
                "cwd": "{release_dir}",
                "required_pass_rate": 0.7,
                "timeout": 60,
            }
        ],
    )
    package = await build(catalog, tmp_path / "work", "1.2.0")
    await deploy(catalog, package)
    # 3 of 4 pass: enough for the suite's 0.7, not for an acceptance criterion of 0.9.
    report = await Recorder().run(TestActivities(catalog).run_tests, make_input(package, min_pass_rate=0.5))
    assert report.accepted and report.suites[0].pass_rate == 0.75
    with pytest.raises(ApplicationError):
        await Recorder().run(TestActivities(catalog).run_tests, make_input(package, min_pass_rate=0.9))


HANG = "import os, time, pathlib; pathlib.Path('{pid}').write_text(str(os.getpid())); time.sleep(120)"


def hanging_catalog(tmp_path: Path, timeout: float) -> object:
    return custom_catalog(
        tmp_path,
        tests=[
            {
                "name": "system",
                "command": ["{python}", "-c", HANG.replace("{pid}", str(tmp_path / "suite.pid"))],
                "timeout": timeout,
            }
        ],
    )


async def test_suite_past_its_timeout_is_killed_and_reported(tmp_path: Path) -> None:
    catalog = hanging_catalog(tmp_path, timeout=1.0)
    package = await build(catalog, tmp_path / "work", "1.1.0")
    started = time.monotonic()
    with pytest.raises(ApplicationError) as exc:
        await Recorder().run(TestActivities(catalog).run_tests, make_input(package))
    assert time.monotonic() - started < 6
    suite = exc.value.details[0]["suites"][0]
    assert suite["timed_out"] is True
    assert "killed after" in exc.value.message
    with pytest.raises(ProcessLookupError):
        os.kill(int((tmp_path / "suite.pid").read_text()), 0)


async def test_cancellation_kills_the_suite(tmp_path: Path) -> None:
    catalog = hanging_catalog(tmp_path, timeout=60)
    package = await build(catalog, tmp_path / "work", "1.1.0")
    env = Recorder()
    task = asyncio.create_task(env.run(TestActivities(catalog).run_tests, make_input(package)))
    pidfile = tmp_path / "suite.pid"

    async def suite_pid() -> int:
        assert pidfile.exists() and pidfile.read_text(), "the suite has not started"
        return int(pidfile.read_text())

    async def gone() -> None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        raise AssertionError(f"suite process {pid} survived cancellation")

    pid = await assert_eventually(suite_pid, timeout=10, interval=0.05)
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_eventually(gone, timeout=5, interval=0.05)
