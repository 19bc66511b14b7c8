"""A release's status rebuilt from records, for when no worker answers the `status` query.

A query needs a worker to run (or replay) the workflow. Without one, what is left is what the
Temporal server holds (the description, the search attributes the workflow set, the request in
the start memo or the start event) and what the CMDB holds (the change record, its approvals and
review, its audit rows). `rebuild` turns those into a `ReleaseStatus` with
`source = StatusSource.RECORDS`; it never invents what the records do not say: no gates, plan,
stages or package, and no outcome unless relman's own close recorded one.

Pure functions over plain values, plus `read_cmdb`; the client gathers the server's part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError
from sqlalchemy.engine import make_url

from relman.cmdb.errors import CmdbError
from relman.cmdb.records import AuditEntry, ChangeDetail
from relman.contracts import (
    GO_LIVE,
    Decision,
    DeployRecord,
    Environment,
    Gate,
    Outcome,
    Phase,
    PhaseTransition,
    ReleaseRequest,
    ReleaseStatus,
    Risk,
    StatusSource,
)
from relman.errors import RelmanError

REQUEST_MEMO = "request"
"""The start memo's key holding the ReleaseRequest (readable with no worker running)."""

RUNNING = "RUNNING"
E = TypeVar("E", Outcome, Phase, Risk)

GATE_PHASE = {
    Gate.REQUEST.value: Phase.AWAITING_CAB,
    Gate.PLAN.value: Phase.AWAITING_PLAN_APPROVAL,
    Gate.MARGINAL.value: Phase.DARK_LAUNCH,
    Gate.RETRO.value: Phase.REVIEWING,
}
"""The phase in which a gate's vote was given (for the rebuilt timeline)."""

CHANGE_STATUS_PHASE = {"requested": Phase.REQUESTED, "authorized": Phase.AWAITING_PLAN_APPROVAL}
EVENT_PHASE = {"plan.amended": Phase.AWAITING_PLAN_APPROVAL, "window.overridden": Phase.DARK_LAUNCH}


@dataclass(frozen=True)
class ServerRecord:
    """What the Temporal server says about a release without asking a worker."""

    release_id: str
    execution: str
    """Temporal's execution status name: RUNNING, COMPLETED, CANCELED, TERMINATED, FAILED, ..."""
    started_at: datetime | None = None
    closed_at: datetime | None = None
    cancel_requested: bool = False
    """`temporal workflow cancel` was asked and the workflow has not run since."""
    phase: str = ""
    awaiting: list[str] = field(default_factory=list)
    outcome: str = ""
    risk: str = ""
    request: ReleaseRequest | None = None
    """From the start memo, else the workflow's start input."""
    phases: list[tuple[datetime, str]] = field(default_factory=list)
    """Each `ReleasePhase` value the workflow published, with its time (from the event history)."""
    cancel_requested_at: datetime | None = None
    close_reason: str = ""
    """Why the execution closed when relman's close did not run (termination reason, failure)."""


@dataclass(frozen=True)
class CmdbRecord:
    """The CMDB's change of one release and its audit rows; `problem` when it could not be read."""

    change: ChangeDetail | None = None
    audit: list[AuditEntry] = field(default_factory=list)
    problem: str = ""


def read_cmdb(url: str | None, release_id: str) -> CmdbRecord:
    """The change and audit rows of `release_id` (blocking). A SQLite file that does not exist
    is not created: reading a status must leave no CMDB behind."""
    if not url:
        return CmdbRecord(problem="no CMDB configured")
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:" or not Path(database).is_file():
            return CmdbRecord(problem=f"no CMDB at {database or url}")
    from relman.cmdb.store import CmdbStore

    try:
        store = CmdbStore(url, connect_timeout_s=3, busy_timeout_s=3)
    except CmdbError as exc:
        return CmdbRecord(problem=f"CMDB not read: {exc}")
    try:
        return CmdbRecord(change=store.get_change(release_id), audit=store.audit(release_id))
    except CmdbError as exc:
        return CmdbRecord(problem=f"CMDB not read: {exc}")
    finally:
        store.close()


def request_from_change(change: ChangeDetail) -> ReleaseRequest | None:
    """The request as far as the CMDB's change record keeps it (no description, window, proof)."""
    try:
        return ReleaseRequest.model_validate(
            {
                "service": change.service,
                "version": change.version,
                "change_type": change.change_type,
                "requested_by": change.requested_by,
                "title": change.title or f"{change.service} {change.version}",
                "commit": change.commit,
                "committed_at": change.committed_at,
            }
        )
    except ValidationError:
        return None


