"""The audit log anchored in signed evidence: what the chain alone cannot show.

Someone with the database's password can rewrite a row and recompute every later hash, or
drop the newest rows; the chain then links. The row each release's evidence anchors (signed
by the worker before it is stored) no longer matches, and `verify_audit` names it. Pure
checks first, then the real evidence activity on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import String, Text, cast, select, text, type_coerce
from temporalio.testing import ActivityEnvironment

from relman.activities.evidence import EvidenceActivities
from relman.cmdb import CmdbStore
from relman.cmdb.audit_chain import Anchor, ChainRow, check_chain, row_hash
from relman.cmdb.store import AUDIT, _chain_row
from relman.contracts import AuditAnchor, CloseCode, EvidenceInput, EvidenceRecord
from relman.identity.evidence import build_statement, envelope_digest, sign_envelope, verify_evidence
from tests.cmdb.helpers import BACKENDS, Clock, make_store
from tests.cmdb.test_audit_chain import audit_ids, row, sealed, tamper, verify_cli, write_records
from tests.identity.evidence_support import RELEASE_ID, Cast, closed_release

# --- pure: anchors without a database ------------------------------------------------


def anchor(rows: list[ChainRow], id: int, release: str = "release-a-1.0.0") -> Anchor:
    held = next(r for r in rows if r.id == id)
    assert held.row_hash is not None
    return Anchor(release_id=release, id=id, row_hash=held.row_hash)


def test_held_anchors_are_counted() -> None:
    rows = sealed([row(1), row(2), row(3), row(4)])
    result = check_chain(rows, [anchor(rows, 3), anchor(rows, 2, "release-b-1.0.0"), anchor(rows, 4)])
    assert (result.ok, result.rows, result.anchors, result.head_hash) == (True, 4, 3, rows[-1].row_hash)
    assert check_chain(rows).anchors == 0


def test_a_rewritten_and_rehashed_chain_breaks_at_the_anchor() -> None:
    rows = sealed([row(1), row(2), row(3), row(4)])
    pinned = anchor(rows, 3)
    forged = sealed([row(1), row(2, actor="mallory"), row(3), row(4)])
    assert check_chain(forged).ok  # the links alone cannot tell
    result = check_chain(forged, [pinned])
    assert (result.ok, result.first_broken_id, result.rows, result.anchors) == (False, 3, 2, 0)
    assert result.reason.startswith(
        f"evidence of release-a-1.0.0 anchors row 3 with hash {pinned.row_hash[:16]}…,"
        f" the log holds hash {forged[2].row_hash[:16]}… there"  # type: ignore[index]
    )
    # A rewrite after the newest anchor is beyond what any evidence pins.
    assert check_chain(sealed([row(1), row(2), row(3), row(4, actor="mallory")]), [pinned]).ok


def test_removed_rows_break_at_the_anchor() -> None:
    rows = sealed([row(1), row(2), row(3), row(4)])
    cut = check_chain(rows[:2], [anchor(rows, 1), anchor(rows, 3)])
    assert (cut.ok, cut.first_broken_id, cut.rows, cut.anchors) == (False, 3, 2, 1)
    assert "the log holds no row 3 (it ends at row 2: rows were removed)" in cut.reason
    assert "it is empty" in check_chain([], [anchor(rows, 1)]).reason
    # Rows removed from the middle, the rest renumbered? No: ids stay, and one is missing.
    rest = sealed([row(1), row(2), row(4)])
    gap = check_chain(rest, [anchor(rows, 3)])
    assert gap.first_broken_id == 3 and "it skips from row 2 to row 4" in gap.reason


def test_the_first_break_is_reported() -> None:
    rows = sealed([row(1), row(2), row(3), row(4)])
    edited = [*rows[:3], dataclasses.replace(rows[3], actor="mallory")]
    # The link at row 4 breaks after the anchor at row 2 held: the link is named.
    assert check_chain(edited, [anchor(rows, 2)]).first_broken_id == 4
    # An anchor at row 2 that does not hold comes before the broken link at row 4.
    wrong = Anchor(release_id="r", id=2, row_hash="f" * 64)
    assert check_chain(edited, [wrong]).first_broken_id == 2
    # An anchor on a row without hash (a legacy row) does not hold.
    legacy = check_chain([row(1), *sealed([row(2)])], [Anchor(release_id="r", id=1, row_hash="f" * 64)])
    assert legacy.first_broken_id == 1 and "a row without a hash" in legacy.reason


# --- the store and the evidence activity on SQLite and PostgreSQL --------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[CmdbStore]:
    with make_store(request.param, tmp_path, request, clock) as s:
        yield s


def evidence_input(cast: Cast) -> EvidenceInput:
    return EvidenceInput(
        release_id=RELEASE_ID, step="evidence", status=closed_release(cast), close_code=CloseCode.SUCCESSFUL
    )


async def write_evidence(store: CmdbStore, cast: Cast) -> None:
    await ActivityEnvironment().run(
        EvidenceActivities(store, cast.worker).write_evidence, evidence_input(cast)
    )


def stated_anchor(store: CmdbStore, release_id: str = RELEASE_ID) -> dict[str, Any] | None:
    stored = store.get_evidence(release_id)
    assert stored is not None
    anchor: dict[str, Any] | None = json.loads(base64.b64decode(stored.envelope["payload"]))["predicate"].get(
        "audit_anchor"
    )
    return anchor


def chain_rows(store: CmdbStore) -> list[ChainRow]:
    """The log as verify_audit reads it."""
    at = AUDIT.c.at if store.dialect == "postgresql" else type_coerce(AUDIT.c.at, String)
    stmt = select(
        *(c for c in AUDIT.c if c.name not in ("at", "detail")),
        at.label("at"),
        cast(AUDIT.c.detail, Text).label("detail"),
    ).order_by(AUDIT.c.id)
    with store.engine.connect() as conn:
        return [_chain_row(r) for r in conn.execute(stmt)]


def rewrite(store: CmdbStore, victim: int) -> None:
    """Change row `victim`'s actor and recompute its hash and every later one, as someone
    with the database's password and this code can."""
    tamper(store, f"UPDATE audit_log SET actor = 'mallory' WHERE id = {victim}")
    rows = chain_rows(store)
    prev = next(r.prev_hash for r in rows if r.id == victim)
    assert prev is not None
    with store.engine.begin() as conn:
        if store.dialect == "sqlite":
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
        else:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        for r in rows:
            if r.id < victim:
                continue
            h = row_hash(r, prev)
            conn.execute(
                text("UPDATE audit_log SET prev_hash = :p, row_hash = :h WHERE id = :id"),
                {"p": prev, "h": h, "id": r.id},
            )
            prev = h
        if store.dialect == "postgresql":
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))


