"""One release's audit trail, from the CMDB alone, and its cross-check against Temporal.

`trail_from_cmdb` puts together what the CMDB keeps about a release: the change record
(request, approvals, close code, review), the audit rows the workflow wrote as things
happened (`plan.amended`, `window.overridden`, `change.close`, ...) and the signed release
evidence stored at close (keys, delegations, tests, stages, window waits, deploys). Each
section says where it came from; wherever two of those sources speak of the same thing and
disagree, a finding names it. `cross_check` then compares the trail with the release's status
as Temporal returns it and names every mismatch.

Pure: no temporalio, no I/O. `relman audit` (relman/cli/audit.py) reads the CMDB and Temporal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from relman.contracts import (
    GO_LIVE,
    Approval,
    ChangeType,
    CloseCode,
    Decision,
    Environment,
    Gate,
    GateState,
    HealthReport,
    OperatorAction,
    OperatorVerb,
    Outcome,
    Proof,
    ReleaseStatus,
    SuiteResult,
    Verdict,
)
from relman.identity.evidence import (
    PREDICATE_TYPE,
    DsseEnvelope,
    EvidenceReport,
    ReleaseEvidence,
    b64decode,
    envelope_digest,
)
from relman.workflows.policy import close_code as close_code_of

if TYPE_CHECKING:
    from relman.cmdb.records import ApprovalRecord, AuditEntry, ChangeDetail

CHANGE_RECORD = "change record"
EVIDENCE = "evidence"
AUDIT_LOG = "audit log"
AMENDED = "plan.amended"
OVERRIDDEN = "window.overridden"
CLOSED = "change.close"
EVIDENCE_WRITTEN = "evidence.write"
DEPLOYED = frozenset({Outcome.COMPLETED, Outcome.COMPLETED_WITH_ISSUES})
GATE_ORDER = list(Gate)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- the sections, in the order an auditor reads them ---------------------------------


class AuditRequest(Section):
    """Who asked for what, when, and with which key."""

    release_id: str
    service: str
    version: str
    change_type: ChangeType
    change_model: str | None = None
    risk: str
    title: str
    commit: str | None = None
    requested_by: str
    requested_at: datetime
    request_hash: str | None = None
    """What the request and retro gates are bound to (from the evidence)."""
    key_id: str | None = None
    """The key the requester signed the request with (None: unsigned, or no evidence)."""
    provider: str | None = None
    signed_at: datetime | None = None


class AuditVote(Section):
    """One vote: who, when, what, with which key, for whom by whose delegation, on which hash."""

    gate: Gate
    at: datetime
    approver: str
    decision: Decision
    on_behalf_of: str | None = None
    delegation_key_id: str | None = None
    """The key the member signed the delegation with."""
    delegation_not_after: datetime | None = None
    subject_hash: str
    """The hash the vote is bound to: request, plan or stage."""
    key_id: str | None = None
    provider: str | None = None
    comment: str = ""
    recorded_in: list[str] = Field(default_factory=list)
    """`change record`, `evidence` or both."""

    @property
    def member(self) -> str:
        """Who the vote counts for, as the CLI prints it (`dave for bob`)."""
        return f"{self.approver} for {self.on_behalf_of}" if self.on_behalf_of else self.approver


class AuditGate(Section):
    gate: Gate
    state: GateState | None = None
    """From the evidence; None when the CMDB has only the change record's approvals."""
    required: int | None = None
    subject_hash: str = ""
    votes: list[AuditVote] = Field(default_factory=list)

    def counted(self, decision: Decision) -> list[str]:
        """Members with a vote of `decision` in the change record (what the CMDB counted)."""
        return [v.member for v in self.votes if v.decision is decision and CHANGE_RECORD in v.recorded_in]


class AuditAmendment(Section):
    at: datetime
    by: str
    revision: int | None = None
    previous_hash: str = ""
    plan_hash: str = ""
    changes: list[str] = Field(default_factory=list)
    reason: str = ""
    key_id: str | None = None
    recorded_in: list[str] = Field(default_factory=list)


class AuditArtifact(Section):
    name: str
    sha256: str
    size: int | None = None


class AuditPackage(Section):
    digest: str | None = None
    """Over all artifacts: what the CMDB records as the CI version's digest."""
    artifacts: list[AuditArtifact] = Field(default_factory=list)
    recorded_in: list[str] = Field(default_factory=list)


