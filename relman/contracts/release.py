"""Contracts of one release: request, plan, gates and votes, activity inputs, status."""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import datetime, timedelta
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator

from relman.contracts.analysis import Judgment, Measurement
from relman.contracts.base import (
    ChangeType,
    CloseCode,
    Comment,
    CommitSha,
    ConflictMode,
    Criticality,
    Decision,
    Environment,
    Gate,
    GateState,
    LongText,
    Model,
    Outcome,
    Phase,
    Reason,
    ReleaseId,
    Risk,
    ServiceName,
    Sha256,
    ShortText,
    Slug,
    StatusSource,
    UserName,
    Verdict,
    Version,
    WindowKind,
)
from relman.contracts.governance import (
    Delegation,
    OperatorVerb,
    Refusal,
    Signed,
    Statement,
    StatementKind,
    Trust,
    canonical_digest,
    digest,
)

# --- the request and the plan ----------------------------------------------


class TimeWindow(Model):
    """A half-open interval [start, end) in UTC."""

    start: datetime
    end: datetime

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, end: datetime, info: Any) -> datetime:
        start = info.data.get("start")
        if start is not None and end <= start:
            raise ValueError("end must be after start")
        return end


class ReleaseRequest(Signed):
    """What a platform team asks for: a version of a catalog service, and why.

    Signed by the requester: separation of duties rests on who really asked.
    """

    service: ServiceName
    version: Version
    change_type: ChangeType = ChangeType.NORMAL
    requested_by: UserName
    title: ShortText
    description: LongText = ""
    commit: CommitSha
    committed_at: datetime | None = None
    """When the commit was made; the CMDB's lead-time metric starts here."""
    target_window: TimeWindow | None = None
    """Preferred go-live window; deployment still respects the CMDB's windows."""
    change_model: Slug | None = None
    """The catalog's change model a standard change follows (required for `standard`)."""
    allow_downgrade: bool = False
    """A version lower than the one running is deployed only when the signed request says so."""

    def content_hash(self) -> str:
        """Stable hash of the request (without its proof); request and retro approvals bind to it."""
        # Unset, allow_downgrade stays out of the hash: requests signed before it existed keep theirs.
        return content_hash(self, exclude={"proof"} if self.allow_downgrade else {"proof", "allow_downgrade"})

    def statement(self, release_id: str, issued_at: datetime, nonce: str) -> Statement:
        return request_statement(self, release_id, issued_at, nonce)


class _Requested(Protocol):
    change_type: ChangeType
    requested_by: str
    title: str

    def content_hash(self) -> str: ...


def request_statement(request: _Requested, release_id: str, issued_at: datetime, nonce: str) -> Statement:
    """What a requester signs: the request's hash, its change type and title, for one release."""
    return Statement(
        kind=StatementKind.REQUEST,
        release_id=release_id,
        subject="request",
        subject_hash=request.content_hash(),
        decision=request.change_type.value,
        actor=request.requested_by,
        comment_digest=digest(request.title),
        issued_at=issued_at,
        nonce=nonce,
    )


class Component(Model):
    name: ServiceName
    version: Version


class RolloutStage(Model):
    """One dark-launch step: expose `percent` of users (plus the allow-list), then bake."""

    name: Annotated[Slug, StringConstraints(max_length=32)]
    percent: float = Field(ge=0, le=100)
    bake_seconds: int = Field(ge=0, le=7 * 24 * 3600)
    allow_list: list[UserName] = Field(default_factory=list, max_length=100)


def stages_problem(stages: list[RolloutStage]) -> str | None:
    """The one rule for a rollout: unique names, none named go-live, percentages increasing and
    below 100% (100% is the go-live, a phase of its own). The catalog, the plan and amendments
    all ask this, so a catalog can never hold a rollout the workflow would refuse."""
    names = [s.name for s in stages]
    if GO_LIVE in names:
        return f"a rollout stage may not be named {GO_LIVE}: window overrides name the go-live so"
    if len(set(names)) != len(names):
        return f"rollout stage names repeat: {', '.join(names)}"
    for before, after in itertools.pairwise(stages):
        if after.percent <= before.percent:
            return (
                f"rollout stage percentages must increase: {before.name}={before.percent:g} "
                f"then {after.name}={after.percent:g}"
            )
    if stages and stages[-1].percent >= 100:
        return (
            f"rollout stage {stages[-1].name} is at {stages[-1].percent:g}%: dark-launch stages stay "
            "below 100%; go-live is the deploying phase"
        )
    return None