async def anchored_log(store: CmdbStore, clock: Clock) -> tuple[list[int], int, str]:
    """Change records, the release's evidence through the activity, then two more rows:
    (the log's ids, the anchored row, its hash)."""
    write_records(store, clock)
    head = store.audit_head()
    assert head is not None
    await write_evidence(store, Cast())
    clock.advance(minutes=5)
    store.append_audit("note/2", actor="bob", action="note", subject="checkout")
    store.append_audit("note/3", actor="bob", action="note", subject="checkout")
    ids = audit_ids(store)
    # The anchor is the newest row read before signing: the one before evidence.write.
    assert stated_anchor(store) == {"id": head.id, "row_hash": head.row_hash}
    evidence_row = next(r for r in chain_rows(store) if r.action == "evidence.write")
    assert evidence_row.id == head.id + 1 and evidence_row.prev_hash == head.row_hash
    return ids, head.id, head.row_hash


async def test_untouched_log_is_intact_with_its_anchor(store: CmdbStore, clock: Clock) -> None:
    ids, _, _ = await anchored_log(store, clock)
    result = store.verify_audit()
    assert (result.ok, result.rows, result.anchors) == (True, len(ids), 1), result
    # A retry writes nothing new: the first envelope, and its anchor, stay.
    before = stated_anchor(store)
    await write_evidence(store, Cast())
    assert stated_anchor(store) == before and store.verify_audit().anchors == 1