class AuditTests(Section):
    accepted: bool
    suites: list[SuiteResult] = Field(default_factory=list)


class AuditStage(Section):
    name: str
    percent: float
    verdict: Verdict | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    health: HealthReport | None = None
    decisions: list[AuditVote] = Field(default_factory=list)
    """Who accepted or rejected the stage at the marginal gate."""


class AuditOverride(Section):
    """An operator letting one step through one closed window."""

    at: datetime | None = None
    by: str
    window: str = ""
    step: str = ""
    reason: str = ""
    key_id: str | None = None
    recorded_in: list[str] = Field(default_factory=list)


class AuditWindowWait(Section):
    step: str
    window: str = ""
    reason: str = ""
    since: datetime
    until: datetime | None = None
    overridden_by: str | None = None


class AuditAction(Section):
    """An operator action other than an override (pause, resume, promote, abort)."""

    at: datetime
    action: OperatorVerb
    by: str
    reason: str
    key_id: str | None = None


class AuditDeploy(Section):
    at: datetime
    environment: Environment
    version: str
    previous_version: str | None = None


class AuditFeedback(Section):
    by: str
    rating: int
    comment: str = ""
    at: datetime | None = None
    key_id: str | None = None


class AuditReview(Section):
    at: datetime
    kpis: dict[str, float] = Field(default_factory=dict)
    feedback: list[AuditFeedback] = Field(default_factory=list)


class AuditClose(Section):
    status: str
    outcome: str | None = None
    close_code: CloseCode | None = None
    reason: str = ""
    closed_at: datetime | None = None
    deployed_version: str | None = None
    previous_version: str | None = None
    artifact_digest: str | None = None
    production_at: datetime | None = None
    failed_at: datetime | None = None
    recovered_at: datetime | None = None


class AuditEvidence(Section):
    """The signed release evidence the CMDB holds, if any."""

    present: bool
    envelope_sha256: str | None = None
    key_id: str | None = None
    """The key id the envelope names (a hint; `verified` says whether a catalog key signed it)."""
    verified: bool | None = None
    """None: not checked (no catalog); else whether `relman verify`'s checks all passed."""
    signatures: int = 0
    note: str = ""
    """Why the evidence was not checked, when it was not."""


class AuditLogRow(Section):
    at: datetime
    actor: str
    action: str
    detail: str = ""


class CrossCheck(Section):
    """The trail against Temporal: `checked` when the server answered for this release."""

    checked: bool
    note: str = ""
    mismatches: list[str] = Field(default_factory=list)


class AuditTrail(Section):
    release_id: str
    request: AuditRequest
    gates: list[AuditGate] = Field(default_factory=list)
    plan_hash: str = ""
    plan_revision: int | None = None
    amendments: list[AuditAmendment] = Field(default_factory=list)
    package: AuditPackage | None = None
    tests: AuditTests | None = None
    stages: list[AuditStage] = Field(default_factory=list)
    window_waits: list[AuditWindowWait] = Field(default_factory=list)
    overrides: list[AuditOverride] = Field(default_factory=list)
    actions: list[AuditAction] = Field(default_factory=list)
    deploys: list[AuditDeploy] = Field(default_factory=list)
    review: AuditReview | None = None
    close: AuditClose
    evidence: AuditEvidence
    log: list[AuditLogRow] = Field(default_factory=list)
    findings: list[str] = Field(default_factory=list)
    """Where the CMDB's own records disagree with each other or with the evidence."""
    temporal: CrossCheck | None = None

    @property
    def ok(self) -> bool:
        return not self.findings and not (self.temporal and self.temporal.mismatches)


# --- building the trail ----------------------------------------------------------------


