"""A closed release as the CMDB keeps it, for the audit tests.

`records` builds the change record and audit rows by hand (pure tests); `fill` writes the same
release through the store's real methods, as the workflow's activities do (CLI tests). Both
start from the signed release of tests/identity/evidence_support.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from relman.cmdb import CmdbStore
from relman.cmdb.records import ApprovalRecord, AuditEntry, ChangeDetail, ReviewRecordOut
from relman.contracts import (
    ChangeRecordInput,
    CloseChangeInput,
    CloseCode,
    Environment,
    EventInput,
    EvidenceRecord,
    Feedback,
    OperatorVerb,
    ReleaseStatus,
    Risk,
)
from relman.identity.evidence import build_statement, envelope_digest, sign_envelope
from relman.identity.signing import seal
from tests.identity.evidence_support import RELEASE_ID, T0, Cast, closed_release

CLOSED_AT = T0 + timedelta(hours=8)


def reviewed_release(cast: Cast) -> ReleaseStatus:
    """The evidence tests' closed release, with its review: KPIs and signed feedback."""
    status = closed_release(cast)
    feedback = seal(
        Feedback(by="oscar", rating=4, comment="smooth", at=T0 + timedelta(hours=7)),
        RELEASE_ID,
        cast.signers["oscar"],
        now=T0 + timedelta(hours=7),
    )
    return status.model_copy(
        update={"kpis": {"error_rate": 0.004, "lead_time_hours": 30.0}, "feedback": [feedback]}
    )


def envelope_of(status: ReleaseStatus, cast: Cast) -> dict[str, Any]:
    return sign_envelope(build_statement(status, CloseCode.SUCCESSFUL), cast.worker)


def events(status: ReleaseStatus) -> list[EventInput]:
    """The audit rows the workflow writes for amendments and overrides (RECORD_EVENT)."""
    out = [
        EventInput(
            release_id=status.release_id,
            step=f"amend-{a.amendment.plan.revision}",
            action="plan.amended",
            actor=a.amendment.by,
            detail={
                "revision": a.amendment.plan.revision,
                "previous_hash": a.previous_hash,
                "plan_hash": a.plan_hash,
                "changes": a.changes,
                "reason": a.amendment.reason,
            },
        )
        for a in status.amendments
    ]
    overrides = [r.action for r in status.actions if r.action.action is OperatorVerb.OVERRIDE_WINDOW]
    out += [
        EventInput(
            release_id=status.release_id,
            step=f"override-{i}",
            action="window.overridden",
            actor=o.by,
            detail={"window": o.window, "step": o.step, "reason": o.reason},
        )
        for i, o in enumerate(overrides, start=1)
    ]
    return out


def close_input(status: ReleaseStatus) -> CloseChangeInput:
    """What the workflow's `_close` sends to the CMDB for `status`."""
    assert status.outcome is not None and status.package is not None
    live = [d for d in status.deploys if d.environment is Environment.PRODUCTION][-1]
    return CloseChangeInput(
        release_id=status.release_id,
        step="close",
        request=status.request,
        risk=status.risk or Risk.MEDIUM,
        outcome=status.outcome,
        close_code=CloseCode.SUCCESSFUL,
        reason=status.reason,
        ci_name="greeter",
        deployed_version=live.version,
        previous_version=live.previous_version,
        artifact_digest=status.package.digest,
        approvals=[a for g in status.gates.values() for a in g.votes],
        kpis=status.kpis,
        feedback=status.feedback,
        production_at=live.at,
    )


def records(
    status: ReleaseStatus, envelope: dict[str, Any], key_id: str = "0" * 16
) -> tuple[ChangeDetail, list[AuditEntry]]:
    """The change record and audit rows of `status` as the store returns them, built by hand."""
    close = close_input(status)
    request = status.request
    change = ChangeDetail(
        release_id=status.release_id,
        service=request.service,
        version=request.version,
        change_type=request.change_type,
        risk=close.risk.value,
        status="closed",
        outcome=close.outcome.value,
        close_code=close.close_code,
        requested_by=request.requested_by,
        title=request.title,
        ci="greeter",
        commit=request.commit,
        previous_version=close.previous_version,
        artifact_digest=close.artifact_digest,
        requested_at=T0,
        production_at=close.production_at,
        closed_at=CLOSED_AT,
        reason=close.reason,
        approvals=[
            ApprovalRecord(
                gate=a.vote.gate.value,
                approver=a.vote.approver,
                on_behalf_of=a.vote.on_behalf_of,
                decision=a.vote.decision.value,
                comment=a.vote.comment,
                approved_hash=a.vote.approved_hash,
                at=a.at,
            )
            for a in close.approvals
        ],
        review=ReviewRecordOut(kpis=close.kpis, feedback=close.feedback, at=CLOSED_AT),
    )

    def row(at: datetime, actor: str, action: str, key: str, detail: dict[str, Any]) -> AuditEntry:
        return AuditEntry(
            at=at,
            actor=actor,
            action=action,
            subject=status.release_id,
            release_id=status.release_id,
            detail=detail,
            idempotency_key=f"{status.release_id}/{key}",
        )

    rows = [row(T0, request.requested_by, "change.open", "open", {"status": "requested"})]
    rows += [row(T0 + timedelta(hours=2), e.actor, e.action, e.step, e.detail) for e in events(status)]
    rows.append(
        row(
            CLOSED_AT,
            "relman",
            "change.close",
            "close",
            {
                "outcome": close.outcome.value,
                "close_code": close.close_code.value,
                "reason": close.reason,
                "deployed_version": close.deployed_version,
                "previous_version": close.previous_version,
            },
        )
    )
    written = {"sha256": envelope_digest(envelope), "key_id": key_id}
    rows.append(row(CLOSED_AT, "relman", "evidence.write", "evidence", written))
    return change, rows


def fill(
    store: CmdbStore,
    status: ReleaseStatus,
    envelope: dict[str, Any] | None,
    *,
    key_id: str = "0" * 16,
    close: Callable[[CloseChangeInput], CloseChangeInput] = lambda c: c,
) -> None:
    """Write `status` to the CMDB through the store's own methods, as the activities do."""
    rid = status.release_id
    store.open_change(
        ChangeRecordInput(
            release_id=rid,
            step="open",
            request=status.request,
            risk=status.risk or Risk.MEDIUM,
            ci_name="greeter",
            status="requested",
        )
    )
    for e in events(status):
        store.append_audit(
            e.idempotency_key, actor=e.actor, action=e.action, subject=rid, release_id=rid, detail=e.detail
        )
    store.close_change(close(close_input(status)))
    if envelope is not None:
        record = EvidenceRecord(envelope_sha256=envelope_digest(envelope), key_id=key_id)
        store.put_evidence(f"{rid}/evidence", rid, envelope, record)