def rebuild(server: ServerRecord, cmdb: CmdbRecord, why: str) -> ReleaseStatus:
    """The status the records support; `why` says why no worker answered."""
    change = cmdb.change
    request = server.request or (request_from_change(change) if change else None)
    if request is None:
        raise RelmanError(f"{server.release_id}: no worker answered ({why}) and no record holds its request")
    outcome = _enum(Outcome, server.outcome) or (
        _enum(Outcome, change.outcome) if change and change.status == "closed" else None
    )
    phase = _enum(Phase, server.phase) or (
        Phase.CLOSED if change and change.status == "closed" else Phase.REQUESTED
    )
    awaiting = list(server.awaiting)
    reason = ""
    issues = [f"status rebuilt from records: {why}"]
    if cmdb.problem:
        issues.append(cmdb.problem)
    needs_operator = False
    if outcome is not None:
        phase = Phase.CLOSED
        needs_operator = awaiting == ["operator"]
        reason = (change.reason if change and change.outcome else "") or server.close_reason
    elif server.execution != RUNNING:
        phase, awaiting = Phase.CLOSED, []
        reason = (
            f"the workflow was {server.execution.lower()}"
            + (f" ({server.close_reason})" if server.close_reason else "")
            + " before relman closed the release: no outcome recorded"
            + (f"; the CMDB change is still {change.status}" if change else "")
        )
    elif server.cancel_requested or server.cancel_requested_at is not None:
        awaiting = []
        at = server.cancel_requested_at
        reason = (
            "cancelled (temporal workflow cancel)"
            + (f" at {at:%Y-%m-%d %H:%M:%SZ}" if at else "")
            + ", but no worker has run the release since: no outcome recorded yet; "
            "compensations and the CMDB close run once a worker polls"
        )
    if reason and outcome is None:
        issues.append(reason)
    risk = _enum(Risk, server.risk) or (_enum(Risk, change.risk) if change else None)
    status = ReleaseStatus(
        release_id=server.release_id,
        request=request,
        phase=phase,
        outcome=outcome,
        risk=risk,
        awaiting=awaiting,
        history=_timeline(server, cmdb, phase, outcome),
        needs_operator=needs_operator,
        issues=issues,
        reason=reason[:1000],
        source=StatusSource.RECORDS,
    )
    if change is not None:
        if change.review is not None:
            status.feedback = list(change.review.feedback)
            status.kpis = dict(change.review.kpis)
        if change.production_at is not None and outcome in (Outcome.COMPLETED, Outcome.COMPLETED_WITH_ISSUES):
            status.deploys = [
                DeployRecord(
                    environment=Environment.PRODUCTION,
                    version=request.version,
                    previous_version=change.previous_version,
                    at=change.production_at,
                )
            ]
    return status


def _timeline(
    server: ServerRecord, cmdb: CmdbRecord, phase: Phase, outcome: Outcome | None
) -> list[PhaseTransition]:
    """What happened when, as the server and the CMDB recorded it, oldest first: the phases as
    the workflow published them (from the event history), and the CMDB's rows in the phase in
    which they happened."""
    published = _published(server)
    records: list[PhaseTransition] = []
    if not published and server.started_at is not None:
        records.append(PhaseTransition(phase=Phase.REQUESTED, at=server.started_at, note="workflow started"))
    for row in cmdb.audit:
        entry = _audit_entry(row, phase)
        if entry is not None:
            records.append(entry)
    for a in cmdb.change.approvals if cmdb.change else []:
        verb = "approved" if a.decision == Decision.APPROVE.value else "rejected"
        who = a.approver + (f" for {a.on_behalf_of}" if a.on_behalf_of else "")
        records.append(
            PhaseTransition(
                phase=GATE_PHASE.get(a.gate, phase),
                at=a.at,
                note=_short(f"{a.gate} gate {verb} by {who}" + (f": {a.comment}" if a.comment else "")),
            )
        )
    if server.cancel_requested_at is not None:
        records.append(
            PhaseTransition(
                phase=phase, at=server.cancel_requested_at, note="cancel requested (temporal workflow cancel)"
            )
        )
    if published:
        records = [r.model_copy(update={"phase": _phase_at(published, r.at, r.phase)}) for r in records]
    if server.closed_at is not None and outcome is None:
        records.append(
            PhaseTransition(
                phase=Phase.CLOSED, at=server.closed_at, note=f"workflow {server.execution.lower()}"
            )
        )
    # Stable sort: at the same instant the published phase comes before what happened in it.
    return sorted(published + records, key=lambda e: e.at)


def _published(server: ServerRecord) -> list[PhaseTransition]:
    """Each change of the `ReleasePhase` search attribute, at the time the workflow set it."""
    entries: list[PhaseTransition] = []
    for at, value in server.phases:
        phase = _enum(Phase, value)
        if phase is None or (entries and entries[-1].phase is phase):
            continue
        entries.append(PhaseTransition(phase=phase, at=at, note="" if entries else "workflow started"))
    return entries


def _phase_at(published: list[PhaseTransition], at: datetime, default: Phase) -> Phase:
    current = default
    for entry in published:
        if entry.at > at:
            break
        current = entry.phase
    return current


def _audit_entry(row: AuditEntry, phase: Phase) -> PhaseTransition | None:
    detail = row.detail
    if row.action in ("change.open", "change.update"):
        status = str(detail.get("status", ""))
        return PhaseTransition(
            phase=CHANGE_STATUS_PHASE.get(status, Phase.REQUESTED),
            at=row.at,
            note=_short(f"CMDB: change {status}" + (f" ({detail['note']})" if detail.get("note") else "")),
        )
    if row.action == "change.close":
        reason = f": {detail['reason']}" if detail.get("reason") else ""
        return PhaseTransition(
            phase=Phase.CLOSED,
            at=row.at,
            note=_short(f"CMDB: change closed, {detail.get('outcome')} ({detail.get('close_code')}){reason}"),
        )
    if row.action in ("ci.upsert", "evidence.write"):
        return None
    at_phase = EVENT_PHASE.get(row.action, phase)
    if row.action == "window.overridden" and detail.get("step") == GO_LIVE:
        at_phase = Phase.DEPLOYING
    why = f": {detail['reason']}" if detail.get("reason") else ""
    return PhaseTransition(phase=at_phase, at=row.at, note=_short(f"{row.action} by {row.actor}{why}"))


def _short(text: str) -> str:
    return text[:1000]


def _enum(kind: type[E], value: str | None) -> E | None:
    try:
        return kind(value) if value else None
    except ValueError:
        return None