def _at(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if at else "-"


def _short(digest: str | None) -> str:
    return digest[:16] if digest else "none"


def _key(proof: Proof | None) -> tuple[str | None, str | None]:
    return (proof.key_id, proof.provider) if proof is not None else (None, None)


def read_evidence(envelope: Mapping[str, Any]) -> ReleaseEvidence:
    """The predicate of a stored envelope; ValueError naming what is wrong with it.

    Reads, does not verify: the signatures are `relman verify`'s (`verify_evidence`).
    """
    try:
        env = DsseEnvelope.model_validate(dict(envelope))
        statement = json.loads(b64decode(env.payload))
    except (ValidationError, ValueError) as exc:
        raise ValueError(f"it is not a DSSE envelope of JSON ({type(exc).__name__})") from None
    if not isinstance(statement, dict) or statement.get("predicateType") != PREDICATE_TYPE:
        raise ValueError("its payload is not relman release evidence")
    try:
        return ReleaseEvidence.model_validate(statement.get("predicate"))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"its predicate is not valid ({where}: {err['msg']})") from None


def _vote_from_evidence(a: Approval) -> AuditVote:
    v = a.vote
    key_id, provider = _key(v.proof)
    d = v.delegation
    return AuditVote(
        gate=v.gate,
        at=a.at,
        approver=v.approver,
        decision=v.decision,
        on_behalf_of=v.on_behalf_of,
        delegation_key_id=d.proof.key_id if d is not None and d.proof is not None else None,
        delegation_not_after=d.not_after if d is not None else None,
        subject_hash=v.approved_hash,
        key_id=key_id,
        provider=provider,
        comment=v.comment,
        recorded_in=[EVIDENCE],
    )


def _vote_from_cmdb(a: ApprovalRecord, findings: list[str]) -> AuditVote | None:
    try:
        gate, decision = Gate(a.gate), Decision(a.decision)
    except ValueError:
        findings.append(
            f"the change record holds an approval at an unknown gate or decision: {a.gate} {a.decision}."
        )
        return None
    return AuditVote(
        gate=gate,
        at=a.at,
        approver=a.approver,
        decision=decision,
        on_behalf_of=a.on_behalf_of,
        subject_hash=a.approved_hash,
        comment=a.comment,
        recorded_in=[CHANGE_RECORD],
    )


def _merge_votes(cmdb: list[AuditVote], evidence: list[AuditVote], findings: list[str]) -> list[AuditVote]:
    """One list of votes, each marked with where it is recorded; disagreements are findings."""
    merged = list(evidence)
    for vote in cmdb:
        same = next(
            (
                e
                for e in evidence
                if (e.gate, e.approver, e.subject_hash) == (vote.gate, vote.approver, vote.subject_hash)
            ),
            None,
        )
        what = f"gate {vote.gate}: {vote.member}'s {vote.decision.value} of {_short(vote.subject_hash)}"
        if same is None:
            findings.append(f"{what} ({_at(vote.at)}) is in the change record but not in the evidence.")
            merged.append(vote)
            continue
        same.recorded_in.append(CHANGE_RECORD)
        if same.decision is not vote.decision:
            findings.append(f"{what} is recorded as {same.decision.value} in the evidence.")
        if same.on_behalf_of != vote.on_behalf_of:
            findings.append(
                f"{what} is cast for {same.on_behalf_of or 'nobody else'} in the evidence, "
                f"for {vote.on_behalf_of or 'nobody else'} in the change record."
            )
        if same.at != vote.at:
            findings.append(
                f"{what} is counted at {_at(vote.at)} in the change record, {_at(same.at)} in the evidence."
            )
    for vote in evidence:
        if CHANGE_RECORD not in vote.recorded_in:
            findings.append(
                f"gate {vote.gate}: {vote.member}'s {vote.decision.value} of {_short(vote.subject_hash)} "
                f"({_at(vote.at)}) is in the evidence but not in the change record."
            )
    return sorted(merged, key=lambda v: (v.at, v.approver))


def _gates(change: ChangeDetail, ev: ReleaseEvidence | None, findings: list[str]) -> list[AuditGate]:
    cmdb_votes = [v for a in change.approvals if (v := _vote_from_cmdb(a, findings)) is not None]
    gates: dict[Gate, AuditGate] = {}
    evidence_votes: dict[Gate, list[AuditVote]] = {}
    for g in ev.gates if ev is not None else []:
        gates[g.gate] = AuditGate(
            gate=g.gate, state=g.state, required=g.required, subject_hash=g.subject_hash
        )
        evidence_votes[g.gate] = [_vote_from_evidence(a) for a in g.votes]
    for v in cmdb_votes:
        gates.setdefault(v.gate, AuditGate(gate=v.gate))
    for gate, audit_gate in gates.items():
        mine = [v for v in cmdb_votes if v.gate is gate]
        if ev is None:
            audit_gate.votes = mine
        else:
            audit_gate.votes = _merge_votes(mine, evidence_votes.get(gate, []), findings)
    return sorted(gates.values(), key=lambda g: GATE_ORDER.index(g.gate))


