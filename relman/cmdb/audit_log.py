"""The audit log: the idempotency claim every write begins with, and the chain's reads.

Exactly once. Every write is keyed by an idempotency key (the activity's
`release_id/step`). The first statement of a write's transaction inserts the audit
row under that key with "insert if absent"; when the key is already there the
effect was applied before and the write returns without touching anything. The
audit row and the effect commit together, so a retried or replayed activity leaves
exactly one row per effect. Natural keys (CI name, release id, window name,
approval vote, CI version) are unique too, so writes under different keys upsert.

The audit log is hash-chained (relman/cmdb/audit_chain.py). The claim is still one
statement: it reads the chain's head, hashes the row in SQL and inserts it, holding
the chain until its transaction ends (SQLite: the write lock BEGIN IMMEDIATE took;
PostgreSQL: an advisory lock the statement takes), so concurrent writers, in threads
or processes, append one after another. `verify_audit` checks the chain, and the row
each release's signed evidence anchors (`audit_head` when it was signed). Secrets are
never stored: detail keys that look like secrets are masked.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime
from typing import Any

from sqlalchemy import String, Text, bindparam, cast, select, text, type_coerce
from sqlalchemy.engine import Connection

from relman.cmdb import pg
from relman.cmdb.audit_chain import GENESIS, Anchor, AuditVerification, ChainRow, check_chain, template
from relman.cmdb.engine import StoreEngine, utc
from relman.cmdb.models import AuditLog, EvidenceRow, UtcDateTime, metadata
from relman.cmdb.records import AuditEntry
from relman.contracts import AuditAnchor

AUDIT = metadata.tables[AuditLog.__tablename__]
EVIDENCE = metadata.tables[EvidenceRow.__tablename__]

_SECRET_KEY = re.compile(r"pass(word)?|secret|token|api[_-]?key|credential", re.IGNORECASE)


def scrub(detail: Any) -> Any:
    """Mask values whose key names a secret, at any depth."""
    if isinstance(detail, dict):
        return {k: "***" if _SECRET_KEY.search(str(k)) else scrub(v) for k, v in detail.items()}
    if isinstance(detail, list):
        return [scrub(v) for v in detail]
    return detail


# The chained claim, as pg.CLAIM on PostgreSQL: id and predecessor read and the row
# inserted in one statement, the hash computed by relman_sha256 (registered on every
# connection) over audit_chain.template's parts. No lock to take: `_write` began with
# BEGIN IMMEDIATE, so the transaction holds SQLite's write lock until it ends.
# (`WHERE true` tells SQLite's parser that ON CONFLICT is the upsert, not a join.)
SQLITE_CLAIM = text(
    f"""
INSERT INTO audit_log
    (id, at, actor, action, subject, release_id, detail, idempotency_key, prev_hash, row_hash)
SELECT h.next_id, :at, :actor, :action, :subject, :release_id, :detail, :key, h.prev_hash,
    relman_sha256(:hash_head || h.next_id || :hash_middle || h.prev_hash || :hash_tail)
FROM (SELECT coalesce((SELECT max(id) FROM audit_log), 0) + 1 AS next_id,
    coalesce((SELECT row_hash FROM audit_log ORDER BY id DESC LIMIT 1), '{GENESIS}') AS prev_hash) AS h
