"""run_train_tests: the catalog's train suites on every component's staging at once
(`{envs_dir}`), judged like a service's suites; validate_train refuses an unknown suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from relman.activities.requests import RequestActivities
from relman.activities.testing import TestActivities
from relman.catalog import Catalog, TrainSuiteSpec
from relman.contracts import ErrorType
from relman.contracts.train import TrainComponent, TrainRequest, TrainTestInput

from .greeter_support import Recorder, example_catalog

CHECK = """\
import sys
from pathlib import Path

envs, junit = Path(sys.argv[1]), sys.argv[2]
staged = (envs / "greeter" / "staging").is_dir()
failure = "" if staged else "<failure message='no greeter in staging'/>"
Path(junit).write_text(
    f"<testsuite><testcase classname='together' name='greeter_staged'>{failure}</testcase></testsuite>"
)
"""


def with_suite(catalog: Catalog, tmp_path: Path, **changes: object) -> Catalog:
    """The catalog with one train suite, `together`, checking that greeter's staging exists."""
    (tmp_path / "suites").mkdir(exist_ok=True)
    (tmp_path / "suites" / "check.py").write_text(CHECK)
    raw = {
        "name": "together",
        "workdir": "suites",
        "command": ["{python}", "check.py", "{envs_dir}", "{junit}"],
    }
    suite = TrainSuiteSpec.model_validate({**raw, **changes}, context={"catalog_dir": tmp_path})
    return catalog.model_copy(update={"train_suites": [suite]})


def run_input(*suites: str, min_pass_rate: float = 1.0) -> TrainTestInput:
    return TrainTestInput(
        release_id="train-t1",
        step="train-tests",
        train="t1",
        suites=list(suites),
        min_pass_rate=min_pass_rate,
    )


async def test_a_suite_passes_on_the_combined_staging(tmp_path: Path) -> None:
    catalog = with_suite(example_catalog(tmp_path / "data"), tmp_path)
    (catalog.envs_dir / "greeter" / "staging").mkdir(parents=True)
    env = Recorder()
    report = await env.run(TestActivities(catalog, tmp_path / "work").run_train_tests, run_input("together"))
    assert report.accepted
    assert [(s.name, s.passed, s.failed) for s in report.suites] == [("together", 1, 0)]
    assert (tmp_path / "work" / "train-t1" / "tests" / "train-tests" / "together" / "junit.xml").is_file()
    assert env.heartbeats


async def test_a_failing_suite_is_tests_failed_with_its_report(tmp_path: Path) -> None:
    catalog = with_suite(example_catalog(tmp_path / "data"), tmp_path)  # nothing in staging
    with pytest.raises(ApplicationError) as exc:
        await Recorder().run(TestActivities(catalog).run_train_tests, run_input("together"))
    err = exc.value
    assert err.type == ErrorType.TESTS_FAILED and err.non_retryable
    assert err.message == "train t1 failed acceptance (together 0/1); failing: together::greeter_staged"
    assert err.details[0]["accepted"] is False


async def test_a_suite_below_its_rate_or_the_trains_fails(tmp_path: Path) -> None:
    # Nothing ran (no testcase) never passes, whatever the rate asked.
    catalog = with_suite(example_catalog(tmp_path / "data"), tmp_path, command=["{python}", "-c", "pass"])
    with pytest.raises(ApplicationError) as exc:
        await Recorder().run(TestActivities(catalog).run_train_tests, run_input("together", min_pass_rate=0))
    assert "together: no JUnit XML written (exit 0)" in exc.value.message


async def test_an_unknown_suite_is_refused_by_the_activity_and_by_validate_train(tmp_path: Path) -> None:
    catalog = example_catalog(tmp_path / "data")
    with pytest.raises(ApplicationError) as exc:
        await Recorder().run(TestActivities(catalog).run_train_tests, run_input("combined", "soak"))
    assert exc.value.type == ErrorType.INVALID_REQUEST and exc.value.non_retryable
    assert exc.value.message == "unknown train suite(s) soak; the catalog has: combined"
    request = TrainRequest(
        train="t1",
        components=[TrainComponent(service="greeter", version="2.0.0", commit="abc1234")],
        requested_by="pat",
        title="t",
        tests=["combined", "soak", "smoke"],
    )
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(RequestActivities(catalog).validate_train, request)
    assert refused.value.message == "unknown train suite(s) soak, smoke; the catalog has: combined"
    ok = request.model_copy(update={"tests": ["combined"]})
    assert (await ActivityEnvironment().run(RequestActivities(catalog).validate_train, ok)).profiles