def _logged_amendment(row: AuditEntry) -> AuditAmendment:
    d = row.detail
    revision = d.get("revision")
    return AuditAmendment(
        at=row.at,
        by=row.actor,
        revision=revision if isinstance(revision, int) else None,
        previous_hash=str(d.get("previous_hash") or ""),
        plan_hash=str(d.get("plan_hash") or ""),
        changes=[str(c) for c in d.get("changes") or [] if c is not None],
        reason=str(d.get("reason") or ""),
        recorded_in=[AUDIT_LOG],
    )


def _amendments(
    rows: Sequence[AuditEntry], ev: ReleaseEvidence | None, findings: list[str]
) -> list[AuditAmendment]:
    logged = [_logged_amendment(row) for row in rows if row.action == AMENDED]
    if ev is None:
        return logged
    merged: list[AuditAmendment] = []
    for record in ev.amendments:
        m = record.amendment
        entry = AuditAmendment(
            at=record.at,
            by=m.by,
            revision=m.plan.revision,
            previous_hash=record.previous_hash,
            plan_hash=record.plan_hash,
            changes=list(record.changes),
            reason=m.reason,
            key_id=m.proof.key_id if m.proof else None,
            recorded_in=[EVIDENCE],
        )
        merged.append(entry)
        same = next((a for a in logged if a.revision == entry.revision), None)
        if same is None:
            findings.append(
                f"the amendment to revision {entry.revision} by {entry.by} is in the evidence "
                "but not in the audit log."
            )
            continue
        logged.remove(same)
        entry.recorded_in.append(AUDIT_LOG)
        if (same.by, same.plan_hash) != (entry.by, entry.plan_hash):
            findings.append(
                f"the amendment to revision {entry.revision} is by {same.by} to plan "
                f"{_short(same.plan_hash)} in the audit log, by {entry.by} to plan "
                f"{_short(entry.plan_hash)} in the evidence."
            )
    for extra in logged:
        findings.append(
            f"the amendment to revision {extra.revision} by {extra.by} ({_at(extra.at)}) is in the "
            "audit log but not in the evidence."
        )
        merged.append(extra)
    return sorted(merged, key=lambda a: a.at)


def _override_entry(action: OperatorAction, at: datetime | None) -> AuditOverride:
    return AuditOverride(
        at=at,
        by=action.by,
        window=action.window or "",
        step=action.step or "",
        reason=action.reason,
        key_id=action.proof.key_id if action.proof else None,
        recorded_in=[EVIDENCE],
    )


def _overrides(
    rows: Sequence[AuditEntry], ev: ReleaseEvidence | None, findings: list[str]
) -> list[AuditOverride]:
    logged = [
        AuditOverride(
            at=row.at,
            by=row.actor,
            window=str(row.detail.get("window") or ""),
            step=str(row.detail.get("step") or ""),
            reason=str(row.detail.get("reason") or ""),
            recorded_in=[AUDIT_LOG],
        )
        for row in rows
        if row.action == OVERRIDDEN
    ]
    if ev is None:
        return logged
    found: list[AuditOverride] = []
    for record in ev.actions:
        if record.action.action is OperatorVerb.OVERRIDE_WINDOW:
            found.append(_override_entry(record.action, record.at))
    for wait in ev.window_waits:
        o = wait.override
        if o is not None and not any(
            (f.by, f.window, f.step, f.reason) == (o.by, o.window, o.step, o.reason) for f in found
        ):
            found.append(_override_entry(o, wait.until))
    for entry in found:
        row = next(
            (r for r in logged if (r.by, r.window, r.step) == (entry.by, entry.window, entry.step)), None
        )
        if row is None:
            findings.append(
                f"{entry.by}'s override of window {entry.window!r} before {entry.step} is in the evidence "
                "but not in the audit log."
            )
        else:
            logged.remove(row)
            entry.recorded_in.append(AUDIT_LOG)
            entry.at = entry.at or row.at
    for row in logged:
        findings.append(
            f"{row.by}'s override of window {row.window!r} before {row.step} ({_at(row.at)}) is in the "
            "audit log but not in the evidence."
        )
    return sorted([*found, *logged], key=lambda o: o.at or datetime.min.replace(tzinfo=UTC))


