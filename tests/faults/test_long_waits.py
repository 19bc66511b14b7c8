"""Long waits on the time-skipping server: a CAB gate answered after 29 days of a 30-day deadline,
a 7-day review period, and a gate nobody answers. Histories stay small: every wait is one timer
(or one condition), never a polling loop."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from relman.activities.cmdb import CmdbActivities
from relman.cmdb.store import CmdbStore
from relman.contracts import CloseCode, Gate, GateState, GateTimeouts, Outcome, Phase
from relman.results import final_status
from relman.workflows.release import ReleaseWorkflow
from tests import people
from tests.faults.support import approve, profile, request_for, start_release, status
from tests.helpers import new_worker
from tests.workflows.fakes import FakeActivities

pytestmark = [pytest.mark.fault, pytest.mark.timeout(60)]

LONG = GateTimeouts(cab=timedelta(days=30), plan=timedelta(days=3))
HISTORY_LIMIT = 250


@pytest_asyncio.fixture
async def long_worker(ts_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[tuple[Worker, CmdbStore]]:
    store = CmdbStore(f"sqlite:///{tmp_path / 'cmdb.sqlite'}")
    cmdb = CmdbActivities(store)
    fakes = FakeActivities(
        profile=lambda service: profile(service, bake=3600, review=timedelta(days=7), timeouts=LONG)
    )
    activities: list[Callable[..., Any]] = [
        *fakes.all(cmdb=False),
        *cmdb.all(),
    ]
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=activities) as worker:
        yield worker, store
    store.close()


async def history_counts(handle: WorkflowHandle) -> tuple[int, Counter[str]]:
    history = await handle.fetch_history()
    kinds = Counter(EventType.Name(e.event_type) for e in history.events)
    return len(history.events), kinds


async def test_cab_answered_after_29_days_and_a_7_day_review_complete(
    ts_env: WorkflowEnvironment, long_worker: tuple[Worker, CmdbStore]
) -> None:
    worker, store = long_worker
    handle = await start_release(
        ts_env.client,
        worker.task_queue,
        request_for("longwait"),
        f"release-long-{uuid.uuid4().hex[:8]}",
        clock=people.now,  # signed on the time-skipping server's clock
    )
    await approve(handle, Gate.REQUEST)  # waits for the gate to open, votes nobody yet
    opened = (await status(handle)).gates[Gate.REQUEST]
    assert opened.deadline is not None
    await ts_env.sleep(timedelta(days=29))
    waiting = await status(handle)
    assert (waiting.phase, waiting.gates[Gate.REQUEST].state) == (Phase.AWAITING_CAB, GateState.OPEN)
    await approve(handle, Gate.REQUEST, "alice", "bob", clock=people.now)
    await approve(handle, Gate.PLAN, "carol", "dave", clock=people.now)
    final = await final_status(handle)

    assert final.outcome is Outcome.COMPLETED, final.reason
    request_gate = final.gates[Gate.REQUEST]
    assert request_gate.closed_at is not None and opened.deadline is not None
    waited = request_gate.closed_at - (opened.deadline - LONG.cab)
    assert timedelta(days=29) <= waited < timedelta(days=29, hours=1), waited
    at = {t.phase: t.at for t in final.history}
    review = at[Phase.CLOSING] - at[Phase.REVIEWING]
    assert timedelta(days=7) <= review < timedelta(days=7, hours=1), review
    bakes = at[Phase.DEPLOYING] - at[Phase.DARK_LAUNCH]
    assert bakes >= timedelta(hours=3)  # three one-hour bakes, really waited

    change = store.get_change(handle.id)
    assert change is not None and change.close_code is CloseCode.SUCCESSFUL
    events, kinds = await history_counts(handle)
    # One timer per wait (gate, three bakes, review): no polling loop grows the history.
    assert events < HISTORY_LIMIT, (events, kinds)
    assert kinds["EVENT_TYPE_TIMER_STARTED"] <= 8, kinds
    print(f"\n29-day gate + 7-day review: {events} events, {dict(kinds)}")


async def test_cab_gate_unanswered_for_30_days_expires_with_a_record(
    ts_env: WorkflowEnvironment, long_worker: tuple[Worker, CmdbStore]
) -> None:
    worker, store = long_worker
    handle = await start_release(
        ts_env.client,
        worker.task_queue,
        request_for("nobody"),
        f"release-expire-{uuid.uuid4().hex[:8]}",
        clock=people.now,
    )
    final = await final_status(handle)  # time skips the whole 30 days

    assert final.outcome is Outcome.EXPIRED
    gate = final.gates[Gate.REQUEST]
    assert gate.state is GateState.EXPIRED and gate.closed_at is not None and gate.deadline is not None
    assert gate.closed_at >= gate.deadline
    change = store.get_change(handle.id)
    assert change is not None and change.close_code is CloseCode.EXPIRED
    events, kinds = await history_counts(handle)
    assert events < 60, (events, kinds)