async def test_rewritten_and_rehashed_log_is_named(store: CmdbStore, clock: Clock) -> None:
    ids, anchored, held = await anchored_log(store, clock)
    victim = ids[2]
    rewrite(store, victim)
    assert check_chain(chain_rows(store)).ok  # the plain chain check passes
    result = store.verify_audit()
    forged = next(r.row_hash for r in chain_rows(store) if r.id == anchored)
    assert forged is not None and forged != held
    assert (result.ok, result.first_broken_id, result.anchors) == (False, anchored, 0)
    assert result.reason.startswith(
        f"evidence of {RELEASE_ID} anchors row {anchored} with hash {held[:16]}…,"
        f" the log holds hash {forged[:16]}… there"
    ), result.reason


async def test_removed_newest_rows_are_named(store: CmdbStore, clock: Clock) -> None:
    ids, anchored, held = await anchored_log(store, clock)
    tamper(store, f"DELETE FROM audit_log WHERE id >= {anchored}")
    assert check_chain(chain_rows(store)).ok  # what is left links
    result = store.verify_audit()
    assert (result.ok, result.first_broken_id, result.rows) == (False, anchored, ids.index(anchored))
    assert f"anchors row {anchored} with hash {held[:16]}…, the log holds no row {anchored}" in result.reason
    assert f"it ends at row {anchored - 1}: rows were removed" in result.reason
    # New writes chain to what is left. On SQLite they take the removed ids again, so the
    # anchored row is back with another hash; PostgreSQL's sequence leaves the gap.
    store.append_audit("note/4", actor="bob", action="note", subject="checkout")
    again = store.verify_audit()
    assert (again.ok, again.first_broken_id) == (False, anchored)
    holds = "the log holds hash" if store.dialect == "sqlite" else f"it skips from row {anchored - 1} to row"
    assert holds in again.reason, again.reason


async def test_evidence_without_an_anchor(store: CmdbStore) -> None:
    """On an empty log there is no row to anchor; evidence signed before anchoring existed
    (no field at all) verifies and is not counted."""
    cast_ = Cast()
    await write_evidence(store, cast_)
    assert stated_anchor(store) is None
    stored = store.get_evidence(RELEASE_ID)
    assert stored is not None
    assert verify_evidence(stored.envelope, {"greeter": cast_.trust()}, [cast_.worker.public]).ok
    result = store.verify_audit()
    assert (result.ok, result.rows, result.anchors) == (True, 1, 0)


def test_the_earliest_failing_anchor_is_named(store: CmdbStore, clock: Clock) -> None:
    """Two evidences (through the store), the later anchor first in the table."""
    cast_ = Cast()
    write_records(store, clock)
    rows = chain_rows(store)

    def put(release_id: str, r: ChainRow) -> None:
        assert r.row_hash is not None
        statement = build_statement(
            closed_release(cast_), CloseCode.SUCCESSFUL, AuditAnchor(id=r.id, row_hash=r.row_hash)
        )
        envelope = sign_envelope(statement, cast_.worker)
        record = EvidenceRecord(envelope_sha256=envelope_digest(envelope), key_id=cast_.worker.key_id)
        store.put_evidence(f"{release_id}/evidence", release_id, envelope, record)

    put("release-late-1.0.0", rows[5])
    put("release-early-1.0.0", rows[2])
    assert store.verify_audit().anchors == 2
    rewrite(store, rows[1].id)
    result = store.verify_audit()
    assert result.first_broken_id == rows[2].id and "evidence of release-early-1.0.0" in result.reason


def test_cli_reports_anchors(tmp_path: Path, clock: Clock) -> None:
    url = f"sqlite:///{tmp_path}/cmdb.db"
    store = CmdbStore(url, clock=clock)
    try:
        asyncio.run(anchored_log(store, clock))
        done = verify_cli(url)
        assert (done.returncode, done.stdout.strip()) == (0, "audit log intact: 10 rows, 1 evidence anchors")
        anchored = stated_anchor(store)
        assert anchored is not None
        tamper(store, f"DELETE FROM audit_log WHERE id >= {anchored['id']}")
    finally:
        store.close()
    done = verify_cli(url)
    assert done.returncode == 1
    assert done.stdout.startswith(
        f"audit log broken at row {anchored['id']}: evidence of {RELEASE_ID} anchors"
    )
    report = json.loads(verify_cli(url, "--json").stdout)
    assert (report["ok"], report["first_broken_id"], report["anchors"]) == (False, anchored["id"], 0)