def _close_row(rows: Sequence[AuditEntry]) -> AuditEntry | None:
    return next((r for r in reversed(rows) if r.action == CLOSED), None)


def _close(change: ChangeDetail, rows: Sequence[AuditEntry], findings: list[str]) -> AuditClose:
    row = _close_row(rows)
    detail = row.detail if row is not None else {}
    close = AuditClose(
        status=change.status,
        outcome=change.outcome,
        close_code=change.close_code,
        reason=change.reason,
        closed_at=change.closed_at,
        deployed_version=detail.get("deployed_version"),
        previous_version=change.previous_version,
        artifact_digest=change.artifact_digest,
        production_at=change.production_at,
        failed_at=change.failed_at,
        recovered_at=change.recovered_at,
    )
    if change.closed_at is not None and row is None:
        findings.append("the change record is closed, but the audit log has no change.close row for it.")
    if row is not None:
        for name, recorded in (("outcome", change.outcome), ("close_code", change.close_code)):
            logged = detail.get(name)
            if logged != recorded:
                findings.append(
                    f"the change record's {name.replace('_', ' ')} is {recorded or 'empty'}, "
                    f"the audit log's change.close row says {logged or 'nothing'}."
                )
    return close


def _log(rows: Iterable[AuditEntry]) -> list[AuditLogRow]:
    out = []
    for row in rows:
        d = row.detail
        if row.action in ("change.open", "change.update"):
            detail = " ".join(x for x in (str(d.get("status") or ""), str(d.get("note") or "")) if x)
        elif row.action == CLOSED:
            detail = f"{d.get('outcome')}, close code {d.get('close_code')}"
        elif row.action == AMENDED:
            detail = f"revision {d.get('revision')}"
        elif row.action == OVERRIDDEN:
            detail = f"window {d.get('window')!r} before {d.get('step')}"
        elif row.action == EVIDENCE_WRITTEN:
            detail = f"sha256 {d.get('sha256')}, key {d.get('key_id')}"
        else:
            detail = ""
        out.append(AuditLogRow(at=row.at, actor=row.actor, action=row.action, detail=detail))
    return out


def _compare_request(change: ChangeDetail, ev: ReleaseEvidence, findings: list[str]) -> None:
    r = ev.request
    if ev.release_id != change.release_id:
        findings.append(f"the stored evidence is of release {ev.release_id}, not {change.release_id}.")
    for name, cmdb, evidence in (
        ("service", change.service, r.service),
        ("version", change.version, r.version),
        ("change type", change.change_type.value, r.change_type.value),
        ("requester", change.requested_by, r.requested_by),
        ("title", change.title, r.title),
        ("commit", change.commit, r.commit),
    ):
        if cmdb != evidence:
            findings.append(f"the change record's {name} is {cmdb!r}, the evidence's {evidence!r}.")
    if change.closed_at is not None:
        outcome = ev.outcome.value if ev.outcome else None
        if change.outcome != outcome:
            findings.append(f"the change record's outcome is {change.outcome}, the evidence's {outcome}.")
        if change.close_code is not ev.close_code:
            findings.append(
                f"the change record's close code is {change.close_code}, the evidence's {ev.close_code}."
            )


def _production_version(deploys: Sequence[AuditDeploy]) -> str | None:
    live = [d for d in deploys if d.environment is Environment.PRODUCTION]
    return live[-1].version if live else None


