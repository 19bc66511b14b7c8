"""The new components' own test suites, run by relman's test activity from their packages
(pytest writing JUnit XML): the good releases pass, the buggy ones fail where intended."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from relman import contracts
from relman.activities.testing import TestActivities
from relman.contracts import AcceptanceCriteria, Environment, ErrorType
from tests.activities.greeter_support import Recorder

from .test_train_components import Envs


async def run_suites(envs: Envs, service: str, version: str, *, staged: bool = True) -> contracts.TestReport:
    package = await envs.build(service, version)
    if staged:
        await envs.deploy(package, Environment.STAGING)
    inp = contracts.TestInput(
        release_id=envs.rid(service, version),
        step="test",
        service=service,
        version=version,
        package=package,
        acceptance=AcceptanceCriteria(min_pass_rate=1.0),
    )
    return await Recorder().run(TestActivities(envs.catalog, envs.work).run_tests, inp)


@pytest.mark.parametrize(
    ("service", "version", "unit", "integration"),
    [
        ("greeter-db", "2.0.0", 5, 2),
        # Its bug (names with spaces) is one its tests miss: only the dark launch shows it.
        # (The greeter's suites: tests/activities/test_testing.py.)
        ("greeter-worker", "2.1.0", 4, 2),
    ],
)
async def test_good_suites_pass(
    tmp_path: Path, service: str, version: str, unit: int, integration: int
) -> None:
    report = await run_suites(Envs(tmp_path), service, version)
    assert report.accepted
    counts = {s.name: (s.passed, s.failed) for s in report.suites}
    assert counts == {"unit": (unit, 0), "integration": (integration, 0)}


async def test_a_broken_migration_fails_the_database_suites(tmp_path: Path) -> None:
    envs = Envs(tmp_path)
    with pytest.raises(ApplicationError) as exc:
        # Not staged: its staging deploy would fail first (the same migration); the activity
        # then runs the suites in the package itself.
        await run_suites(envs, "greeter-db", "2.2.0", staged=False)
    assert exc.value.type == ErrorType.TESTS_FAILED
    assert "test_they_apply_to_an_empty_database" in exc.value.message