class AcceptanceCriteria(Model):
    min_pass_rate: float = Field(default=1.0, ge=0, le=1)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_latency_ms: float = Field(default=500, gt=0)


class ReleasePlan(Model):
    """The plan the CAB approves; approvals are bound to its content hash."""

    components: list[Component] = Field(min_length=1, max_length=50)
    stages: list[RolloutStage] = Field(min_length=1, max_length=10)
    acceptance: AcceptanceCriteria = Field(default_factory=AcceptanceCriteria)
    backout_plan: LongText = "Switch production back to the previous version; exposure to 0%."
    target_window: TimeWindow | None = None
    revision: int = Field(default=1, ge=1)

    def content_hash(self) -> str:
        """Stable sha256 of the plan's content; amending the plan changes it."""
        return content_hash(self)


def content_hash(model: BaseModel, exclude: set[str] | None = None) -> str:
    """Sha256 of a model's canonical JSON (sorted keys), stable across processes."""
    canonical = json.dumps(
        model.model_dump(mode="json", exclude=exclude), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- approvals -------------------------------------------------------------


class Vote(Signed):
    """One approver's answer at a gate, as sent by a client, signed by the approver."""

    gate: Gate
    approver: UserName
    decision: Decision
    approved_hash: Sha256
    """Hash of what is approved: the request (request/retro gates), the plan, or a stage."""
    on_behalf_of: UserName | None = None
    """The CAB member a delegate acts for; it counts only with `delegation` signed by them."""
    delegation: Delegation | None = None
    comment: Comment = ""

    def statement(self, release_id: str, issued_at: datetime, nonce: str) -> Statement:
        return Statement(
            kind=StatementKind.VOTE,
            release_id=release_id,
            subject=self.gate.value,
            subject_hash=self.approved_hash,
            decision=self.decision.value,
            actor=self.approver,
            on_behalf_of=self.on_behalf_of,
            comment_digest=digest(self.comment),
            issued_at=issued_at,
            nonce=nonce,
        )


class Approval(Model):
    """A vote as the workflow recorded it, with the time it counted."""

    vote: Vote
    at: datetime


class GateStatus(Model):
    gate: Gate
    state: GateState = GateState.PENDING
    required: int = 0
    """Approvals needed (quorum); 0 when the gate is skipped."""
    eligible: list[UserName] = Field(default_factory=list)
    subject_hash: str = ""
    deadline: datetime | None = None
    votes: list[Approval] = Field(default_factory=list)
    voided: list[Approval] = Field(default_factory=list)
    """Votes for an earlier subject (a plan since amended): kept for the record, never counted."""
    closed_at: datetime | None = None
    groups: dict[str, list[UserName]] = Field(default_factory=dict)
    """A train's gate: every group (a component's approvers) needs one counted approval besides
    the quorum; empty (every release's gate): no such rule."""

    @property
    def approvals(self) -> int:
        """Approving votes so far (the one count the workflow, CLI and UI show)."""
        return sum(1 for a in self.votes if a.vote.decision is Decision.APPROVE)


# --- worker-side service profile (from the catalog) ------------------------


class GateTimeouts(Model):
    cab: timedelta = timedelta(days=7)
    ecab: timedelta = timedelta(hours=4)
    plan: timedelta = timedelta(days=3)
    retro: timedelta = timedelta(days=7)
    marginal: timedelta = timedelta(hours=1)
    window_wait: timedelta = timedelta(days=30)


class ServiceProfile(Model):
    """What the worker's catalog says about a service: roster, stages, criticality."""

    service: ServiceName
    ci_name: ShortText
    criticality: Criticality = Criticality.MEDIUM
    stages: list[RolloutStage] = Field(min_length=1, max_length=10)
    acceptance: AcceptanceCriteria = Field(default_factory=AcceptanceCriteria)
    review_period: timedelta = timedelta(days=1)
    timeouts: GateTimeouts = Field(default_factory=GateTimeouts)
    trust: Trust = Field(default_factory=Trust)
    """Keys, roles (operators, change and release managers) and change models of the service."""
    conflicts: ConflictMode = ConflictMode.WARN
    """What other open releases or windows on related CIs do to this service's releases."""


# --- activity inputs and results --------------------------------------------


class StepInput(Model):
    """Base of activity inputs: the idempotency key is release id + step."""

    release_id: ReleaseId
    step: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9:._-]{0,63}$")]

    @property
    def idempotency_key(self) -> str:
        return f"{self.release_id}/{self.step}"