def _evidence(
    change: ChangeDetail,
    rows: Sequence[AuditEntry],
    envelope: Mapping[str, Any] | None,
    report: EvidenceReport | None,
    findings: list[str],
) -> tuple[AuditEvidence, ReleaseEvidence | None]:
    """What the CMDB holds of the evidence, and its predicate when it can be read."""
    if envelope is None:
        if change.closed_at is not None:
            findings.append("the change is closed, but the CMDB holds no release evidence for it.")
        return AuditEvidence(present=False), None
    evidence = AuditEvidence(present=True, envelope_sha256=envelope_digest(envelope))
    signatures = envelope.get("signatures")
    if isinstance(signatures, list) and signatures and isinstance(signatures[0], dict):
        evidence.key_id = str(signatures[0].get("keyid") or "") or None
    written = next((r for r in rows if r.action == EVIDENCE_WRITTEN), None)
    if written is not None and written.detail.get("sha256") != evidence.envelope_sha256:
        findings.append(
            f"the stored evidence has sha256 {evidence.envelope_sha256}, but the audit log recorded "
            f"{written.detail.get('sha256')} when it was written."
        )
    if report is not None:
        evidence.verified, evidence.signatures = report.ok, report.signatures
        findings += [f"evidence: {f}" for f in report.findings]
    try:
        return evidence, read_evidence(envelope)
    except ValueError as exc:
        findings.append(f"the stored evidence cannot be read: {exc}.")
        return evidence, None


def _request(change: ChangeDetail, ev: ReleaseEvidence | None, findings: list[str]) -> AuditRequest:
    request = AuditRequest(
        release_id=change.release_id,
        service=change.service,
        version=change.version,
        change_type=change.change_type,
        risk=change.risk,
        title=change.title,
        commit=change.commit,
        requested_by=change.requested_by,
        requested_at=change.requested_at,
    )
    if ev is not None:
        _compare_request(change, ev, findings)
        proof = ev.request.proof
        request.change_model = ev.request.change_model
        request.request_hash = ev.request_hash
        request.key_id, request.provider = _key(proof)
        request.signed_at = proof.issued_at if proof else None
    return request


def _package(change: ChangeDetail, ev: ReleaseEvidence | None, findings: list[str]) -> AuditPackage | None:
    if ev is None or ev.package is None:
        if change.artifact_digest is None:
            return None
        if ev is not None:
            findings.append("the change record has an artifact digest, but the evidence has no package.")
        return AuditPackage(digest=change.artifact_digest, recorded_in=[CHANGE_RECORD])
    package = AuditPackage(
        digest=ev.package.digest,
        artifacts=[AuditArtifact(name=a.name, sha256=a.sha256, size=a.size) for a in ev.package.artifacts],
        recorded_in=[EVIDENCE],
    )
    if change.artifact_digest is not None:
        package.recorded_in.append(CHANGE_RECORD)
        if change.artifact_digest != ev.package.digest:
            findings.append(
                f"the change record's artifact digest is {change.artifact_digest}, "
                f"the evidence's package digest {ev.package.digest}."
            )
    return package


def _review(change: ChangeDetail) -> AuditReview | None:
    if change.review is None:
        return None
    return AuditReview(
        at=change.review.at,
        kpis=dict(change.review.kpis),
        feedback=[
            AuditFeedback(
                by=f.by,
                rating=f.rating,
                comment=f.comment,
                at=f.at,
                key_id=f.proof.key_id if f.proof else None,
            )
            for f in change.review.feedback
        ],
    )


def _from_evidence(trail: AuditTrail, ev: ReleaseEvidence, findings: list[str]) -> None:
    """The sections only the evidence holds: plan, tests, stages, windows, actions, deploys."""
    trail.plan_hash = ev.plan_hash
    trail.plan_revision = ev.plan.revision if ev.plan else None
    if ev.tests is not None:
        trail.tests = AuditTests(
            accepted=ev.tests.accepted,
            suites=list(ev.tests.suites),
        )
    trail.stages = [
        AuditStage(
            name=s.name,
            percent=s.percent,
            verdict=s.verdict,
            started_at=s.started_at,
            ended_at=s.ended_at,
            health=s.health,
            decisions=[_vote_from_evidence(a) for a in s.decisions],
        )
        for s in ev.stages
    ]
    trail.window_waits = [
        AuditWindowWait(
            step=w.step,
            window=w.window,
            reason=w.reason,
            since=w.since,
            until=w.until,
            overridden_by=w.override.by if w.override else None,
        )
        for w in ev.window_waits
    ]
    trail.actions = [
        AuditAction(
            at=a.at,
            action=a.action.action,
            by=a.action.by,
            reason=a.action.reason,
            key_id=a.action.proof.key_id if a.action.proof else None,
        )
        for a in ev.actions
        if a.action.action is not OperatorVerb.OVERRIDE_WINDOW
    ]
    trail.deploys = [
        AuditDeploy(
            at=d.at, environment=d.environment, version=d.version, previous_version=d.previous_version
        )
        for d in ev.deploys
    ]
    deployed = trail.close.deployed_version
    if deployed is not None:
        live = _production_version(trail.deploys)
        if live != deployed:
            findings.append(
                f"the CMDB records version {deployed} as deployed, the evidence's last production deploy "
                f"is {live or 'none'}."
            )


