"""Conflict detection over the CMDB's relationships, on SQLite and PostgreSQL, and its pure rule."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from relman.cmdb import CiSpec, CmdbStore, WindowSpec
from relman.cmdb.conflicts import MAX_CONFLICTS, RECHECK, apply_conflicts, find_conflicts
from relman.contracts import (
    ChangeType,
    Conflict,
    ConflictMode,
    Environment,
    WindowDecision,
    WindowKind,
    WindowQuery,
)
from tests.cmdb.helpers import T0, Clock, close_input, make_store, open_input, rid

API, DB = "payments-api", "payments-db"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CmdbStore]:
    with make_store(request.param, tmp_path, request, Clock()) as s:
        for name in (API, DB, "search"):
            s.upsert_ci(CiSpec(name=name))
        s.add_relationship(API, DB, "depends_on")
        yield s


def query(
    service: str = API, change_type: ChangeType = ChangeType.NORMAL, mode: ConflictMode = ConflictMode.WARN
) -> WindowQuery:
    return WindowQuery(
        service=service,
        environment=Environment.PRODUCTION,
        at=T0,
        change_type=change_type,
        release_id=rid(service),
        ci_name=service,
        conflicts=mode,
    )


def blackout(service: str | None, kind: WindowKind = WindowKind.BLACKOUT, hours: int = 2) -> WindowSpec:
    return WindowSpec(
        name=f"{kind.value}-{service or 'all'}",
        kind=kind,
        service=service,
        start=T0 - timedelta(hours=1),
        end=T0 + timedelta(hours=hours),
        reason="quarter end",
        created_by="erin",
    )


def test_an_open_release_of_a_ci_it_depends_on_is_a_conflict_both_ways(store: CmdbStore) -> None:
    store.open_change(open_input(service=DB))
    store.open_change(open_input(service=API))
    [c] = find_conflicts(store, query(API)).items
    assert (c.ci, c.via, c.release_id, c.window) == (DB, f"depends_on {DB}", rid(DB), None)
    assert rid(DB) in c.detail and "requested" in c.detail
    # Seen from the database's release: the API that depends on it.
    [back] = find_conflicts(store, query(DB)).items
    assert (back.ci, back.via, back.release_id) == (API, f"{API} depends_on {DB}", rid(API))


def test_the_asking_release_a_closed_change_and_an_unrelated_ci_are_no_conflict(store: CmdbStore) -> None:
    store.open_change(open_input(service=API))  # the asking release itself
    store.open_change(open_input(service="search"))  # no relationship to the API
    store.open_change(open_input(service=DB))
    store.close_change(close_input(service=DB))  # related, but closed
    assert find_conflicts(store, query(API)).items == []


def test_another_open_release_of_the_same_ci_is_a_conflict_without_via(store: CmdbStore) -> None:
    store.open_change(open_input(service=API, version="2.4.0"))
    [c] = find_conflicts(store, query(API)).items
    assert (c.ci, c.via, c.release_id) == (API, "", rid(API, "2.4.0"))


def test_a_blackout_on_a_related_service_is_a_conflict(store: CmdbStore) -> None:
    store.add_window(blackout(DB, hours=3))
    found = find_conflicts(store, query(API))
    [c] = found.items
    assert (c.ci, c.via, c.window, c.release_id) == (DB, f"depends_on {DB}", f"blackout-{DB}", None)
    assert "quarter end" in c.detail
    assert found.windows_end == T0 + timedelta(hours=3)


def test_only_closing_windows_of_related_services_count(store: CmdbStore) -> None:
    store.add_window(blackout(None))  # global: in the plain decision already
    store.add_window(blackout("search"))  # unrelated service
    store.add_window(blackout(API))  # the release's own service: in the plain decision
    store.add_window(blackout(DB, kind=WindowKind.MAINTENANCE))  # never closes
    store.add_window(blackout(DB, kind=WindowKind.FREEZE))  # closes all but emergencies
    assert find_conflicts(store, query(API, ChangeType.EMERGENCY)).items == []
    [c] = find_conflicts(store, query(API)).items
    assert c.window == f"freeze-{DB}"


def test_a_window_on_the_service_of_changes_to_a_related_ci(store: CmdbStore) -> None:
    # The database CI is changed by releases of the "ledger" service: its windows count.
    store.open_change(open_input(service="ledger").model_copy(update={"ci_name": DB}))
    store.close_change(close_input(service="ledger", ci_name=DB))
    store.add_window(blackout("ledger"))
    [c] = find_conflicts(store, query(API)).items
    assert (c.ci, c.window) == (DB, "blackout-ledger")


def test_warn_lists_and_stays_open_block_closes_naming_the_release(store: CmdbStore) -> None:
    store.open_change(open_input(service=DB))
    found = find_conflicts(store, query(API))
    base = store.window_decision(query(API))
    warned = apply_conflicts(base, found.items, ConflictMode.WARN, at=T0)
    assert warned.open and [c.release_id for c in warned.conflicts] == [rid(DB)]
    blocked = apply_conflicts(base, found.items, ConflictMode.BLOCK, at=T0)
    assert not blocked.open and blocked.kind is None
    assert blocked.window == f"conflict:{rid(DB)}"
    assert rid(DB) in blocked.reason and f"depends_on {DB}" in blocked.reason
    assert "\n" not in blocked.reason
    assert blocked.next_open == T0 + RECHECK
    assert apply_conflicts(base, found.items, ConflictMode.OFF, at=T0) == base


def test_block_by_a_related_window_waits_for_its_end(store: CmdbStore) -> None:
    store.add_window(blackout(DB, hours=3))
    found = find_conflicts(store, query(API))
    base = store.window_decision(query(API))
    assert base.open
    blocked = apply_conflicts(base, found.items, ConflictMode.BLOCK, at=T0, windows_end=found.windows_end)
    assert not blocked.open and blocked.window == f"conflict:blackout-{DB}"
    assert blocked.next_open == T0 + timedelta(hours=3)


# --- the pure rule ---------------------------------------------------------------------

OPEN = WindowDecision(open=True, reason="open")
RELEASE = Conflict(ci=DB, via=f"depends_on {DB}", release_id="release-db-1", detail="open")
WINDOW = Conflict(ci=DB, via=f"depends_on {DB}", window="db-freeze", detail="freeze")


def test_off_lists_nothing_even_when_given_conflicts() -> None:
    assert apply_conflicts(OPEN, [RELEASE], ConflictMode.OFF, at=T0) == OPEN
    listed = OPEN.model_copy(update={"conflicts": [RELEASE]})
    assert apply_conflicts(listed, [RELEASE], ConflictMode.OFF, at=T0).conflicts == []


def test_block_without_conflicts_is_the_decision() -> None:
    assert apply_conflicts(OPEN, [], ConflictMode.BLOCK, at=T0) == OPEN


def test_a_window_that_already_closes_stays_the_reason() -> None:
    closed = WindowDecision(open=False, window="freeze", reason="freeze", next_open=T0 + timedelta(days=1))
    out = apply_conflicts(closed, [RELEASE], ConflictMode.BLOCK, at=T0)
    assert (out.open, out.window, out.next_open) == (False, "freeze", T0 + timedelta(days=1))
    assert out.conflicts == [RELEASE]


def test_a_release_conflict_rechecks_soon_even_beside_a_long_window() -> None:
    out = apply_conflicts(
        OPEN, [RELEASE, WINDOW], ConflictMode.BLOCK, at=T0, windows_end=T0 + timedelta(days=2)
    )
    assert out.next_open == T0 + RECHECK and "1 more" in out.reason
    early = apply_conflicts(OPEN, [WINDOW], ConflictMode.BLOCK, at=T0, windows_end=T0 + timedelta(minutes=1))
    assert early.next_open == T0 + RECHECK  # never sooner than the re-check


def test_at_most_max_conflicts_are_listed() -> None:
    many = [RELEASE.model_copy(update={"release_id": f"release-db-{i}"}) for i in range(50)]
    assert len(apply_conflicts(OPEN, many, ConflictMode.WARN, at=T0).conflicts) == MAX_CONFLICTS


def test_find_is_bounded(store: CmdbStore) -> None:
    for i in range(MAX_CONFLICTS + 3):
        store.open_change(open_input(service=DB, version=f"1.0.{i}"))
    found = find_conflicts(store, query(API))
    assert len(found.items) == MAX_CONFLICTS
