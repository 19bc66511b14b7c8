"""Temporal server killed and restarted (dev server, SQLite file) under 110 open releases.

100 releases wait at their CAB gate and 10 are baking in their dark launch when the server
dies (SIGKILL). It comes back on the same port and file; the same worker reconnects. Every
release resumes and finishes; none is lost or duplicated (by visibility and by CMDB rows).
Adapters are instant except the CMDB, which is the real one on SQLite.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from relman.activities.cmdb import CmdbActivities
from relman.cmdb.store import CmdbStore
from relman.contracts import Activity, Gate, Outcome, Phase, ReleaseStatus, ServiceProfile
from relman.results import final_status
from relman.workflows.policy import build_plan
from relman.workflows.release import ReleaseWorkflow
from tests.faults.support import (
    KillableDevServer,
    approve,
    profile,
    request_for,
    signal_approval,
    start_release,
    wait_status,
)
from tests.helpers import assert_eventually, new_worker
from tests.workflows.fakes import FakeActivities

pytestmark = [pytest.mark.fault, pytest.mark.timeout(240)]

WAITING, ROLLING = 100, 10


def profiles(service: str) -> ServiceProfile:
    if service.startswith("roll-"):
        return profile(service, bake=4)
    return profile(service, stages=1)  # one exposure step: the restart is what is under test


async def count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def test_server_killed_and_restarted_under_110_open_releases(tmp_path: Path) -> None:
    server = KillableDevServer(tmp_path / "temporal.db")
    store = CmdbStore(f"sqlite:///{tmp_path / 'cmdb.sqlite'}")
    cmdb = CmdbActivities(store)
    fakes = FakeActivities(profile=profiles)
    activities: list[Callable[..., Any]] = [
        *fakes.all(cmdb=False),
        *cmdb.all(),
    ]
    try:
        client = await server.start()
        async with new_worker(client, ReleaseWorkflow, activities=activities) as worker:
            ours = f"TaskQueue = '{worker.task_queue}'"
            tag = uuid.uuid4().hex[:6]
            waiting = [f"gate-{i:03d}" for i in range(WAITING)]
            rolling = [f"roll-{i:02d}" for i in range(ROLLING)]
            handles = {
                service: await start_release(
                    client, worker.task_queue, request_for(service), f"release-{service}-{tag}"
                )
                for service in rolling + waiting
            }
            for service in rolling:
                await approve(handles[service], Gate.REQUEST, "alice", "bob")
                await approve(handles[service], Gate.PLAN, "carol", "dave")
            for service in rolling:
                await wait_status(handles[service], lambda s: s.phase is Phase.DARK_LAUNCH, timeout=60)

            async def all_waiting_at_cab() -> None:
                at_cab = await count(client, f"{ours} AND ReleasePhase = 'awaiting_cab'")
                assert at_cab == WAITING, at_cab

            async def all_rolling() -> None:
                assert await count(client, f"{ours} AND ReleasePhase = 'dark_launch'") == ROLLING

            await assert_eventually(all_waiting_at_cab, timeout=30, interval=0.2)
            await assert_eventually(all_rolling, timeout=10, interval=0.2)

            server.kill()
            down = time.monotonic()
            client = await server.start()  # same port, same SQLite file
            restart = time.monotonic() - down

            assert await count(client, f"{ours} AND ExecutionStatus = 'Running'") == WAITING + ROLLING
            handles = {
                s: client.get_workflow_handle_for(ReleaseWorkflow.run, h.id) for s, h in handles.items()
            }
            # Approvals by signal, as any Temporal client can send them; the plan's hash is the
            # plan the workflow builds from the request and the catalog profile.
            await asyncio.gather(
                *(signal_approval(handles[s], Gate.REQUEST, request_for(s).content_hash()) for s in waiting)
            )

            async def all_at_plan_gate() -> None:
                at_plan = await count(client, f"{ours} AND ReleasePhase = 'awaiting_plan_approval'")
                assert at_plan == WAITING, at_plan

            await assert_eventually(all_at_plan_gate, timeout=60, interval=0.2)
            await asyncio.gather(
                *(
                    signal_approval(
                        handles[s], Gate.PLAN, build_plan(request_for(s), profiles(s)).content_hash()
                    )
                    for s in waiting
                )
            )
            approved = time.monotonic() - down
            finals: list[ReleaseStatus] = await asyncio.wait_for(
                asyncio.gather(*(final_status(h) for h in handles.values())), 120
            )

            completed = time.monotonic() - down

            async def all_completed() -> None:
                done = await count(client, f"{ours} AND ExecutionStatus = 'Completed'")
                assert done == WAITING + ROLLING, done

            await assert_eventually(all_completed, timeout=20, interval=0.2)
            listed = [w async for w in client.list_workflows(f"{ours} AND WorkflowType = 'ReleaseWorkflow'")]
    finally:
        server.stop()
        store.close()

    total = WAITING + ROLLING
    assert [f.outcome for f in finals] == [Outcome.COMPLETED] * total, {f.reason for f in finals}
    # Nothing lost, nothing duplicated: one execution per release id, each completed once.
    assert len(listed) == total
    assert sorted(w.id for w in listed) == sorted(h.id for h in handles.values())
    assert {w.status for w in listed} == {WorkflowExecutionStatus.COMPLETED}
    # The CMDB saw each release once: one change, one close, one CI version each.
    store = CmdbStore(f"sqlite:///{tmp_path / 'cmdb.sqlite'}")
    try:
        assert store.count("change") == total
        assert store.count("ci_version") == total
        assert store.count("review_record") == total
        for h in handles.values():
            keys = [e.idempotency_key for e in store.audit(h.id)]
            assert keys == [f"{h.id}/open", f"{h.id}/authorized", f"{h.id}/close"], keys
    finally:
        store.close()
    deploys = [k for (name, k), _ in fakes.keys.items() if name == Activity.DEPLOY.value]
    assert len(deploys) == 2 * total
    print(
        f"\nserver down and back in {restart:.1f}s; {WAITING} gated + {ROLLING} rolling releases all "
        f"approved {approved:.1f}s and completed {completed:.1f}s after the kill; "
        f"{len(listed)} executions listed; max calls per activity key {max(fakes.keys.values())}"
    )