class ChangeRecordInput(StepInput):
    """Open or update the CMDB change record of a release."""

    request: ReleaseRequest
    risk: Risk
    ci_name: ShortText
    criticality: Criticality = Criticality.MEDIUM
    status: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")]
    note: Comment = ""


class CloseChangeInput(StepInput):
    """Everything the CMDB keeps about a finished release, written in one transaction."""

    request: ReleaseRequest
    risk: Risk
    outcome: Outcome
    close_code: CloseCode
    reason: Comment = ""
    ci_name: str = ""
    deployed_version: Version | None = None
    previous_version: Version | None = None
    artifact_digest: Sha256 | None = None
    approvals: list[Approval] = Field(default_factory=list)
    kpis: dict[str, float] = Field(default_factory=dict)
    feedback: list[Feedback] = Field(default_factory=list)
    production_at: datetime | None = None
    failed_at: datetime | None = None
    recovered_at: datetime | None = None


class WindowQuery(Model):
    service: ServiceName
    environment: Environment
    at: datetime
    change_type: ChangeType
    release_id: ReleaseId | None = None
    """The asking release: itself is never a conflict."""
    step: ShortText | None = None
    """What asks: `request` (conflicts for the CAB), a stage name, or `go-live`."""
    ci_name: ShortText | None = None
    """The CMDB CI the release changes (conflicts are found through its relationships)."""
    conflicts: ConflictMode = ConflictMode.OFF


class Conflict(Model):
    """Something on the same or a related CI that a release should know of before it deploys."""

    ci: ShortText
    """The CI where the conflict is (this release's own, or a related one)."""
    via: Comment = ""
    """How that CI relates to this release's (e.g. `depends_on payments-db`); empty: the same CI."""
    release_id: ReleaseId | None = None
    """Another open release touching that CI, if that is the conflict."""
    window: ShortText | None = None
    """A closing window on that CI's service, if that is the conflict."""
    detail: Comment = ""


class WindowDecision(Model):
    open: bool
    window: str = ""
    """The window that closes deployment (blackouts first), when closed."""
    kind: WindowKind | None = None
    reason: Comment = ""
    next_open: datetime | None = None
    """When deployment is next allowed; None when unknown (wait to the deadline)."""
    conflicts: list[Conflict] = Field(default_factory=list)
    """Conflicts found (query.conflicts warn or block); under block they also close the window."""


class LeaseInput(StepInput):
    """A release's claim on a service's environment: one release at a time goes live."""

    service: ServiceName
    environment: Environment


class LeaseDecision(Model):
    granted: bool
    holder: str | None = None
    """The release holding the lease (this one when granted)."""


class BuildInput(StepInput):
    service: ServiceName
    version: Version
    commit: CommitSha


class Artifact(Model):
    name: Annotated[str, StringConstraints(max_length=255)]
    sha256: Sha256
    size: int = Field(ge=0)


class ReleasePackage(Model):
    service: ServiceName
    version: Version
    path: Annotated[str, StringConstraints(max_length=1024)]
    artifacts: list[Artifact] = Field(min_length=1)
    digest: Sha256
    """Digest over all artifacts: what the CMDB records as the CI version's digest."""
    release_notes: LongText = ""


class DeployInput(StepInput):
    service: ServiceName
    environment: Environment
    version: Version
    package: ReleasePackage
    allow_downgrade: bool = False


class DeployResult(Model):
    environment: Environment
    version: Version
    previous_version: Version | None = None
    changed: bool = True


class RollbackInput(StepInput):
    service: ServiceName
    environment: Environment
    version: Version
    """The version being removed."""
    restore_version: Version | None = None
    """The version to put back when the workflow knows it (the deploy returned)."""
    deploy_step: str | None = None
    """Step of the deploy being undone; when `restore_version` is unknown the adapter
    restores what that deploy recorded as previous, and does nothing if it never ran."""


class TestInput(StepInput):
    service: ServiceName
    version: Version
    package: ReleasePackage
    acceptance: AcceptanceCriteria


class SuiteResult(Model):
    name: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0
    failures: list[str] = Field(default_factory=list)
    timed_out: bool = False

    @property
    def pass_rate(self) -> float:
        ran = self.passed + self.failed + self.errors
        return self.passed / ran if ran else 0.0


