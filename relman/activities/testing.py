"""Test activity: run the catalog's suites against staging, read JUnit XML, judge acceptance.

The workflow deploys the package to staging first (`deploy`); suites then run with
`{release_dir}` = the staging copy of this version (or the package itself if staging does
not hold it). Each suite writes JUnit XML; a suite past its timeout is killed with its whole
process group and reported `timed_out`.
"""

from __future__ import annotations

import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from relman.activities.runner import command_env, run_command
from relman.activities.services import service_spec
from relman.catalog import Catalog, SuiteSpec, render_argv, substitute
from relman.contracts import Activity, Environment, ErrorType, SuiteResult, TestInput, TestReport
from relman.contracts.train import TrainTestInput

log = structlog.get_logger(__name__)

_MAX_FAILURE_NAMES = 50


def parse_junit(path: Path, suite: str) -> SuiteResult:
    """Count passed/failed/skipped/errors over every `testcase` and name the failures."""
    root = ET.parse(path).getroot()
    result = SuiteResult(name=suite)
    for case in root.iter("testcase"):
        name = "::".join(p for p in (case.get("classname", ""), case.get("name", "?")) if p)
        if case.find("failure") is not None:
            result.failed += 1
            result.failures.append(name)
        elif case.find("error") is not None:
            result.errors += 1
            result.failures.append(name)
        elif case.find("skipped") is not None:
            result.skipped += 1
        else:
            result.passed += 1
    result.failures = result.failures[:_MAX_FAILURE_NAMES]
    return result


def suite_passes(result: SuiteResult, required_rate: float) -> bool:
    """A suite passes when it finished, ran something and reached the required pass rate."""
    ran = result.passed + result.failed + result.errors
    return not result.timed_out and ran > 0 and result.pass_rate >= required_rate


