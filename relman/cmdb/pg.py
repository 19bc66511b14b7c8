"""PostgreSQL fast path of `close_change`: the whole record in one statement.

The portable path sends eight round trips per close (BEGIN, six upserts, COMMIT),
and SQLAlchemy's per-statement CPU capped a worker near 550 closes/s (see
bench/cmdb_bench.py). Chained data-modifying CTEs do the same work in one atomic
statement run in autocommit: the audit claim comes first and every later insert selects FROM the row
before it, so a replayed key (claim returns nothing) touches nothing. The audit row
is hash-chained inside the same statement (`_CHAINED_CLAIM`), which every audit
append on PostgreSQL uses. The tests run every close scenario against both paths'
results, and verify the chain both paths wrote.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from relman.contracts import CloseChangeInput

# The audit row, chained: audit_chain_head() locks the chain and names the row's id and
# predecessor; the hash is sha256 over the canonical encoding that audit_chain.template
# rendered around those two (:hash_head || id || :hash_middle || prev_hash || :hash_tail).
_CHAINED_CLAIM = """
    INSERT INTO audit_log
        (id, at, actor, action, subject, release_id, detail, idempotency_key, prev_hash, row_hash)
    SELECT h.next_id, :at, :actor, :action, :subject, :release_id, CAST(:detail AS jsonb), :key,
        h.prev_hash, encode(sha256(convert_to(CAST(:hash_head AS text) || h.next_id::text
            || CAST(:hash_middle AS text) || h.prev_hash || CAST(:hash_tail AS text), 'UTF8')), 'hex')
    FROM audit_chain_head() AS h
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id"""

CLAIM = text(_CHAINED_CLAIM)
"""One audit row if its key is new (the idempotency claim); returns its id, else nothing.
SQLite's twin is in store.py."""

CLOSE_CHANGE = text(
    f"""
WITH claim AS ({_CHAINED_CLAIM}
), ci AS (
    INSERT INTO configuration_item
        (name, ci_class, description, criticality, current_version, row_version, updated_at)
    SELECT :ci_name, 'service', '', 'medium', CAST(:current_version AS varchar), 1, :now FROM claim
    ON CONFLICT (name) DO UPDATE SET
        current_version = COALESCE(EXCLUDED.current_version, configuration_item.current_version),
        row_version = configuration_item.row_version
            + CASE WHEN EXCLUDED.current_version IS NULL THEN 0 ELSE 1 END,
        updated_at = CASE WHEN EXCLUDED.current_version IS NULL
            THEN configuration_item.updated_at ELSE EXCLUDED.updated_at END
    RETURNING id
), chg AS (
    INSERT INTO change (
        release_id, ci_id, service, version, change_type, risk, requested_by, title, "commit",
        requested_at, committed_at, updated_at, reason, status, outcome, close_code,
        previous_version, artifact_digest, production_at, failed_at, recovered_at, closed_at)
    SELECT :release_id, ci.id, :service, :version, :change_type, :risk, :requested_by, :title, :commit,
        :now, :committed_at, :now, :reason, 'closed', :outcome, :close_code,
        :previous_version, :artifact_digest, :production_at, :failed_at, :recovered_at, :now
    FROM ci
    ON CONFLICT (release_id) DO UPDATE SET
        ci_id = EXCLUDED.ci_id, risk = EXCLUDED.risk, status = EXCLUDED.status,
        outcome = EXCLUDED.outcome, close_code = EXCLUDED.close_code, reason = EXCLUDED.reason,
        previous_version = EXCLUDED.previous_version, artifact_digest = EXCLUDED.artifact_digest,
        committed_at = COALESCE(EXCLUDED.committed_at, change.committed_at),
        production_at = EXCLUDED.production_at, failed_at = EXCLUDED.failed_at,
        recovered_at = EXCLUDED.recovered_at, closed_at = EXCLUDED.closed_at,
        updated_at = EXCLUDED.updated_at
    RETURNING id
), ver AS (
    INSERT INTO ci_version (ci_id, version, artifact_digest, "commit", deployed_at, release_id)
    SELECT ci.id, :current_version, :artifact_digest, :commit, :deployed_at, :release_id
    FROM ci WHERE CAST(:current_version AS varchar) IS NOT NULL
    ON CONFLICT (ci_id, version) DO UPDATE SET
        artifact_digest = EXCLUDED.artifact_digest, "commit" = EXCLUDED."commit",
        deployed_at = EXCLUDED.deployed_at, release_id = EXCLUDED.release_id
), appr AS (
    INSERT INTO approval
        (change_id, gate, approver, on_behalf_of, decision, comment, approved_hash, at)
    SELECT chg.id, a.gate, a.approver, a.on_behalf_of, a.decision, a.comment, a.approved_hash, a.at
    FROM chg, jsonb_to_recordset(CAST(:approvals AS jsonb)) AS a(
        gate text, approver text, on_behalf_of text, decision text, comment text,
        approved_hash text, at timestamptz)
    ON CONFLICT (change_id, gate, approver, approved_hash) DO NOTHING
), rev AS (
    INSERT INTO review_record (change_id, kpis, feedback, at)
    SELECT chg.id, CAST(:kpis AS jsonb), CAST(:feedback AS jsonb), :now FROM chg
    ON CONFLICT (change_id) DO UPDATE SET
        kpis = EXCLUDED.kpis, feedback = EXCLUDED.feedback, at = EXCLUDED.at
)
SELECT count(*) FROM claim
"""
)


def _utc(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def close_params(
    inp: CloseChangeInput, *, now: datetime, ci_name: str, deployed: bool, audit: dict[str, Any]
) -> dict[str, Any]:
    """Bind parameters of CLOSE_CHANGE, the same values the portable path writes; `audit`
    are the claim's (the store's `claim_params`)."""
    req = inp.request
    approvals = [
        {
            "gate": a.vote.gate.value,
            "approver": a.vote.approver,
            "on_behalf_of": a.vote.on_behalf_of,
            "decision": a.vote.decision.value,
            "comment": a.vote.comment,
            "approved_hash": a.vote.approved_hash,
            "at": _utc(a.at).isoformat(),  # type: ignore[union-attr]
        }
        for a in inp.approvals
    ]
    return audit | {
        "now": _utc(now),
        "ci_name": ci_name,
        "current_version": inp.deployed_version if deployed else None,
        "service": req.service,
        "version": req.version,
        "change_type": req.change_type.value,
        "risk": inp.risk.value,
        "requested_by": req.requested_by,
        "title": req.title,
        "commit": req.commit,
        "committed_at": _utc(req.committed_at),
        "reason": inp.reason,
        "outcome": inp.outcome.value,
        "close_code": inp.close_code.value,
        "previous_version": inp.previous_version,
        "artifact_digest": inp.artifact_digest,
        "production_at": _utc(inp.production_at),
        "failed_at": _utc(inp.failed_at),
        "recovered_at": _utc(inp.recovered_at),
        "deployed_at": _utc(inp.production_at) or _utc(now),
        "approvals": json.dumps(approvals),
        "kpis": json.dumps(dict(inp.kpis)),
        "feedback": json.dumps([f.model_dump(mode="json") for f in inp.feedback]),
    }
