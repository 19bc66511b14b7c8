"""The audit log's hash chain: pure functions, no database.

Every audit row stores `prev_hash` (the hash of the row before it) and `row_hash`
(sha256 of its own fields and `prev_hash`), so editing a row, deleting one from the
middle, or inserting or reordering rows breaks a link that `check_chain` names. The
first chained row links to `GENESIS`. Rows written before the chain existed carry no
hashes; they may only form a prefix (the "legacy" rows), counted but not checked.

A chain anyone with write access can recompute proves nothing about the newest rows
on its own: deleting the tail or rewriting every hash after an edit goes unnoticed
unless the head hash was recorded elsewhere, which is why the result reports it.
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


class AuditVerification(Record):
    """What `check_chain` found: intact, or the first row whose link is broken."""

    ok: bool
    rows: int
    """Chained rows verified intact (before the break, when there is one)."""
    legacy_rows: int
    """Rows without hashes before the chain starts (written before chaining existed)."""
    first_broken_id: int | None = None
    reason: str = ""
    head_hash: str | None = None
    """Hash of the last intact row: record it elsewhere to notice a truncated tail later."""


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


def check_chain(rows: Iterable[ChainRow]) -> AuditVerification:
    """Check rows in id order; stops at the first broken link.

    Reasons name what most likely happened: a row whose hash no longer matches its
    fields was changed; a row whose `prev_hash` is not its predecessor's hash follows a
    deletion, an insertion or a reordering (or the predecessor was rewritten hash and all).
    """
    legacy = checked = 0
    prev_id: int | None = None
    expected = GENESIS
    started = False
    for row in rows:
        if not started and row.row_hash is None and row.prev_hash is None:
            legacy += 1
            continue
        started = True
        reason = _broken_link(row, prev_id, expected)
        if reason:
            return AuditVerification(
                ok=False,
                rows=checked,
                legacy_rows=legacy,
                first_broken_id=row.id,
                reason=reason,
                head_hash=None if prev_id is None else expected,
            )
        assert row.row_hash is not None  # _broken_link refuses hashless rows
        checked += 1
        prev_id, expected = row.id, row.row_hash
    return AuditVerification(
        ok=True,
        rows=checked,
        legacy_rows=legacy,
        head_hash=None if prev_id is None else expected,
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
