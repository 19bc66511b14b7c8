"""CMDB activities in an ActivityEnvironment, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from relman.activities.cmdb import CmdbActivities
from relman.cmdb import CmdbStore, WindowSpec
from relman.contracts import ChangeType, CloseCode, Environment, WindowKind, WindowQuery
from tests.cmdb.helpers import T0, Clock, close_input, make_store, open_input, rid


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CmdbStore]:
    with make_store(request.param, tmp_path, request, Clock()) as s:
        yield s


async def test_change_lifecycle_and_replays(store: CmdbStore) -> None:
    acts, env = CmdbActivities(store), ActivityEnvironment()
    for _ in range(2):  # a retried activity: same keys, same rows
        await env.run(acts.open_change, open_input())
        await env.run(acts.update_change, open_input(step="phase:deploying", status="deploying"))
        await env.run(acts.close_change, close_input())
    change = store.get_change(rid())
    assert change is not None and change.close_code == CloseCode.SUCCESSFUL
    assert [e.action for e in store.audit(rid())] == ["change.open", "change.update", "change.close"]
    assert store.count("change") == 1 and store.count("approval") == 2


async def test_check_window(store: CmdbStore) -> None:
    acts, env = CmdbActivities(store), ActivityEnvironment()
    store.add_window(
        WindowSpec(
            name="freeze", kind=WindowKind.FREEZE, start=T0, end=T0 + timedelta(days=1), created_by="erin"
        )
    )
    query = WindowQuery(
        service="checkout", environment=Environment.PRODUCTION, at=T0, change_type=ChangeType.NORMAL
    )
    decision = await env.run(acts.check_window, query)
    assert not decision.open and decision.next_open == T0 + timedelta(days=1)
    emergency = query.model_copy(update={"change_type": ChangeType.EMERGENCY})
    assert (await env.run(acts.check_window, emergency)).open


async def test_invalid_data_is_non_retryable(store: CmdbStore) -> None:
    acts = CmdbActivities(store)
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(acts.close_change, close_input(ci_name="x" * 300))
    assert info.value.non_retryable and info.value.type == "CmdbInvalid"


async def test_unreachable_database_is_retryable() -> None:
    acts = CmdbActivities(CmdbStore("postgresql+psycopg://postgres@127.0.0.1:1/none", connect_timeout_s=2))
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(acts.open_change, open_input())
    assert not info.value.non_retryable and info.value.type == "CmdbUnavailable"
    assert "127.0.0.1:1/none" in str(info.value)
