"""Deployment windows (the rule in relman/cmdb/store.py) and impacted CIs, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from relman.cmdb import CiSpec, CmdbNotFound, CmdbStore, WindowSpec
from relman.contracts import ChangeType, Environment, WindowDecision, WindowKind, WindowQuery
from tests.cmdb.helpers import T0, Clock, make_store

H = timedelta(hours=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CmdbStore]:
    with make_store(request.param, tmp_path, request, Clock()) as s:
        yield s


def window(
    name: str,
    kind: WindowKind,
    start: datetime,
    end: datetime,
    service: str | None = None,
    env: Environment | None = None,
) -> WindowSpec:
    return WindowSpec(
        name=name, kind=kind, service=service, environment=env, start=start, end=end,
        reason=f"{name} reason", created_by="erin",
    )  # fmt: skip


def ask(
    store: CmdbStore,
    at: datetime,
    change_type: ChangeType = ChangeType.NORMAL,
    service: str = "checkout",
    env: Environment = Environment.PRODUCTION,
) -> WindowDecision:
    return store.window_decision(
        WindowQuery(service=service, environment=env, at=at, change_type=change_type)
    )


def test_no_windows_is_open(store: CmdbStore) -> None:
    decision = ask(store, T0)
    assert decision.open and decision.next_open is None


def test_blackout_closes_every_change_type(store: CmdbStore) -> None:
    store.add_window(window("launch", WindowKind.BLACKOUT, T0, T0 + 4 * H))
    for change_type in ChangeType:
        decision = ask(store, T0 + H, change_type)
        assert not decision.open and decision.next_open == T0 + 4 * H
        assert "blackout 'launch'" in decision.reason
    assert ask(store, T0 + 4 * H).open  # half-open: the end is already open
    assert ask(store, T0 - timedelta(seconds=1)).open


def test_freeze_stops_normal_and_standard_not_emergency(store: CmdbStore) -> None:
    store.add_window(window("year-end", WindowKind.FREEZE, T0, T0 + 48 * H))
    assert not ask(store, T0 + H, ChangeType.NORMAL).open
    assert not ask(store, T0 + H, ChangeType.STANDARD).open
    emergency = ask(store, T0 + H, ChangeType.EMERGENCY)
    assert emergency.open and emergency.next_open is None


def test_chained_and_overlapping_windows(store: CmdbStore) -> None:
    store.add_window(window("a", WindowKind.BLACKOUT, T0, T0 + 2 * H))
    store.add_window(window("b", WindowKind.FREEZE, T0 + H, T0 + 5 * H))  # overlaps a
    store.add_window(window("c", WindowKind.BLACKOUT, T0 + 5 * H, T0 + 6 * H))  # starts as b ends
    store.add_window(window("d", WindowKind.BLACKOUT, T0 + 7 * H, T0 + 8 * H))  # a gap before it
    assert ask(store, T0).next_open == T0 + 6 * H
    # An emergency ignores the freeze, so the chain breaks after blackout a.
    assert ask(store, T0, ChangeType.EMERGENCY).next_open == T0 + 2 * H
    assert ask(store, T0 + 6 * H).open


def test_service_and_environment_scope(store: CmdbStore) -> None:
    store.add_window(window("checkout-only", WindowKind.BLACKOUT, T0, T0 + 2 * H, service="checkout"))
    store.add_window(window("staging", WindowKind.BLACKOUT, T0, T0 + 3 * H, env=Environment.STAGING))
    store.add_window(window("global", WindowKind.FREEZE, T0 + 2 * H, T0 + 4 * H))
    assert not ask(store, T0 + H, service="checkout").open
    assert ask(store, T0 + H, service="search").open
    assert not ask(store, T0 + H, service="search", env=Environment.STAGING).open
    # The global freeze follows the checkout blackout: closed until its end.
    assert ask(store, T0 + H, service="checkout").next_open == T0 + 4 * H
    assert not ask(store, T0 + 3 * H, service="search").open


def test_maintenance_is_listed_but_never_closes(store: CmdbStore) -> None:
    store.add_window(window("patching", WindowKind.MAINTENANCE, T0, T0 + 2 * H))
    decision = ask(store, T0 + H)
    assert decision.open and "patching" in decision.reason
    assert [w.name for w in store.list_windows(at=T0 + H)] == ["patching"]
    assert store.list_windows(at=T0 + 3 * H) == []


def test_impacted_cis_follow_relationships_transitively(store: CmdbStore) -> None:
    for name in ("host-1", "postgres", "payments", "checkout", "storefront", "search", "billing"):
        store.upsert_ci(CiSpec(name=name))
    store.add_relationship("postgres", "host-1", "runs_on")
    store.add_relationship("payments", "postgres")
    store.add_relationship("checkout", "payments")
    store.add_relationship("storefront", "checkout")
    store.add_relationship("search", "host-1", "runs_on")
    store.add_relationship("payments", "checkout")  # a cycle: must terminate
    store.add_relationship("billing", "storefront")
    names = [c.name for c in store.impacted_cis("host-1")]
    assert names == ["billing", "checkout", "payments", "postgres", "search", "storefront"]
    assert [c.name for c in store.impacted_cis("checkout")] == ["billing", "payments", "storefront"]
    assert store.impacted_cis("billing") == []
    with pytest.raises(CmdbNotFound):
        store.impacted_cis("nowhere")
