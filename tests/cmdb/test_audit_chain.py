"""The audit log's hash chain: the pure checks, then tampering on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, text

from relman.cmdb import CmdbStore
from relman.cmdb.audit_chain import GENESIS, ChainRow, canonical, check_chain, row_hash
from relman.cmdb.models import _PG_TRIGGER, _SQLITE_TRIGGERS, Json, UtcDateTime
from tests.cmdb.helpers import BACKENDS, T0, Clock, close_input, make_store, open_input, rid

ROOT = Path(__file__).resolve().parents[2]

# --- pure: the chain without a database -----------------------------------------


def row(id: int, **kw: object) -> ChainRow:
    fields: dict[str, object] = dict(
        id=id,
        at=T0 + timedelta(seconds=id),
        actor="alice",
        action="change.open",
        subject=f"release-{id}",
        release_id=f"release-{id}",
        detail={"status": "requested", "n": id},
        idempotency_key=f"release-{id}/open",
    )
    fields.update(kw)
    return ChainRow(**fields)  # type: ignore[arg-type]


def sealed(rows: list[ChainRow]) -> list[ChainRow]:
    """`rows` chained as the store writes them."""
    out, prev = [], GENESIS
    for r in rows:
        h = row_hash(r, prev)
        out.append(dataclasses.replace(r, prev_hash=prev, row_hash=h))
        prev = h
    return out


def test_intact_chain() -> None:
    rows = sealed([row(1), row(2), row(3)])
    result = check_chain(rows)
    assert result.ok and result.rows == 3 and result.legacy_rows == 0
    assert result.first_broken_id is None and result.head_hash == rows[-1].row_hash
    assert rows[0].prev_hash == GENESIS and rows[1].prev_hash == rows[0].row_hash


def test_empty_log_is_intact() -> None:
    assert check_chain([]).model_dump() == dict(
        ok=True, rows=0, legacy_rows=0, first_broken_id=None, reason="", head_hash=None, anchors=0
    )


def test_encoding_is_pinned() -> None:
    """Changing the canonical encoding would break every chain already written."""
    r = row(1)
    assert canonical(r, GENESIS) == (
        b'{"action":"change.open","actor":"alice","at":"2025-03-03T09:00:01.000000Z",'
        b'"detail":{"n":1,"status":"requested"},"id":1,"idempotency_key":"release-1/open",'
        b'"prev_hash":"' + GENESIS.encode() + b'","release_id":"release-1","subject":"release-1"}'
    )
    assert row_hash(r, GENESIS) == "d89ac5b46cbc39dc3371368ac7a80a0eb04a1811e53377d3ad8f99eb11d34447"


def test_times_and_numbers_hash_as_the_database_returns_them() -> None:
    r = row(1, at=datetime(2025, 3, 3, 10, 0, tzinfo=timezone(timedelta(hours=1))))
    assert row_hash(r, GENESIS) == row_hash(row(1, at=datetime(2025, 3, 3, 9, 0)), GENESIS)
    # jsonb hands 1e16 back as an int and keeps 1.0; tuples come back as lists.
    assert row_hash(row(1, detail={"x": 1e16, "y": 1.0}), GENESIS) == row_hash(
        row(1, detail={"x": 10**16, "y": 1}), GENESIS
    )
    assert row_hash(row(1, detail={"t": (1, 2)}), GENESIS) == row_hash(row(1, detail={"t": [1, 2]}), GENESIS)
    assert row_hash(row(1, detail={"x": 0.5}), GENESIS) != row_hash(row(1, detail={"x": 1}), GENESIS)
    # Stored JSON has string keys, sorted as strings: 10 before 9.
    assert row_hash(row(1, detail={9: "a", 10: None, True: 1}), GENESIS) == row_hash(
        row(1, detail={"10": None, "9": "a", "true": 1}), GENESIS
    )


@pytest.mark.parametrize(
    "change",
    [
        {"actor": "mallory"},
        {"detail": {"status": "approved", "n": 2}},
        {"at": T0},
        {"release_id": None},
        {"idempotency_key": "other"},
    ],
)
def test_a_changed_row_is_named(change: dict[str, object]) -> None:
    rows = sealed([row(1), row(2), row(3)])
    rows[1] = dataclasses.replace(rows[1], **change)  # type: ignore[arg-type]
    result = check_chain(rows)
    assert (result.ok, result.first_broken_id, result.rows) == (False, 2, 1)
    assert "changed" in result.reason and result.head_hash == rows[0].row_hash


def test_a_deleted_row_breaks_the_next_link() -> None:
    rows = sealed([row(1), row(2), row(3), row(4)])
    result = check_chain([rows[0], rows[1], rows[3]])
    assert (result.ok, result.first_broken_id) == (False, 4)
    assert "prev_hash does not match row 2's hash" in result.reason and "deleted" in result.reason
    first_gone = check_chain(rows[1:])
    assert (first_gone.first_broken_id, first_gone.rows) == (2, 0) and "genesis" in first_gone.reason


def test_reordered_and_inserted_rows_are_named() -> None:
    rows = sealed([row(1), row(2), row(3)])
    # Swapped contents, each row keeping its id: the hash covers the id.
    swapped = [rows[0], dataclasses.replace(rows[2], id=2), dataclasses.replace(rows[1], id=3)]
    assert check_chain(swapped).first_broken_id == 2
    forged = sealed([row(1), row(2), row(3)])[2]  # a well-formed row of another chain
    result = check_chain([rows[0], rows[1], dataclasses.replace(forged, id=3, actor="mallory"), *rows[2:]])
    assert (result.first_broken_id, result.rows) == (3, 2)
    rehashed = dataclasses.replace(rows[1], actor="mallory")
    rehashed = dataclasses.replace(rehashed, row_hash=row_hash(rehashed, rehashed.prev_hash or ""))
    # A row rewritten with a fresh hash shows at the next link.
    result = check_chain([rows[0], rehashed, rows[2]])
    assert result.first_broken_id == 3 and "row 2 was rewritten" in result.reason


def test_legacy_rows_form_a_prefix_only() -> None:
    legacy = [row(1), row(2)]
    chained = sealed([row(3), row(4)])
    result = check_chain([*legacy, *chained])
    assert (result.ok, result.rows, result.legacy_rows) == (True, 2, 2)
    late = check_chain([*legacy, chained[0], row(5)])
    assert (late.ok, late.first_broken_id, late.legacy_rows) == (False, 5, 2)
    assert "no hash" in late.reason
    stripped = dataclasses.replace(chained[0], prev_hash=None, row_hash=None)
    # Erasing the first chained rows' hashes makes them look legacy; the next link says so.
    assert check_chain([*legacy, stripped, chained[1]]).first_broken_id == 4


# --- the store on SQLite and PostgreSQL -------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[CmdbStore]:
    with make_store(request.param, tmp_path, request, clock) as s:
        yield s


def write_records(store: CmdbStore, clock: Clock) -> None:
    """Real change records: open, update and close two releases, and a note."""
    for version in ("1.0.0", "1.1.0"):
        store.open_change(open_input(version=version))
        clock.advance(minutes=5)
        store.update_change(open_input(version=version, step="phase:testing", status="testing", note="ok"))
        clock.advance(minutes=5)
        store.close_change(close_input(version=version))
        clock.advance(minutes=5)
    # Values the database may spell differently on the way back: floats, keys, non-ASCII.
    detail = {"kpi": 0.25, "big": 1e16, "one": 1.0, "by": {7: "José"}, "steps": ("a", "b")}
    store.append_audit("note/1", actor="bob", action="note", subject="checkout", detail=detail)


def tamper(store: CmdbStore, sql: str) -> None:
    """Run `sql` around the append-only triggers, as someone with the database's password can."""
    with store.engine.begin() as conn:
        if store.dialect == "sqlite":
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_delete"))
            conn.execute(text(sql))
        else:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            conn.execute(text(sql))
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))