class TestReport(Model):
    suites: list[SuiteResult]
    accepted: bool


class ExposureInput(StepInput):
    service: ServiceName
    environment: Environment
    version: Version
    percent: float = Field(ge=0, le=100)
    allow_list: list[UserName] = Field(default_factory=list)
    stage: str = ""
    """The rollout stage (or `go-live`, `exposure-off`) the flag metadata names."""
    digest: str = ""
    """The package's artifact digest, for the flag metadata."""


class ExposureResult(Model):
    percent: float
    changed: bool = True


class HealthInput(StepInput):
    service: ServiceName
    environment: Environment
    version: Version
    acceptance: AcceptanceCriteria
    previous_version: Version | None = None
    """The version the new one replaces, for analysis queries naming `{previous_version}`;
    None: the activity reads what the environment runs."""
    stage: str = ""
    """The dark-launch stage this check judges, where both variants serve and the canary judge
    compares them; empty for checks after go-live."""


class HealthReport(Model):
    verdict: Verdict
    error_rate: float | None = None
    latency_ms: float | None = None
    samples: int = 0
    detail: Comment = ""
    canary: Judgment | None = None
    """The canary judge's comparison of the new variant with the previous one (Prometheus
    analysis with a `canary` section), shown to approvers at a marginal gate."""
    measurements: list[Measurement] = Field(default_factory=list, max_length=200)
    """The Argo-style analysis' measurements, each metric at each run, oldest first."""


class Notification(StepInput):
    event: Annotated[str, StringConstraints(pattern=r"^[a-z_.]{1,64}$")]
    message: Comment
    recipients: list[UserName] = Field(default_factory=list)


class EventInput(StepInput):
    """One audit row in the CMDB for what a person did to a running release (an amendment,
    an override), written when it happens."""

    action: Annotated[str, StringConstraints(pattern=r"^[a-z_.]{1,64}$")]
    actor: UserName
    detail: dict[str, Any] = Field(default_factory=dict)


class EvidenceInput(StepInput):
    """Everything the release evidence states, as the workflow closes the release."""

    status: ReleaseStatus
    close_code: CloseCode


class EvidenceRecord(Model):
    """Where the signed evidence went: the envelope's digest and the key that signed it."""

    envelope_sha256: Sha256
    key_id: str


class AuditAnchor(Model):
    """The CMDB audit log's newest row when a release's evidence was signed: the signed
    envelope pins the chain up to it, which a rewrite of the log cannot recompute."""

    id: int = Field(ge=1)
    row_hash: Sha256


# --- operator messages -----------------------------------------------------


GO_LIVE = "go-live"
"""The step name of the go-live in window overrides (stage names never take it)."""


class OperatorAction(Signed):
    """Who asks the release to pause, resume, promote, abort or pass a window, and why.

    An override names the closed window and the one step it lets through.
    """

    action: OperatorVerb
    by: UserName
    reason: Reason
    window: ShortText | None = None
    """Override only: the name of the closed window it passes."""
    step: Slug | None = None
    """Override only: the stage name, or `go-live`, it lets through."""

    @model_validator(mode="after")
    def _scope(self) -> OperatorAction:
        overriding = self.action is OperatorVerb.OVERRIDE_WINDOW
        if overriding and (self.window is None or self.step is None):
            raise ValueError("an override names the window and the step it lets through")
        if not overriding and (self.window is not None or self.step is not None):
            raise ValueError(f"{self.action} takes no window or step")
        return self

    def statement(self, release_id: str, issued_at: datetime, nonce: str) -> Statement:
        return Statement(
            kind=StatementKind.OPERATOR,
            release_id=release_id,
            subject=self.action.value,
            subject_hash=canonical_digest({"window": self.window, "step": self.step}),
            actor=self.by,
            comment_digest=digest(self.reason),
            issued_at=issued_at,
            nonce=nonce,
        )


class Feedback(Signed):
    by: UserName
    rating: int = Field(ge=1, le=5)
    comment: Comment = ""
    at: datetime | None = None

    def statement(self, release_id: str, issued_at: datetime, nonce: str) -> Statement:
        return Statement(
            kind=StatementKind.FEEDBACK,
            release_id=release_id,
            subject="feedback",
            subject_hash=canonical_digest({"rating": self.rating}),
            actor=self.by,
            comment_digest=digest(self.comment),
            issued_at=issued_at,
            nonce=nonce,
        )