def trail_from_cmdb(
    change: ChangeDetail,
    audit_rows: Sequence[AuditEntry],
    envelope: Mapping[str, Any] | None,
    *,
    report: EvidenceReport | None = None,
) -> AuditTrail:
    """The audit trail of one release from its change record, its audit rows (oldest first)
    and its stored evidence envelope (None when the CMDB holds none). `report`: the evidence
    checked against the catalog (`verify_evidence`), when the caller could; its findings join
    the trail's.
    """
    findings: list[str] = []
    evidence, ev = _evidence(change, audit_rows, envelope, report, findings)
    trail = AuditTrail(
        release_id=change.release_id,
        request=_request(change, ev, findings),
        gates=_gates(change, ev, findings),
        amendments=_amendments(audit_rows, ev, findings),
        package=_package(change, ev, findings),
        overrides=_overrides(audit_rows, ev, findings),
        review=_review(change),
        close=_close(change, audit_rows, findings),
        evidence=evidence,
        log=_log(audit_rows),
    )
    if ev is not None:
        _from_evidence(trail, ev, findings)
    elif trail.amendments:
        # Without evidence, the last amendment the audit log records says which plan it was.
        last = trail.amendments[-1]
        trail.plan_hash, trail.plan_revision = last.plan_hash, last.revision
    trail.findings = list(dict.fromkeys(findings))
    return trail


# --- against Temporal ------------------------------------------------------------------


def _members(votes: Iterable[Approval], decision: Decision) -> list[str]:
    return [
        f"{a.vote.approver} for {a.vote.on_behalf_of}" if a.vote.on_behalf_of else a.vote.approver
        for a in votes
        if a.vote.decision is decision
    ]


def _names(members: Sequence[str]) -> str:
    return f" ({', '.join(members)})" if members else ""


def cross_check(trail: AuditTrail, status: ReleaseStatus) -> list[str]:
    """Every way the CMDB's trail disagrees with the release's status in Temporal, one sentence
    each: outcome, close code against the outcome, plan hash, votes counted per gate, package
    digest and artifacts, deployed version, stage verdicts, amendments and overrides.

    Gate votes, package digest and deployed version reach the change record when the release
    closes, so they are compared only once the CMDB change is closed.
    """
    out: list[str] = []
    close = trail.close
    closed = close.closed_at is not None
    if status.release_id != trail.release_id:
        out.append(f"Temporal answered for release {status.release_id}, not {trail.release_id}.")
    outcome = status.outcome.value if status.outcome else None
    if closed and outcome is None:
        out.append(
            f"outcome: the CMDB closed the change as {close.outcome}, but in Temporal the release is "
            f"still {status.phase.value}."
        )
    elif not closed and outcome is not None:
        out.append(
            f"outcome: Temporal says the release ended {outcome}, "
            f"but the CMDB change is still {close.status}."
        )
    elif closed and close.outcome != outcome:
        out.append(f"outcome: the CMDB says {close.outcome}, Temporal {outcome}.")
    if closed and status.outcome is not None and close.close_code is not None:
        allowed = {close_code_of(status.outcome)}
        if status.needs_operator:
            allowed.add(CloseCode.UNSUCCESSFUL)
        if close.close_code not in allowed:
            out.append(
                f"close code: the CMDB says {close.close_code}, but Temporal's outcome {outcome} "
                f"closes as {' or '.join(sorted(allowed))}."
            )
    if trail.plan_hash and status.plan_hash and trail.plan_hash != status.plan_hash:
        out.append(f"plan hash: the CMDB has {_short(trail.plan_hash)}, Temporal {_short(status.plan_hash)}.")
    if closed:
        out += _vote_mismatches(trail, status)
        out += _package_mismatches(trail, status)
    if trail.evidence.present:
        out += _evidence_mismatches(trail, status)
    if trail.review is not None and status.kpis and trail.review.kpis != status.kpis:
        out.append(f"KPIs: the CMDB's review has {_kpis(trail.review.kpis)}, Temporal {_kpis(status.kpis)}.")
    return out


