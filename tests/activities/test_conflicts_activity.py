"""The CHECK_WINDOW activity with conflict detection, end to end on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from relman.activities.cmdb import CmdbActivities
from relman.cmdb import CiSpec, CmdbStore, WindowSpec
from relman.cmdb.conflicts import RECHECK
from relman.contracts import ChangeType, ConflictMode, Environment, WindowKind, WindowQuery
from tests.cmdb.helpers import T0, Clock, close_input, make_store, open_input, rid

API, DB = "payments-api", "payments-db"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CmdbStore]:
    with make_store(request.param, tmp_path, request, Clock()) as s:
        for name in (API, DB):
            s.upsert_ci(CiSpec(name=name))
        s.add_relationship(API, DB, "depends_on")
        s.open_change(open_input(service=API))
        s.open_change(open_input(service=DB))
        yield s


def query(mode: ConflictMode) -> WindowQuery:
    return WindowQuery(
        service=API,
        environment=Environment.PRODUCTION,
        at=T0,
        change_type=ChangeType.NORMAL,
        release_id=rid(API),
        ci_name=API,
        conflicts=mode,
    )


async def test_warn_reports_the_release_on_the_related_ci_and_stays_open(store: CmdbStore) -> None:
    decision = await ActivityEnvironment().run(CmdbActivities(store).check_window, query(ConflictMode.WARN))
    assert decision.open
    [c] = decision.conflicts
    assert (c.ci, c.via, c.release_id) == (DB, f"depends_on {DB}", rid(DB))


async def test_block_closes_naming_the_other_release_until_it_closes(store: CmdbStore) -> None:
    acts, env = CmdbActivities(store), ActivityEnvironment()
    decision = await env.run(acts.check_window, query(ConflictMode.BLOCK))
    assert not decision.open and decision.window == f"conflict:{rid(DB)}"
    assert rid(DB) in decision.reason and f"depends_on {DB}" in decision.reason
    assert decision.next_open == T0 + RECHECK
    store.close_change(close_input(service=DB))
    again = await env.run(acts.check_window, query(ConflictMode.BLOCK))
    assert again.open and again.conflicts == []


async def test_off_lists_nothing(store: CmdbStore) -> None:
    decision = await ActivityEnvironment().run(CmdbActivities(store).check_window, query(ConflictMode.OFF))
    assert decision.open and decision.conflicts == []


async def test_block_by_a_blackout_on_the_related_service(store: CmdbStore) -> None:
    store.close_change(close_input(service=DB))
    store.add_window(
        WindowSpec(
            name="db-migration",
            kind=WindowKind.BLACKOUT,
            service=DB,
            start=T0 - timedelta(minutes=10),
            end=T0 + timedelta(hours=2),
            reason="schema migration",
            created_by="erin",
        )
    )
    decision = await ActivityEnvironment().run(CmdbActivities(store).check_window, query(ConflictMode.BLOCK))
    assert not decision.open and decision.window == "conflict:db-migration"
    assert decision.next_open == T0 + timedelta(hours=2)
    [c] = decision.conflicts
    assert (c.ci, c.window) == (DB, "db-migration") and "schema migration" in c.detail