class PlanAmendment(Signed):
    """A new plan proposed while the plan gate is open; it voids earlier plan votes.

    `plan.revision` must be the current revision + 1, so an amendment written against an
    older plan never silently replaces a newer one.
    """

    by: UserName
    plan: ReleasePlan
    reason: Reason

    def statement(self, release_id: str, issued_at: datetime, nonce: str) -> Statement:
        return Statement(
            kind=StatementKind.AMENDMENT,
            release_id=release_id,
            subject="plan",
            subject_hash=self.plan.content_hash(),
            actor=self.by,
            comment_digest=digest(self.reason),
            issued_at=issued_at,
            nonce=nonce,
        )


class AmendmentRecord(Model):
    """An accepted amendment as the workflow recorded it."""

    amendment: PlanAmendment
    at: datetime
    previous_hash: Sha256
    plan_hash: Sha256
    changes: list[str] = Field(default_factory=list)
    """What changed, one line each (`stage quarter: bake 1s -> 0s`)."""


class ActionRecord(Model):
    """An accepted operator action, with its proof, as the evidence keeps it."""

    action: OperatorAction
    at: datetime


class ActionResult(Model):
    """The `operate` update's answer: the accepted action and where the release stands.

    Small on purpose: an update's result is kept in the history with every action.
    """

    record: ActionRecord
    phase: Phase
    paused: bool = False
    baking: str | None = None
    """The stage whose bake runs now, if any (what a `promote` cuts short)."""


class WindowWait(Model):
    """A step that met a closed window: how long it waited, or who let it through."""

    step: Slug
    window: str = ""
    kind: WindowKind | None = None
    reason: Comment = ""
    since: datetime
    reopens: datetime | None = None
    """When the window said deployment is allowed again (None: unknown, re-checked hourly)."""
    until: datetime | None = None
    override: OperatorAction | None = None


class DeployRecord(Model):
    environment: Environment
    version: Version
    previous_version: Version | None = None
    at: datetime


# --- status (the `status` query) -------------------------------------------


class PhaseTransition(Model):
    phase: Phase
    at: datetime
    note: Comment = ""


class StageStatus(Model):
    name: str
    percent: float
    verdict: Verdict | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    note: Comment = ""
    health: HealthReport | None = None
    """The last health report: what an approver decides a marginal stage on."""
    decisions: list[Approval] = Field(default_factory=list)
    """Every human decision taken at this stage's marginal gate, kept after it closes."""


class ReleaseStatus(Model):
    """The full typed state of a release, as the `status` query returns it."""

    release_id: str
    request: ReleaseRequest
    phase: Phase = Phase.REQUESTED
    outcome: Outcome | None = None
    risk: Risk | None = None
    awaiting: list[str] = Field(default_factory=list)
    """Who or what the release waits for (`alice`, `window`, `operator`, `release:<id>`)."""
    paused: bool = False
    gates: dict[Gate, GateStatus] = Field(default_factory=dict)
    plan: ReleasePlan | None = None
    plan_hash: str = ""
    package: ReleasePackage | None = None
    stages: list[StageStatus] = Field(default_factory=list)
    history: list[PhaseTransition] = Field(default_factory=list)
    compensations: list[str] = Field(default_factory=list)
    """Compensations that ran, in the order they ran."""
    issues: list[str] = Field(default_factory=list)
    """Problems that did not stop the release (marginal health, failed compensations)."""
    needs_operator: bool = False
    """Set when a compensation kept failing: an operator must act."""
    feedback: list[Feedback] = Field(default_factory=list)
    kpis: dict[str, float] = Field(default_factory=dict)
    tests: TestReport | None = None
    deploys: list[DeployRecord] = Field(default_factory=list)
    amendments: list[AmendmentRecord] = Field(default_factory=list)
    actions: list[ActionRecord] = Field(default_factory=list)
    """Accepted operator actions, signed; overrides among them."""
    window_waits: list[WindowWait] = Field(default_factory=list)
    refusals: list[Refusal] = Field(default_factory=list)
    """The latest refused messages (bounded); `refused` counts them all."""
    refused: int = 0
    reason: Comment = ""
    conflicts: list[Conflict] = Field(default_factory=list)
    """Conflicts seen at the latest check (on request and before each exposure step)."""
    source: StatusSource = StatusSource.WORKFLOW
    """Whether the workflow answered, or the status was rebuilt from records without a worker."""


CloseChangeInput.model_rebuild()
EvidenceInput.model_rebuild()
