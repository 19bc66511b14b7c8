"""The audit log's hash chain: pure functions, no database.

Every audit row stores `prev_hash` (the hash of the row before it) and `row_hash`
(sha256 of its own fields and `prev_hash`), so editing a row, deleting one from the
middle, or inserting or reordering rows breaks a link that `check_chain` names. The
first chained row links to `GENESIS`. Rows written before the chain existed carry no
hashes; they may only form a prefix (the "legacy" rows), counted but not checked.

A chain anyone with write access can recompute proves nothing about the newest rows
on its own: deleting the tail or rewriting every hash after an edit goes unnoticed
unless the head hash was recorded elsewhere, which is why the result reports it. Each
release's signed evidence records one (its `audit_anchor`: the newest row's id and hash
when the worker signed it); `check_chain` checks such `Anchor`s too, so a rewrite or a
cut up to an anchored row shows, for as long as the evidence's signature holds.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from relman.cmdb.records import Record

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One audit row as the chain sees it; the hashes are None on legacy rows."""

    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    release_id: str | None
    detail: Any
    idempotency_key: str
    prev_hash: str | None = None
    row_hash: str | None = None
    unreadable: str = ""
    """Why the stored time or detail could not be decoded: relman never writes such a row."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """A row the signed evidence of `release_id` names: the log must hold row `id` with
    `row_hash`. It counts only because the evidence is signed (`relman verify` checks that):
    whoever can rewrite the log can also rewrite an unsigned copy of its hashes."""

    release_id: str
    id: int
    row_hash: str


class AuditVerification(Record):
    """What `check_chain` found: intact, or the first row whose link is broken."""

    ok: bool
    rows: int
    """Chained rows verified intact (before the break, when there is one; before a broken
    anchor they link, but the rewrite the anchor shows may lie anywhere up to it)."""
    legacy_rows: int
    """Rows without hashes before the chain starts (written before chaining existed)."""
    first_broken_id: int | None = None
    reason: str = ""
    head_hash: str | None = None
    """Hash of the last intact row: record it elsewhere to notice a truncated tail later."""
    anchors: int = 0
    """Evidence anchors found holding (before the break, when there is one)."""


def _plain(value: Any) -> Any:
    """`value` as it reads back from the database's JSON, for hashing."""
    # PostgreSQL's jsonb keeps numbers as decimals and prints 1.0 as 1.0 but 1e16 as
    # 10000000000000000, which reads back as an int: integral floats are hashed as the
    # integer their shortest repr denotes, so both spellings give one hash.
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(Decimal(repr(value)))
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            # Stored JSON has string keys ("1", "true", "null"), which sort as strings.
            value = json.loads(json.dumps(value))
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _utc_iso(at: datetime) -> str:
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# One encoder, built once: json.dumps with options builds a new one per call, which
# was most of the cost of hashing a row.
_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


def template(
    *,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    release_id: str | None,
    detail: Any,
    idempotency_key: str,
) -> tuple[str, str, str]:
    """(head, middle, tail): the canonical encoding is `head + id + middle + prev_hash + tail`.

    PostgreSQL computes the hash itself from these three parts, because only the
    database knows the row's id and its predecessor's hash when it inserts (see pg.py).
    """
    plain = _plain(detail)
    # The keys in sorted order, so this is json.dumps(fields, sort_keys=True) of all nine.
    head = (
        f'{{"action":{_json(action)},"actor":{_json(actor)},"at":{_json(_utc_iso(at))},'
        f'"detail":{_json(plain)},"id":'
    )
    middle = f',"idempotency_key":{_json(idempotency_key)},"prev_hash":"'
    tail = f'","release_id":{_json(release_id)},"subject":{_json(subject)}}}'
    return head, middle, tail


def canonical(row: ChainRow, prev_hash: str) -> bytes:
    """The bytes `row_hash` covers: the row's fields and `prev_hash` as compact, sorted JSON
    (times as ISO UTC); `prev_hash` is hex, so it needs no escaping."""
    head, middle, tail = template(
        at=row.at,
        actor=row.actor,
        action=row.action,
        subject=row.subject,
        release_id=row.release_id,
        detail=row.detail,
        idempotency_key=row.idempotency_key,
    )
    return f"{head}{row.id}{middle}{prev_hash}{tail}".encode("ascii")


