"""Releases through command environments: the greeter as real processes under a real supervisord.

`examples/catalog-supervisor.yaml` on free ports (tests/workflows/supervisor_support.py):
staging and production are supervisor programs that `examples/greeter/supervisor/deploy.py`
rewrites and `supervisorctl update`s; `current.py` asks the running process which version it
is; health is read from the running process of the version under test. Each test starts its
own supervisord (temporary directory, unix socket) and shuts it down, with every greeter it
ran, at the end.

What is checked is the processes themselves: the program supervisord runs for each
environment, its pid, the version the process on the environment's port reports, and that
exactly one process listens there. A release switches both; a failing health check puts
staging's process back to the previous version. (A worker killed in the deploy command:
tests/faults/test_deploy_command_kill.py.)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from relman.activities.registry import create_activities
from relman.contracts import Environment, Outcome, ReleaseRequest, ReleaseStatus
from relman.results import final_status
from relman.workflows.release import ReleaseWorkflow
from tests.helpers import new_worker
from tests.workflows.supervisor_support import Site, authorize, greet, site, start, version
from tests.workflows.test_release_real import manifest

pytestmark = pytest.mark.timeout(120)


@contextlib.asynccontextmanager
async def in_process(
    env: WorkflowEnvironment, tmp_path: Path, suites: bool
) -> AsyncIterator[tuple[Site, Worker]]:
    """A site with an in-process worker running every real activity."""
    async with site(tmp_path, suites=suites) as here:
        activities = create_activities(here.catalog_path, here.data, here.cmdb_url)
        async with new_worker(env.client, ReleaseWorkflow, activities=activities) as worker:
            yield here, worker


@pytest_asyncio.fixture
async def released(ts_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[tuple[Site, Worker]]:
    async with in_process(ts_env, tmp_path, suites=True) as running:
        yield running


@pytest_asyncio.fixture
async def released_untested(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> AsyncIterator[tuple[Site, Worker]]:
    """Without the test suites: what is looked at here starts after them."""
    async with in_process(ts_env, tmp_path, suites=False) as running:
        yield running


async def release(env: WorkflowEnvironment, worker: Worker, request: ReleaseRequest) -> ReleaseStatus:
    handle = await start(env, worker.task_queue, request)
    await authorize(env, handle)
    return await final_status(handle)


async def test_a_release_switches_the_staging_and_production_processes(
    ts_env: WorkflowEnvironment, released: tuple[Site, Worker]
) -> None:
    here, worker = released
    await here.deploy_directly("1.1.0")
    staging, production = here.serving(Environment.STAGING), here.serving(Environment.PRODUCTION)
    assert (staging[0], production[0]) == ("1.1.0", "1.1.0")

    second = await release(ts_env, worker, version("greeter-1.1.0", "1.1.1"))
    assert second.outcome is Outcome.COMPLETED, second.reason
    for env, (_, old_pid) in ((Environment.STAGING, staging), (Environment.PRODUCTION, production)):
        new_version, new_pid = here.serving(env)
        assert (new_version, here.mirror(env)) == ("1.1.1", "1.1.1")
        assert new_pid != old_pid, f"{env.value}: the process was not replaced"
    assert set(here.supervisord.programs()) == {"greeter-staging", "greeter-production"}
    # Production's process follows relman's flag: after go-live everyone gets the new variant.
    answer = greet(here.ports[Environment.PRODUCTION], "alice")
    assert (answer["version"], answer["variant"]) == ("1.1.1", "new")
    assert [(d.environment, d.version, d.previous_version) for d in second.deploys] == [
        (Environment.STAGING, "1.1.1", "1.1.0"),
        (Environment.PRODUCTION, "1.1.1", "1.1.0"),
    ]
    # Health was read from the running processes: 40 probe requests per check.
    assert all(s.health is not None and s.health.samples >= 40 for s in second.stages)


async def test_failing_health_puts_the_previous_process_back(
    ts_env: WorkflowEnvironment, released_untested: tuple[Site, Worker]
) -> None:
    here, worker = released_untested
    await here.deploy_directly("1.1.0")
    _, staging_pid = here.serving(Environment.STAGING)
    production = here.serving(Environment.PRODUCTION)

    final = await release(ts_env, worker, manifest("greeter-1.3.0"))  # fails 30 % of requests
    assert final.outcome is Outcome.ROLLED_BACK
    assert "health failed" in final.reason and "error_rate=0.3" in final.reason
    assert final.compensations == ["exposure to 0%", "roll back staging"]
    restored, restored_pid = here.serving(Environment.STAGING)
    assert (restored, here.mirror(Environment.STAGING)) == ("1.1.0", "1.1.0")
    assert restored_pid != staging_pid  # 1.3.0 ran in between, and 1.1.0 was started again
    assert here.serving(Environment.PRODUCTION) == production  # never touched
    # The kill switch reached the running production process: alice (allow-listed at the
    # first stage) is served the previous version again.
    answer = greet(here.ports[Environment.PRODUCTION], "alice")
    assert (answer["version"], answer["variant"]) == ("1.1.0", "previous")