class TestActivities:
    """Runs test suites from the catalog; reports per suite, raises `TestsFailed` on rejection."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, catalog: Catalog, work_root: Path | None = None) -> None:
        self.catalog = catalog
        self.work_root = work_root

    async def run_suite(
        self,
        suite: SuiteSpec,
        values: dict[str, str],
        out_dir: Path,
        env: dict[str, str],
        secrets: Sequence[str] = (),
    ) -> SuiteResult:
        out_dir.mkdir(parents=True, exist_ok=True)
        values = {**values, "junit": str(out_dir / "junit.xml")}
        cwd = Path(substitute(suite.cwd, values))
        junit = Path(substitute(suite.junit, values))
        if not junit.is_absolute():
            junit = cwd / junit
        junit.unlink(missing_ok=True)  # never read a previous attempt's report
        result = await run_command(
            render_argv(suite.command, values),
            cwd=cwd,
            timeout=suite.timeout,
            env=env,
            secrets=secrets,
            output_path=out_dir / "output.log",
            heartbeat=lambda d: activity.heartbeat({"suite": suite.name, **d}),
        )
        report = SuiteResult(name=suite.name)
        if junit.is_file():
            try:
                report = parse_junit(junit, suite.name)
            except ET.ParseError as exc:
                report.errors += 1
                report.failures.append(f"{suite.name}: unreadable JUnit XML ({exc})")
        if result.timed_out:
            report.timed_out = True
            report.failures.append(f"{suite.name}: killed after its {suite.timeout:g}s timeout")
        elif not junit.is_file():
            report.errors += 1
            report.failures.append(f"{suite.name}: no JUnit XML written (exit {result.returncode})")
        elif result.returncode != 0 and not report.failures:
            report.errors += 1
            report.failures.append(f"{suite.name}: exit {result.returncode} with no failing test reported")
        log.info(
            "tests.suite",
            suite=suite.name,
            passed=report.passed,
            failed=report.failed,
            errors=report.errors,
            skipped=report.skipped,
            timed_out=report.timed_out,
            seconds=round(result.duration, 2),
        )
        return report

    @activity.defn(name=Activity.RUN_TESTS)
    async def run_tests(self, inp: TestInput) -> TestReport:
        """Run every configured suite; `TestsFailed` (non-retryable) names the failing tests."""
        spec = service_spec(self.catalog, inp.service)
        staging = spec.env_dir(Environment.STAGING)
        release_dir = staging / inp.version
        if not release_dir.is_dir():
            release_dir = Path(inp.package.path)
        if self.work_root is not None:
            out_root = self.work_root / inp.release_id / "tests" / inp.step
            shutil.rmtree(out_root, ignore_errors=True)
            cleanup = False
        else:
            out_root = Path(tempfile.mkdtemp(prefix="relman-tests-"))
            cleanup = True
        values = {
            "version": inp.version,
            "service": inp.service,
            "env_dir": str(staging),
            "release_dir": str(release_dir),
            "source_dir": str(spec.workdir),
            "work_dir": str(out_root),
        }
        return await self._judge(
            f"{inp.service} {inp.version}",
            [(suite, values) for suite in spec.tests],
            out_root,
            cleanup,
            command_env(spec.env),
            spec.secrets,
            inp.acceptance.min_pass_rate,
        )

    @activity.defn(name=Activity.RUN_TRAIN_TESTS)
    async def run_train_tests(self, inp: TrainTestInput) -> TestReport:
        """Run the catalog's train suites the manifest names, on every component's staging at
        once (`{envs_dir}`); `TestsFailed` (non-retryable) names the failing tests."""
        known = {s.name for s in self.catalog.train_suites}
        if unknown := [name for name in inp.suites if name not in known]:
            raise ApplicationError(
                f"unknown train suite(s) {', '.join(unknown)}; "
                f"the catalog has: {', '.join(sorted(known)) or 'none'}",
                type=ErrorType.INVALID_REQUEST,
                non_retryable=True,
            )
        suites = [self.catalog.train_suite(name) for name in inp.suites]
        if self.work_root is not None:
            out_root = self.work_root / inp.release_id / "tests" / inp.step
            shutil.rmtree(out_root, ignore_errors=True)
            cleanup = False
        else:
            out_root = Path(tempfile.mkdtemp(prefix="relman-train-tests-"))
            cleanup = True
        values = {"envs_dir": str(self.catalog.envs_dir), "work_dir": str(out_root)}
        return await self._judge(
            f"train {inp.train}",
            [(suite, {**values, "source_dir": str(suite.workdir)}) for suite in suites],
            out_root,
            cleanup,
            command_env({}),
            (),
            inp.min_pass_rate,
        )

    async def _judge(
        self,
        what: str,
        specs: Sequence[tuple[SuiteSpec, dict[str, str]]],
        out_root: Path,
        cleanup: bool,
        env: dict[str, str],
        secrets: Sequence[str],
        min_pass_rate: float,
    ) -> TestReport:
        """Every suite run in turn, judged against its rate and `min_pass_rate`."""
        suites: list[SuiteResult] = []
        verdicts: list[bool] = []
        try:
            for suite, values in specs:
                activity.heartbeat({"suite": suite.name, "starting": True})
                result = await self.run_suite(suite, values, out_root / suite.name, env, secrets)
                suites.append(result)
                verdicts.append(suite_passes(result, max(suite.required_pass_rate, min_pass_rate)))
        finally:
            if cleanup:
                shutil.rmtree(out_root, ignore_errors=True)
        report = TestReport(suites=suites, accepted=all(verdicts))
        if not report.accepted:
            failing = [name for s, ok in zip(suites, verdicts, strict=True) if not ok for name in s.failures]
            summary = ", ".join(
                f"{s.name} {s.passed}/{s.passed + s.failed + s.errors}"
                for s, ok in zip(suites, verdicts, strict=True)
                if not ok
            )
            names = ", ".join(failing[:20])
            raise ApplicationError(
                f"{what} failed acceptance ({summary}); failing: {names}",
                report.model_dump(mode="json"),
                type=ErrorType.TESTS_FAILED,
                non_retryable=True,
            )
        return report