def audit_ids(store: CmdbStore) -> list[int]:
    with store.engine.connect() as conn:
        return list(conn.execute(text("SELECT id FROM audit_log ORDER BY id")).scalars())


def test_store_writes_an_intact_chain(store: CmdbStore, clock: Clock) -> None:
    write_records(store, clock)
    result = store.verify_audit()
    assert result.ok and result.rows == store.count("audit_log") == 7 and result.legacy_rows == 0
    # Replays still insert nothing and keep the chain intact.
    assert store.close_change(close_input(version="1.0.0")) is False
    assert store.append_audit("note/1", actor="bob", action="note", subject="checkout") is False
    again = store.verify_audit()
    assert again.ok and again.rows == 7 and again.head_hash == result.head_hash


def detail_edit(dialect: str, id: int) -> str:
    if dialect == "sqlite":
        return f"UPDATE audit_log SET detail = json_set(detail, '$.status', 'approved') WHERE id = {id}"
    return f"""UPDATE audit_log SET detail = jsonb_set(detail, '{{status}}', '"approved"') WHERE id = {id}"""


@pytest.mark.parametrize("field", ["detail", "actor"])
def test_an_edited_row_is_named(store: CmdbStore, clock: Clock, field: str) -> None:
    write_records(store, clock)
    ids = audit_ids(store)
    victim = ids[2]  # the first release's close: written by the fast path on PostgreSQL
    if field == "actor":
        tamper(store, f"UPDATE audit_log SET actor = 'mallory' WHERE id = {victim}")
    else:
        tamper(store, detail_edit(store.dialect, ids[1]))
        victim = ids[1]
    result = store.verify_audit()
    assert (result.ok, result.first_broken_id, result.rows) == (False, victim, ids.index(victim))
    assert "changed" in result.reason