def _kpis(kpis: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(kpis.items())) or "none"


def _vote_mismatches(trail: AuditTrail, status: ReleaseStatus) -> list[str]:
    out = []
    ours = {g.gate: g for g in trail.gates}
    for gate in GATE_ORDER:
        g, theirs = ours.get(gate), status.gates.get(gate)
        votes = theirs.votes if theirs is not None else []
        for decision, noun in ((Decision.APPROVE, "approval(s)"), (Decision.REJECT, "rejection(s)")):
            mine = sorted(g.counted(decision)) if g is not None else []
            temporal = sorted(_members(votes, decision))
            if mine != temporal:
                out.append(
                    f"gate {gate}: the CMDB counts {len(mine)} {noun}{_names(mine)}, "
                    f"Temporal {len(temporal)}{_names(temporal)}."
                )
    return out


def _package_mismatches(trail: AuditTrail, status: ReleaseStatus) -> list[str]:
    out = []
    close, package = trail.close, status.package
    if close.artifact_digest is not None:
        theirs = package.digest if package is not None else None
        if close.artifact_digest != theirs:
            out.append(
                f"artifact digest: the CMDB has {close.artifact_digest}, Temporal {theirs or 'no package'}."
            )
    if close.deployed_version is not None or (status.outcome in DEPLOYED and close.outcome is not None):
        live = [d for d in status.deploys if d.environment is Environment.PRODUCTION]
        theirs_version = live[-1].version if live else None
        if close.deployed_version != theirs_version:
            out.append(
                f"deployed version: the CMDB has {close.deployed_version or 'none'}, "
                f"Temporal {theirs_version or 'none'}."
            )
    return out


def _evidence_mismatches(trail: AuditTrail, status: ReleaseStatus) -> list[str]:
    """What only the evidence in the CMDB records (artifacts, stages, amendments, overrides)."""
    out = []
    if trail.package is not None and trail.package.artifacts:
        mine = sorted((a.name, a.sha256) for a in trail.package.artifacts)
        theirs = sorted((a.name, a.sha256) for a in status.package.artifacts) if status.package else []
        if mine != theirs:
            out.append(
                "artifacts: the CMDB's evidence lists "
                + (", ".join(f"{n} {_short(s)}" for n, s in mine) or "none")
                + ", Temporal "
                + (", ".join(f"{n} {_short(s)}" for n, s in theirs) or "none")
                + "."
            )
    mine_stages = [(s.name, s.verdict.value if s.verdict else "-") for s in trail.stages]
    their_stages = [(s.name, s.verdict.value if s.verdict else "-") for s in status.stages]
    if mine_stages != their_stages:
        out.append(
            "stages: the CMDB's evidence has "
            + (", ".join(f"{n} {v}" for n, v in mine_stages) or "none")
            + ", Temporal "
            + (", ".join(f"{n} {v}" for n, v in their_stages) or "none")
            + "."
        )
    mine_revisions = [a.revision for a in trail.amendments]
    their_revisions = [a.amendment.plan.revision for a in status.amendments]
    if mine_revisions != their_revisions:
        out.append(
            f"amendments: the CMDB records revision(s) {_ints(mine_revisions)}, "
            f"Temporal {_ints(their_revisions)}."
        )
    mine_overrides = sorted((o.by, o.window, o.step) for o in trail.overrides)
    their_overrides = sorted(
        {
            (a.action.by, a.action.window or "", a.action.step or "")
            for a in status.actions
            if a.action.action is OperatorVerb.OVERRIDE_WINDOW
        }
    )
    if mine_overrides != their_overrides:
        out.append(
            f"window overrides: the CMDB records {_overrides_text(mine_overrides)}, "
            f"Temporal {_overrides_text(their_overrides)}."
        )
    return out


def _ints(values: Sequence[int | None]) -> str:
    return ", ".join(str(v) for v in values) or "none"


def _overrides_text(items: Sequence[tuple[str, str, str]]) -> str:
    return (
        ", ".join(
            f"{by} on {window!r} before {'go-live' if step == GO_LIVE else step}"
            for by, window, step in items
        )
        or "none"
    )
