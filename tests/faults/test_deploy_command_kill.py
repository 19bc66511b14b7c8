"""A worker SIGKILLed in the middle of a deploy command: exactly one version runs afterwards.

The greeter runs under a real supervisord (tests/workflows/supervisor_support.py), released by
a worker in a process of its own on a real dev server (the time-skipping one never hands the
workflow to a new worker: its task stays on the dead worker's sticky queue). Production's
deploy command is held (tests/faults/hold.py) before it switches; the worker is killed; the
orphaned command then switches production alone; a new worker retries the deploy, which runs
the command again (it must be idempotent) and checks `current`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from relman.contracts import Environment, Gate, Outcome
from relman.results import final_status
from tests.faults.support import WorkerProcess, approve, start_release
from tests.helpers import assert_eventually
from tests.workflows.supervisor_support import site, version

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]


@pytest.fixture
def worker_processes() -> Iterator[list[WorkerProcess]]:
    workers: list[WorkerProcess] = []
    yield workers
    for w in workers:
        if w.proc is not None and w.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.proc.pid, signal.SIGKILL)


def runs(holds: Path) -> list[str]:
    path = holds / "deploy.runs"
    return path.read_text().splitlines() if path.exists() else []


async def test_worker_killed_in_the_deploy_command_leaves_one_version_running(
    dev_env: WorkflowEnvironment, tmp_path: Path, worker_processes: list[WorkerProcess]
) -> None:
    # A real dev server: the time-skipping one never hands the workflow to the new worker
    # (its task stays on the dead worker's sticky queue).
    holds = tmp_path / "holds"
    holds.mkdir()
    async with site(tmp_path, suites=False, hold=holds) as here:
        task_queue = f"sv-kill-{uuid.uuid4().hex[:8]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RELMAN_", "TEMPORAL_"))} | {
            "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "RELMAN_TASK_QUEUE": task_queue,
            "RELMAN_DATA_DIR": str(here.data),
            "RELMAN_CATALOG": str(here.catalog_path),
            "RELMAN_CMDB_URL": here.cmdb_url,
            "RELMAN_GRACEFUL_SHUTDOWN_SECONDS": "1",
        }
        # The worker starts while 1.1.0 is deployed (production's first deploy command: not held).
        first = WorkerProcess(env, tmp_path / "worker-1.log")
        worker_processes.append(first)
        await asyncio.gather(first.start(), here.deploy_directly("1.1.0"))
        old_version, old_pid = here.serving(Environment.PRODUCTION)
        release_id = f"release-sv-{uuid.uuid4().hex[:12]}"
        handle = await start_release(
            dev_env.client, task_queue, version("greeter-1.1.0", "1.1.1"), release_id
        )
        await approve(handle, Gate.REQUEST, "alice", "bob")
        await approve(handle, Gate.PLAN, "carol", "dave")

        async def held() -> None:
            assert (holds / "deploy.held").exists(), runs(holds)

        await assert_eventually(held, timeout=60, what="production deploy command held")

        # The deploy command is under way (held before it switches): the worker dies, and a
        # new one starts (its activity is retried once the dead one's heartbeat is overdue).
        await first.kill()
        (holds / "deploy.go").touch()
        second = WorkerProcess(env, tmp_path / "worker-2.log")
        worker_processes.append(second)
        second_starting = asyncio.create_task(second.start())

        # The orphaned command carries on alone and switches production. (It may then fail to
        # print its last line: the worker that read its output is gone.)
        async def orphan_done() -> None:
            assert any(line.startswith("done 2 ") for line in runs(holds)), runs(holds)

        await assert_eventually(orphan_done, timeout=30, what="the orphaned deploy command")
        assert here.serving(Environment.PRODUCTION)[0] == "1.1.1"
        assert here.mirror(Environment.PRODUCTION) == "1.1.0"  # never verified by relman
        await second_starting
        try:
            final = await asyncio.wait_for(final_status(handle), 90)
        except TimeoutError:
            raise AssertionError(f"release unfinished:\n{second.tail(20)}") from None

        assert final.outcome is Outcome.COMPLETED, final.reason
        # The retry ran the deploy command again (idempotent), then checked `current`.
        assert [line.split()[:2] for line in runs(holds) if line.startswith("start")] == [
            ["start", "1"],
            ["start", "2"],
            ["start", "3"],
        ]
        assert "done 3 0" in runs(holds)
        # Exactly one version runs: one program per environment, one process on each port.
        assert set(here.supervisord.programs()) == {"greeter-staging", "greeter-production"}
        new_version, new_pid = here.serving(Environment.PRODUCTION)
        assert (new_version, here.mirror(Environment.PRODUCTION)) == ("1.1.1", "1.1.1")
        assert new_pid != old_pid and old_version == "1.1.0"
        assert here.serving(Environment.STAGING)[0] == "1.1.1"
        production = [d for d in final.deploys if d.environment is Environment.PRODUCTION]
        assert [(d.version, d.previous_version) for d in production] == [("1.1.1", "1.1.0")]