@pytest.mark.parametrize(
    "mangle", ["detail = 'not json'", "at = 'yesterday'", "at = 12", "actor = X'00ff'", "row_hash = 7"]
)
def test_a_row_mangled_past_reading_is_named(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock, mangle: str
) -> None:
    """SQLite keeps any value in any column: the check names the row instead of failing."""
    with make_store("sqlite", tmp_path, request, clock) as store:
        write_records(store, clock)
        victim = audit_ids(store)[3]
        tamper(store, f"UPDATE audit_log SET {mangle} WHERE id = {victim}")
        result = store.verify_audit()
    assert (result.ok, result.first_broken_id) == (False, victim), result
    assert "changed" in result.reason


def test_a_deleted_middle_row_is_named(store: CmdbStore, clock: Clock) -> None:
    write_records(store, clock)
    ids = audit_ids(store)
    tamper(store, f"DELETE FROM audit_log WHERE id = {ids[3]}")
    result = store.verify_audit()
    assert (result.ok, result.first_broken_id) == (False, ids[4])
    assert f"does not match row {ids[2]}'s hash" in result.reason


def test_concurrent_appends_chain(store: CmdbStore, clock: Clock) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(15):
                store.append_audit(f"w{n}/{i}", actor=f"w{n}", action="note", subject="s", detail={"i": i})
            store.open_change(open_input(service=f"svc{n}"))
            store.close_change(close_input(service=f"svc{n}"))
            store.close_change(close_input(service=f"svc{n}"))  # a replay: no row
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    result = store.verify_audit()
    assert result.ok, result
    assert result.rows == store.count("audit_log") == 8 * 17


# --- a database from before the chain ------------------------------------------------


def old_audit_log(metadata: MetaData) -> Table:
    """audit_log as relman created it before the chain: no prev_hash, no row_hash."""
    return Table(
        "audit_log",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("at", UtcDateTime, nullable=False),
        Column("actor", String(64), nullable=False),
        Column("action", String(64), nullable=False),
        Column("subject", String(200), nullable=False),
        Column("release_id", String(128)),
        Column("detail", Json, nullable=False),
        Column("idempotency_key", String(250), nullable=False, unique=True),
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def old_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(url, schema) of a database holding the old audit_log with three rows in it."""
    if request.param == "sqlite":
        url, schema = f"sqlite:///{tmp_path}/old.db", None
        engine = create_engine(url)
        triggers = _SQLITE_TRIGGERS
    else:
        url, schema = request.getfixturevalue("pg_url"), f"t_{uuid.uuid4().hex[:16]}"
        engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
        triggers = _PG_TRIGGER
    metadata = MetaData()
    table = old_audit_log(metadata)
    with engine.begin() as conn:
        if schema:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        metadata.create_all(conn)
        for statement in triggers:
            conn.execute(text(statement))
        conn.execute(
            table.insert(),
            [
                dict(
                    at=T0 - timedelta(days=30 - i),
                    actor="alice",
                    action="change.open",
                    subject=rid(version=f"0.{i}.0"),
                    release_id=rid(version=f"0.{i}.0"),
                    detail={"status": "requested"},
                    idempotency_key=f"old/{i}",
                )
                for i in range(3)
            ],
        )
    try:
        yield url, schema
    finally:
        if schema:
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def test_a_database_from_before_the_chain_keeps_working(old_db: tuple[str, str | None], clock: Clock) -> None:
    url, schema = old_db
    store = CmdbStore(url, schema=schema, clock=clock)
    try:
        store.upgrade()  # `relman cmdb upgrade`: adopted at 0001, then the later revisions
        write_records(store, clock)
        result = store.verify_audit()
        assert (result.ok, result.rows, result.legacy_rows) == (True, 7, 3)
        assert [e.idempotency_key for e in store.audit(rid(version="0.1.0"))] == ["old/1"]
        with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_log"))
        # A second store (another worker) finds the columns there and appends to the chain.
        other = CmdbStore(url, schema=schema, clock=clock)
        assert other.append_audit("note/2", actor="bob", action="note", subject="checkout") is True
        other.close()
        assert store.verify_audit().rows == 8
        first_chained = audit_ids(store)[3]
        tamper(store, f"UPDATE audit_log SET actor = 'mallory' WHERE id = {first_chained}")
        assert store.verify_audit().first_broken_id == first_chained
    finally:
        store.close()


# --- the CLI ----------------------------------------------------------------------


def verify_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RELMAN_CMDB_URL": url, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", "from relman.starter import main; main()", "cmdb", "verify-audit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_verify_audit(tmp_path: Path, clock: Clock) -> None:
    url = f"sqlite:///{tmp_path}/cmdb.db"
    store = CmdbStore(url, clock=clock)
    try:
        write_records(store, clock)
        done = verify_cli(url)
        assert (done.returncode, done.stdout.strip()) == (
            0,
            "audit log intact: 7 rows, 0 evidence anchors",
        ), done.stderr
        victim = audit_ids(store)[4]
        tamper(store, detail_edit("sqlite", victim))
    finally:
        store.close()
    done = verify_cli(url)
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith(f"audit log broken at row {victim}: "), done.stdout
    done = verify_cli(url, "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert (report["ok"], report["first_broken_id"], report["rows"]) == (False, victim, 4)
