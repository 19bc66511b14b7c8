"""A long step's heartbeat detail, as `relman status` reads it from the server, is seconds old.

A real test suite (a subprocess printing for ~10 s) runs in the real `run_tests` activity on
the worker `build_workers` makes, against a real dev server, scheduled with the release
workflow's 30 s heartbeat timeout. While it runs, `describe()` is read as the client reads it:
the detail's `elapsed` (the runner's clock at that heartbeat; 0 for the "starting" detail)
must trail the step's real running time by at most a few seconds. With the SDK's default
throttle (0.8 x 30 s = 24 s) the detail stayed at its first heartbeat for the whole suite.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment

from relman import contracts
from relman.activities.testing import TestActivities
from relman.config import Settings
from relman.contracts import AcceptanceCriteria, Activity
from relman.progress import running_step
from relman.worker import build_workers
from tests.helpers import new_worker

from .greeter_support import build, custom_catalog

pytestmark = pytest.mark.timeout(120)

SUITE_SECONDS = 10
MAX_AGE = 5.0
"""Seconds: the 2 s throttle, the runner's 1 s heartbeat interval, and slack for a busy machine."""

SLOW_SUITE = f"""
import sys, time
for i in range({SUITE_SECONDS}):
    print("test", i, "ok", flush=True)
    time.sleep(1)
open(sys.argv[1], "w").write('<testsuite><testcase classname="system" name="t"/></testsuite>')
"""


@workflow.defn(sandboxed=False)
class RunSuites:
    @workflow.run
    async def run(self, inp: contracts.TestInput, queue: str) -> contracts.TestReport:
        return await workflow.execute_activity(
            Activity.RUN_TESTS.value,
            inp,
            result_type=contracts.TestReport,
            task_queue=queue,
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=timedelta(seconds=30),  # as the release workflow's test step
        )


async def test_a_running_suite_shows_a_detail_seconds_old(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    suite = {
        "name": "system",
        "command": ["{python}", "-c", SLOW_SUITE, "{junit}"],
        "cwd": "{release_dir}",
        "timeout": 60,
    }
    catalog = custom_catalog(tmp_path, tests=[suite])
    package = await build(catalog, tmp_path / "work", "1.1.0")
    inp = contracts.TestInput(
        release_id="release-greeter-1.1.0",
        step="test",
        service="greeter",
        version="1.1.0",
        package=package,
        acceptance=AcceptanceCriteria(min_pass_rate=1.0),
    )
    settings = Settings(task_queue=f"acts-{uuid.uuid4()}", data_dir=tmp_path / "data")
    client = dev_env.client
    [worker] = build_workers(client, settings, [TestActivities(catalog, tmp_path / "work").run_tests])
    ages: list[float] = []
    async with worker, new_worker(client, RunSuites) as starter:
        handle = await client.start_workflow(
            RunSuites.run,
            args=[inp, settings.task_queue],
            id=f"suite-{uuid.uuid4()}",
            task_queue=starter.task_queue,
        )
        result = asyncio.ensure_future(handle.result())
        while not result.done():
            desc = await handle.describe()
            for info in desc.raw_description.pending_activities:
                decoded = await client.data_converter.decode(info.heartbeat_details.payloads)
                step = running_step(info, decoded[-1] if decoded else {})
                if step.started_at is not None:
                    # Before the suite's first output heartbeat the detail dates from the start.
                    running = (datetime.now(UTC) - step.started_at).total_seconds()
                    ages.append(running - step.detail.get("elapsed", 0.0))
            await asyncio.wait([result], timeout=0.5)
        report = result.result()
    assert report.accepted and report.suites[0].passed == 1
    assert len(ages) >= SUITE_SECONDS, f"too few samples while the suite ran: {ages}"
    assert max(ages) <= MAX_AGE, f"heartbeat detail up to {max(ages):.1f}s old: {[round(a, 1) for a in ages]}"