WHERE true
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id
"""
).bindparams(bindparam("at", type_=UtcDateTime()))


def claim_params(
    key: str,
    *,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    release_id: str | None,
    detail: dict[str, Any],
) -> dict[str, Any]:
    """Bind parameters of the chained claim (`SQLITE_CLAIM`, pg.CLAIM, pg.CLOSE_CHANGE)."""
    head, middle, tail = template(
        at=at,
        actor=actor,
        action=action,
        subject=subject,
        release_id=release_id,
        detail=detail,
        idempotency_key=key,
    )
    return {
        "key": key,
        "at": utc(at),
        "actor": actor,
        "action": action,
        "subject": subject,
        "release_id": release_id,
        # As the JSON column type would serialize it; jsonb parses it on PostgreSQL.
        "detail": json.dumps(detail),
        "hash_head": head,
        "hash_middle": middle,
        "hash_tail": tail,
    }


def chain_row(r: Any) -> ChainRow:
    """An audit row as read by `verify_audit`, for check_chain."""
    at: Any = r.at
    try:
        if isinstance(at, str):
            at = datetime.fromisoformat(at)
        if not isinstance(at, datetime):
            raise ValueError(f"time {at!r}")
        detail = json.loads(r.detail)
    except (TypeError, ValueError) as e:
        at, detail, unreadable = datetime.min, None, str(e)[:200]
    else:
        unreadable = ""
    return ChainRow(
        id=r.id,
        at=at,
        actor=r.actor,
        action=r.action,
        subject=r.subject,
        release_id=r.release_id,
        detail=detail,
        idempotency_key=r.idempotency_key,
        prev_hash=r.prev_hash,
        row_hash=r.row_hash,
        unreadable=unreadable,
    )


def evidence_anchor(release_id: str, envelope: Any) -> Anchor | None:
    """The `audit_anchor` an evidence envelope's payload states, read without checking the
    signature; None for evidence from before anchoring, or a payload that cannot be read
    (relman never writes one: `relman verify` names it)."""
    try:
        payload = str(envelope["payload"]).replace("-", "+").replace("_", "/")
        statement = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True))
        stated = statement["predicate"].get("audit_anchor")
        if stated is None:
            return None
        anchor = AuditAnchor.model_validate(stated)
    except (TypeError, KeyError, AttributeError, ValueError, binascii.Error):  # ValidationError too
        return None
    return Anchor(release_id=release_id, id=anchor.id, row_hash=anchor.row_hash)


class AuditLogStore(StoreEngine):
    """The audit log; every other table group's writes claim their key here first."""

    def _claim(
        self,
        conn: Connection,
        key: str,
        *,
        actor: str,
        action: str,
        subject: str,
        release_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """Insert the audit row for `key` if absent, chained to the log's last row; False
        means the effect is already done."""
        params = claim_params(
            key,
            at=self._clock(),
            actor=actor,
            action=action,
            subject=subject,
            release_id=release_id,
            detail=scrub(detail or {}),
        )
        claim = pg.CLAIM if self.dialect == "postgresql" else SQLITE_CLAIM
        return conn.execute(claim, params).first() is not None

    def append_audit(
        self,
        idempotency_key: str,
        *,
        actor: str,
        action: str,
        subject: str,
        release_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """Append one audit row; False when that key was already recorded."""
        with self._write(autocommit=True) as conn:
            return self._claim(
                conn,
                idempotency_key,
                actor=actor,
                action=action,
                subject=subject,
                release_id=release_id,
                detail=detail,
            )

    def audit(self, release_id: str) -> list[AuditEntry]:
        """The audit trail of one release, oldest first."""
        with self._read() as conn:
            rows = conn.execute(select(AUDIT).where(AUDIT.c.release_id == release_id).order_by(AUDIT.c.id))
            return [AuditEntry.model_validate(r, from_attributes=True) for r in rows]

    def audit_head(self) -> AuditAnchor | None:
        """The audit log's newest row (id and hash), None while no chained row exists: what
        the evidence activity signs into a release's evidence as its `audit_anchor`."""
        stmt = select(AUDIT.c.id, AUDIT.c.row_hash).order_by(AUDIT.c.id.desc()).limit(1)
        with self._read() as conn:
            head = conn.execute(stmt).first()
        if head is None or head.row_hash is None:
            return None
        return AuditAnchor(id=head.id, row_hash=head.row_hash)

    def verify_audit(self) -> AuditVerification:
        """Check the whole audit log's hash chain, oldest row first, and every stored
        evidence's `audit_anchor`: the row it names must be in the log with the hash it
        states, or the log is reported broken at that row.

        The chain alone cannot show a rewrite whose author recomputed every later hash, nor
        its newest rows removed; an anchor can, but it counts only because it sits in an
        envelope signed with the worker's evidence key, which this check does not verify
        (`relman verify` does): whoever can rewrite the log can also edit the evidence rows,
        so an anchor found here is trusted as far as that envelope's signature verifies.
        """
        # Time (SQLite) and detail as stored, decoded by chain_row: a row mangled past
        # decoding (SQLite keeps any value in any column) is then reported, not a crash.
        at = AUDIT.c.at if self.dialect == "postgresql" else type_coerce(AUDIT.c.at, String)
        stmt = select(
            *(c for c in AUDIT.c if c.name not in ("at", "detail")),
            at.label("at"),
            cast(AUDIT.c.detail, Text).label("detail"),
        ).order_by(AUDIT.c.id)
        evidence = select(EVIDENCE.c.release_id, EVIDENCE.c.envelope).order_by(EVIDENCE.c.id)
        with self._read() as conn:
            # Evidence first: every row an envelope anchors was committed before the envelope,
            # so the audit rows read afterwards hold it even without one snapshot for both.
            found = conn.execution_options(yield_per=100).execute(evidence)
            anchors = [a for r in found if (a := evidence_anchor(r.release_id, r.envelope))]
            rows = conn.execution_options(yield_per=1000).execute(stmt)
            return check_chain((chain_row(r) for r in rows), anchors)
