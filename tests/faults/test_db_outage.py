"""Database outage: PostgreSQL unreachable for 30 s while releases close.

The CMDB (the real `CmdbActivities` on PostgreSQL, in a schema of its own) is reached through
a proxy we control. The first close that reaches the database commits, but its answer is
lost and at that instant the database becomes unreachable (open connections cut, new ones
refused) for 30 s. Every CMDB activity retries; afterwards every record exists exactly once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from relman.activities.cmdb import CmdbActivities
from relman.client import ReleaseClient
from relman.cmdb.store import CmdbStore
from relman.contracts import CloseCode, Gate, Outcome, Phase, ReleaseStatus
from relman.progress import describe_step
from relman.results import final_status
from relman.workflows.release import ReleaseWorkflow
from tests import people
from tests.faults.support import (
    TcpProxy,
    approve,
    profile,
    request_for,
    start_release,
    wait_status,
)
from tests.helpers import new_worker
from tests.workflows.fakes import FakeActivities

pytestmark = [pytest.mark.fault, pytest.mark.timeout(150)]

RELEASES = 10
OUTAGE_SECONDS = 30.0


async def close_attempts(handle: WorkflowHandle[Any, Any]) -> int:
    """The attempt that completed the release's `close_change` activity."""
    history = await handle.fetch_history()
    names = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    return max(
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and names[e.activity_task_started_event_attributes.scheduled_event_id] == "close_change"
    )


async def phases_of(handles: list[WorkflowHandle[Any, Any]]) -> list[Phase]:
    return [(await wait_status(h, lambda s: True)).phase for h in handles]


async def closes_shown_retrying(client: ReleaseClient, handles: list[WorkflowHandle[Any, Any]]) -> None:
    """While the database is down, `relman status` shows each stuck close with its attempt and error."""
    steps = [s for h in handles for s in (await client.progress(h.id))[1] if s.activity == "close_change"]
    retrying = [s for s in steps if s.attempt > 1 and s.last_failure]
    assert len(retrying) >= RELEASES // 2, steps
    line = describe_step(retrying[0].model_copy(update={"state": "scheduled"}), datetime.now(UTC))
    assert f"attempt {retrying[0].attempt}" in line and "last error: " in line, line


async def test_postgres_unreachable_for_30s_while_releases_close(
    dev_env: WorkflowEnvironment, pg_url: str
) -> None:
    schema = f"faults_{uuid.uuid4().hex[:10]}"
    direct = CmdbStore(pg_url, schema=schema)
    direct.count("change")  # creates the schema before the worker uses it
    proxy = await TcpProxy(make_url(pg_url).port or 5432).start()
    proxied_url = make_url(pg_url).set(port=proxy.port).render_as_string(hide_password=False)
    store = CmdbStore(proxied_url, schema=schema)
    cmdb = CmdbActivities(store)
    fakes = FakeActivities(profile=lambda service: profile(service, review=timedelta(seconds=2)))
    activities: list[Callable[..., Any]] = [
        *fakes.all(cmdb=False),
        *cmdb.all(),
    ]
    outage_at: list[float] = []

    def go_down() -> None:
        outage_at.append(time.monotonic())
        proxy.outage()

    try:
        async with new_worker(dev_env.client, ReleaseWorkflow, activities=activities) as worker:
            tag = uuid.uuid4().hex[:6]
            handles = [
                await start_release(
                    dev_env.client, worker.task_queue, request_for(f"db-{i:02d}"), f"release-db-{i:02d}-{tag}"
                )
                for i in range(RELEASES)
            ]
            proxy.on_reply_lost = go_down
            lost = proxy.lose_reply_after("/close")
            await asyncio.gather(*(approve(h, Gate.REQUEST, "alice", "bob") for h in handles))
            await asyncio.gather(*(approve(h, Gate.PLAN, "carol", "dave") for h in handles))

            await asyncio.wait_for(lost.wait(), 60)
            # The database is gone: releases pile up in closing, none can finish. A close
            # on another connection may have been answered just before the cut (a busy
            # machine widens that window); the one whose answer was lost committed but
            # cannot know it.
            await asyncio.sleep(OUTAGE_SECONDS / 2)
            mid_outage = await phases_of(handles)
            committed = direct.count("ci_version")
            closed = mid_outage.count(Phase.CLOSED)
            assert committed >= 1 and closed <= committed - 1, (committed, mid_outage)
            assert mid_outage.count(Phase.CLOSING) >= RELEASES // 2, mid_outage
            reader = ReleaseClient(dev_env.client, worker.task_queue, signer=people.PEOPLE.__getitem__)
            await closes_shown_retrying(reader, handles)
            await asyncio.sleep(outage_at[0] + OUTAGE_SECONDS - 1 - time.monotonic())
            assert await phases_of(handles) == mid_outage  # nothing moved while it was down
            await asyncio.sleep(outage_at[0] + OUTAGE_SECONDS - time.monotonic())
            await proxy.restore()
            restored = time.monotonic()
            finals: list[ReleaseStatus] = await asyncio.wait_for(
                asyncio.gather(*(final_status(h) for h in handles)), 60
            )
            recovered = time.monotonic() - restored
            attempts = [await close_attempts(h) for h in handles]
    finally:
        await proxy.close()
        store.close()

    try:
        assert [f.outcome for f in finals] == [Outcome.COMPLETED] * RELEASES, [f.reason for f in finals]
        # Every record exactly once, by key.
        assert direct.count("change") == RELEASES
        assert direct.count("ci_version") == RELEASES
        assert direct.count("review_record") == RELEASES
        assert direct.count("approval") == 4 * RELEASES
        assert direct.count("environment_lease") == 0
        with direct.engine.connect() as conn:
            keys = conn.execute(
                text(f'SELECT idempotency_key, count(*) FROM "{schema}".audit_log GROUP BY idempotency_key')
            ).all()
        per_key: dict[str, int] = {str(k): int(n) for k, n in keys}
        assert set(per_key.values()) == {1}
        for h in handles:
            assert per_key.get(f"{h.id}/close") == 1
            assert per_key.get(f"{h.id}/open") == 1
            assert per_key.get(f"{h.id}/authorized") == 1
            change = direct.get_change(h.id)
            assert change is not None
            assert (change.status, change.close_code) == ("closed", CloseCode.SUCCESSFUL)
        # The CMDB activities really retried through the outage: all but those closed before it.
        assert sum(a > 1 for a in attempts) >= RELEASES - closed, attempts
        print(
            f"\noutage {OUTAGE_SECONDS:.0f}s: {RELEASES} releases closed {recovered:.1f}s after the database "
            f"returned; close attempts {attempts}; audit keys {len(per_key)}, each once"
        )
    finally:
        direct.drop()
        direct.close()
