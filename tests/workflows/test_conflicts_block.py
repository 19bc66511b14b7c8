"""Conflict detection in `block` mode holds a release like a closed window, on the time-skipping
server with the real `CmdbActivities` over SQLite (every other activity a fake): another open
release of a CI that the release's CI depends on holds it, and closing that change lets it go
at the next re-check."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from relman.activities.cmdb import CmdbActivities
from relman.cmdb import CiSpec, CmdbStore
from relman.cmdb.conflicts import RECHECK
from relman.contracts import ChangeType, ConflictMode, Outcome, ReleaseStatus, ServiceProfile
from relman.results import final_status
from relman.workflows.release import ReleaseWorkflow
from tests.cmdb.helpers import close_input, open_input, rid
from tests.helpers import new_worker
from tests.workflows.fakes import FakeActivities, make_request, profile_for
from tests.workflows.test_release import start, until

pytestmark = pytest.mark.timeout(120)

DB = "payments-db"


def blocking(service: str) -> ServiceProfile:
    return profile_for(service).model_copy(update={"conflicts": ConflictMode.BLOCK})


def held_by(other: str) -> Callable[[ReleaseStatus], bool]:
    return lambda s: s.awaiting == ["window"] and s.window_waits[-1].window == f"conflict:{other}"


async def test_block_holds_the_release_while_a_related_ci_has_an_open_release(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    store = CmdbStore(f"sqlite:///{tmp_path / 'cmdb.sqlite'}")
    ci = profile_for("checkout").ci_name
    for name in (ci, DB):
        store.upsert_ci(CiSpec(name=name))
    store.add_relationship(ci, DB, "depends_on")
    store.open_change(open_input(service=DB))  # the database's own release, still open

    fake = FakeActivities(profile=blocking)
    activities = [*fake.all(cmdb=False), *CmdbActivities(store).all()]
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=activities) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        waiting = await until(ts_env, handle, held_by(rid(DB)))
        # Held before its first exposure step, and shown why.
        assert [s.name for s in waiting.stages] == []
        [conflict] = waiting.conflicts
        assert (conflict.ci, conflict.via, conflict.release_id) == (DB, f"depends_on {DB}", rid(DB))
        wait = waiting.window_waits[-1]
        assert wait.step == "allow-list" and wait.kind is None
        assert rid(DB) in wait.reason and f"depends_on {DB}" in wait.reason
        assert wait.reopens is not None and wait.reopens - wait.since <= RECHECK + RECHECK

        store.close_change(close_input(service=DB))  # the database's release ends
        final = await final_status(handle)
    store.close()
    assert final.outcome is Outcome.COMPLETED, final.reason
    held = final.window_waits[0]
    assert held.until is not None and held.until - held.since <= RECHECK * 3
    assert final.conflicts == []