def row_hash(row: ChainRow, prev_hash: str) -> str:
    """sha256 hex of `canonical(row, prev_hash)`; `row.prev_hash/row_hash` are ignored."""
    return hashlib.sha256(canonical(row, prev_hash)).hexdigest()


def check_chain(rows: Iterable[ChainRow], anchors: Iterable[Anchor] = ()) -> AuditVerification:
    """Check rows in id order, and that each anchored row is there with its anchored hash;
    stops at the first broken link or anchor, whichever row comes first.

    Reasons name what most likely happened: a row whose hash no longer matches its
    fields was changed; a row whose `prev_hash` is not its predecessor's hash follows a
    deletion, an insertion or a reordering (or the predecessor was rewritten hash and all).
    An anchored row that is missing, or holds another hash, shows what the links cannot:
    the log rewritten up to it with every later hash recomputed, or its newest rows removed.
    """
    pending = sorted(anchors, key=lambda a: (a.id, a.release_id))
    legacy = checked = held = 0
    prev_id: int | None = None
    last_id: int | None = None
    expected = GENESIS
    started = False

    def broken(at: int, reason: str) -> AuditVerification:
        return AuditVerification(
            ok=False,
            rows=checked,
            legacy_rows=legacy,
            first_broken_id=at,
            reason=reason,
            head_hash=None if prev_id is None else expected,
            anchors=held,
        )

    for row in rows:
        if held < len(pending) and pending[held].id < row.id:
            gap = (
                f"it skips from row {last_id} to row {row.id}"
                if last_id is not None
                else f"it starts at row {row.id}"
            )
            return broken(pending[held].id, _anchor_missing(pending[held], gap))
        last_id = row.id
        if not started and row.row_hash is None and row.prev_hash is None:
            legacy += 1
        else:
            started = True
            reason = _broken_link(row, prev_id, expected)
            if reason:
                return broken(row.id, reason)
        while held < len(pending) and pending[held].id == row.id:
            if pending[held].row_hash != row.row_hash:
                return broken(row.id, _anchor_moved(pending[held], row.row_hash))
            held += 1
        if row.row_hash is not None:  # _broken_link refuses hashless rows once the chain starts
            checked += 1
            prev_id, expected = row.id, row.row_hash
    if held < len(pending):
        end = f"it ends at row {last_id}" if last_id is not None else "it is empty"
        return broken(pending[held].id, _anchor_missing(pending[held], end))
    return AuditVerification(
        ok=True,
        rows=checked,
        legacy_rows=legacy,
        head_hash=None if prev_id is None else expected,
        anchors=held,
    )


def _anchor_missing(anchor: Anchor, where: str) -> str:
    return (
        f"evidence of {anchor.release_id} anchors row {anchor.id} with hash {anchor.row_hash[:16]}…,"
        f" the log holds no row {anchor.id} ({where}: rows were removed)"
    )


def _anchor_moved(anchor: Anchor, held: str | None) -> str:
    holds = f"hash {held[:16]}…" if held else "a row without a hash"
    return (
        f"evidence of {anchor.release_id} anchors row {anchor.id} with hash {anchor.row_hash[:16]}…,"
        f" the log holds {holds} there (the log was rewritten at or before row {anchor.id} with"
        " every later hash recomputed, or rows were removed and others written in their place)"
    )


def _broken_link(row: ChainRow, prev_id: int | None, expected: str) -> str:
    """Why `row` does not continue a chain whose last row is `prev_id`; "" when it does."""
    if row.row_hash is None or row.prev_hash is None:
        return "row has no hash inside the chain (written without chaining, or its hash erased)"
    if row.unreadable:
        return f"row cannot be read ({row.unreadable}): it was changed"
    if row.prev_hash != expected:
        if prev_id is None:
            return (
                "first chained row does not link to the genesis hash"
                " (chained rows before it were deleted or stripped of their hashes)"
            )
        return (
            f"prev_hash does not match row {prev_id}'s hash"
            f" (a row after {prev_id} was deleted or inserted, rows were reordered,"
            f" or row {prev_id} was rewritten with a new hash)"
        )
    try:
        intact = row_hash(row, row.prev_hash) == row.row_hash
    except (TypeError, ValueError) as e:  # e.g. bytes stored in a text column
        return f"row's values cannot be encoded ({e}): it was changed"
    return "" if intact else "row's contents do not match its hash (the row was changed)"
