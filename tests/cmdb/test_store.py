"""The CMDB store on SQLite and PostgreSQL: exactly-once writes, records, errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from relman.cmdb import (
    CiSpec,
    CmdbConflict,
    CmdbInvalid,
    CmdbNotFound,
    CmdbStore,
    CmdbUnavailable,
    WindowSpec,
)
from relman.contracts import CloseCode, Criticality, Outcome, WindowKind
from tests.cmdb.helpers import BACKENDS, T0, Clock, close_input, make_store, open_input, rid


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[CmdbStore]:
    with make_store(request.param, tmp_path, request, clock) as s:
        yield s


def counts(store: CmdbStore) -> dict[str, int]:
    return {
        t: store.count(t)
        for t in ("configuration_item", "change", "ci_version", "approval", "review_record", "audit_log")
    }


# --- exactly once: every write twice with the same key -> one row -------------


def test_open_change_twice_is_one_row(store: CmdbStore) -> None:
    assert store.open_change(open_input()) is True
    assert store.open_change(open_input()) is False
    assert counts(store) == dict(
        configuration_item=1, change=1, ci_version=0, approval=0, review_record=0, audit_log=1
    )
    change = store.get_change(rid())
    assert change is not None and change.status == "requested" and change.ci == "checkout"
    ci = store.get_ci("checkout")
    assert ci is not None and ci.criticality == Criticality.HIGH


def test_update_change_twice_is_one_row(store: CmdbStore, clock: Clock) -> None:
    store.open_change(open_input())
    clock.advance(minutes=5)
    update = open_input(step="phase:testing", status="testing", note="tests running")
    assert store.update_change(update) is True
    assert store.update_change(update) is False
    assert store.count("audit_log") == 2 and store.count("change") == 1
    change = store.get_change(rid())
    assert change is not None
    assert (change.status, change.reason, change.requested_at) == ("testing", "tests running", T0)
    assert [e.action for e in store.audit(rid())] == ["change.open", "change.update"]


def test_close_change_twice_is_one_record(store: CmdbStore, clock: Clock) -> None:
    store.open_change(open_input())
    clock.advance(hours=6)
    assert store.close_change(close_input()) is True
    before = counts(store)
    assert store.close_change(close_input()) is False
    assert (
        counts(store)
        == before
        == dict(configuration_item=1, change=1, ci_version=1, approval=2, review_record=1, audit_log=2)
    )
    change = store.get_change(rid())
    assert change is not None
    assert change.status == "closed" and change.close_code == CloseCode.SUCCESSFUL
    assert change.closed_at == T0 + timedelta(hours=6)
    assert change.production_at == T0 + timedelta(hours=5)
    assert change.requested_at == T0  # kept from open, not overwritten by close
    assert [a.approver for a in change.approvals] == ["bob", "carol"]
    assert change.review is not None and change.review.kpis == {"error_rate": 0.002}
    assert change.review.feedback[0].by == "dave"
    ci = store.get_ci("checkout")
    assert ci is not None and ci.current_version == "2.4.1" and ci.criticality == Criticality.HIGH
    [version] = store.ci_versions("checkout")
    assert (version.version, version.artifact_digest, version.commit) == ("2.4.1", "d" * 64, "abc1234")
    close = store.audit(rid())[-1]
    assert close.action == "change.close" and close.detail["deployed_version"] == "2.4.1"


def test_close_under_another_key_upserts(store: CmdbStore) -> None:
    store.close_change(close_input())
    store.close_change(close_input(step="close-again", close_code=CloseCode.SUCCESSFUL_WITH_ISSUES))
    assert (
        counts(store)["change"] == 1 and counts(store)["approval"] == 2 and counts(store)["ci_version"] == 1
    )
    change = store.get_change(rid())
    assert change is not None and change.close_code == CloseCode.SUCCESSFUL_WITH_ISSUES
    assert store.count("audit_log") == 2


def test_rolled_back_close_keeps_previous_version(store: CmdbStore) -> None:
    store.close_change(close_input(version="2.4.0"))
    rollback = close_input(
        version="2.5.0", outcome=Outcome.ROLLED_BACK, close_code=CloseCode.ROLLED_BACK,
        failed_at=T0 + timedelta(hours=2), recovered_at=T0 + timedelta(hours=3), reason="health failed",
    )  # fmt: skip
    store.close_change(rollback)
    ci = store.get_ci("checkout")
    assert ci is not None and ci.current_version == "2.4.0"
    assert [v.version for v in store.ci_versions("checkout")] == ["2.4.0"]
    change = store.get_change(rid(version="2.5.0"))
    assert change is not None
    assert (change.close_code, change.reason, change.outcome) == (
        CloseCode.ROLLED_BACK,
        "health failed",
        "rolled_back",
    )


def test_update_after_close_does_not_reopen(store: CmdbStore) -> None:
    store.open_change(open_input())
    store.close_change(close_input())
    store.update_change(open_input(step="late", status="deploying"))
    change = store.get_change(rid())
    assert change is not None and change.status == "closed"


def test_upsert_ci_twice_and_optimistic_lock(store: CmdbStore) -> None:
    spec = CiSpec(
        name="payments-db", ci_class="database", owner="erin", criticality=Criticality.MISSION_CRITICAL
    )
    first = store.upsert_ci(spec, idempotency_key="catalog/payments-db/1")
    assert store.upsert_ci(spec, idempotency_key="catalog/payments-db/1") == first
    assert store.upsert_ci(spec) == first  # unchanged: nothing written
    assert store.count("configuration_item") == 1 and store.count("audit_log") == 1
    changed = store.upsert_ci(spec.model_copy(update={"description": "main db"}), expected_row_version=1)
    assert changed.row_version == 2 and changed.description == "main db"
    with pytest.raises(CmdbConflict):
        store.upsert_ci(spec.model_copy(update={"owner": "frank"}), expected_row_version=1)


def test_relationship_twice_is_one_row(store: CmdbStore) -> None:
    for name in ("checkout", "payments-db"):
        store.upsert_ci(CiSpec(name=name))
    assert store.add_relationship("checkout", "payments-db", idempotency_key="rel/1") is True
    assert store.add_relationship("checkout", "payments-db", idempotency_key="rel/1") is False
    assert store.add_relationship("checkout", "payments-db") is False  # same edge, other key
    assert store.count("relationship") == 1
    [rel] = store.relationships("payments-db")
    assert (rel.parent, rel.label, rel.child) == ("checkout", "depends on", "payments-db")
    with pytest.raises(CmdbInvalid, match="relationship type"):
        store.add_relationship("checkout", "payments-db", "owns")
    with pytest.raises(CmdbNotFound):
        store.add_relationship("checkout", "nowhere")


def test_window_add_remove_twice(store: CmdbStore) -> None:
    spec = WindowSpec(
        name="black-friday", kind=WindowKind.BLACKOUT, start=T0, end=T0 + timedelta(days=1), created_by="erin"
    )
    assert store.add_window(spec, idempotency_key="w/1") is True
    assert store.add_window(spec, idempotency_key="w/1") is False
    assert store.add_window(spec) is False  # unchanged
    assert store.count("deployment_window") == 1 and store.count("audit_log") == 1
    [stored] = store.list_windows()
    assert stored.id and stored.model_copy(update={"id": None}) == spec
    assert store.remove_window("black-friday", actor="erin", idempotency_key="w/rm") is True
    assert store.remove_window("black-friday", actor="erin", idempotency_key="w/rm") is False
    assert store.count("deployment_window") == 0 and store.count("audit_log") == 2


def test_append_audit_twice_and_append_only(store: CmdbStore) -> None:
    assert store.append_audit("k/1", actor="alice", action="note", subject="s", release_id="r-1") is True
    assert store.append_audit("k/1", actor="alice", action="note", subject="s", release_id="r-1") is False
    assert store.count("audit_log") == 1
    with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'mallory'"))
    with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log"))
    assert store.audit("r-1")[0].actor == "alice"


def test_secrets_are_masked(store: CmdbStore) -> None:
    store.append_audit(
        "k/s", actor="a", action="x", subject="s", release_id="r-1",
        detail={"password": "hunter2", "nested": {"api_key": "abc"}, "ok": 1},
    )  # fmt: skip
    assert store.audit("r-1")[0].detail == {"password": "***", "nested": {"api_key": "***"}, "ok": 1}


def test_concurrent_same_key_writes_once(store: CmdbStore) -> None:
    errors: list[BaseException] = []
    results: list[bool] = []

    def close() -> None:
        try:
            results.append(store.close_change(close_input()))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=close) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == [False] * 7 + [True]
    assert store.count("change") == 1 and store.count("audit_log") == 1 and store.count("approval") == 2


def test_list_changes_filters(store: CmdbStore, clock: Clock) -> None:
    store.open_change(open_input("checkout", "1.0.0"))
    clock.advance(days=1)
    store.open_change(open_input("search", "3.0.0"))
    assert [c.release_id for c in store.list_changes()] == [rid("checkout", "1.0.0"), rid("search", "3.0.0")]
    assert [c.service for c in store.list_changes(since=T0 + timedelta(hours=1))] == ["search"]
    assert [c.service for c in store.list_changes(service="checkout")] == ["checkout"]
    assert store.get_change("release-nope-1.0.0") is None
    assert [c.name for c in store.list_cis()] == ["checkout", "search"]


# --- errors ---------------------------------------------------------------------


def test_unreachable_postgres_is_a_clear_error() -> None:
    store = CmdbStore("postgresql+psycopg://relman:s3cret@127.0.0.1:1/cmdb", connect_timeout_s=2)
    with pytest.raises(CmdbUnavailable) as info:
        store.get_ci("checkout")
    message = str(info.value)
    assert "127.0.0.1:1/cmdb" in message and "unavailable" in message and "s3cret" not in message


def test_unusable_sqlite_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CmdbUnavailable, match="cannot create"):
        CmdbStore(f"sqlite:///{blocker}/sub/cmdb.db")
    store = CmdbStore(f"sqlite:///{tmp_path}")  # a directory, not a database file
    with pytest.raises(CmdbUnavailable, match="unavailable"):
        store.list_cis()


def test_unsupported_url() -> None:
    with pytest.raises(CmdbInvalid, match="unsupported"):
        CmdbStore("mysql://localhost/x")


def test_oversized_ci_name_is_invalid(store: CmdbStore) -> None:
    with pytest.raises(CmdbInvalid):
        store.close_change(close_input(ci_name="x" * 300))
