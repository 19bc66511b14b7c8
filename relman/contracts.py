"""Typed contracts shared by the workflow, activities, CMDB and CLI.

This module imports nothing of relman, so every other module may import it.
All models are strict: unknown fields are refused and every string is bounded,
so bad input fails with an error naming the field before anything is recorded.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

# --- names and identifiers -------------------------------------------------

TASK_QUEUE = "relman"
WORKFLOW_NAME = "ReleaseWorkflow"

ServiceName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,62}$")]
"""Lower-case service name from the catalog, e.g. `checkout`."""
Version = Annotated[
    str, StringConstraints(max_length=64, pattern=r"^[0-9]+\.[0-9]+\.[0-9]+(?:[-+][0-9A-Za-z.-]{1,40})?$")
]
"""Semantic version, e.g. `2.4.1` or `2.5.0-rc.1`; no slashes, no shell characters."""
UserName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9._-]{1,63}$")]
"""A person's login, e.g. `alice`."""
CommitSha = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{7,40}$")]
RELEASE_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{2,127}$"
ReleaseId = Annotated[str, StringConstraints(pattern=RELEASE_ID_PATTERN)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000)]
Comment = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def release_id_problem(release_id: str) -> str | None:
    """Why `release_id` cannot name a release (it keys every record), or None."""
    if re.fullmatch(RELEASE_ID_PATTERN, release_id):
        return None
    return (
        f"release id {release_id[:80]!r} is invalid: use 3-128 lower-case letters, digits, "
        "'.', '_' or '-', starting with a letter or digit"
    )


def release_id_for(service: str, version: str) -> str:
    """The default workflow id of a release: one release per service + version."""
    return f"release-{service}-{version}".lower().replace("+", "-")


class Model(BaseModel):
    """Base of every contract: strict about unknown fields, frozen where it matters."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)


# --- domain enums ----------------------------------------------------------


class ChangeType(StrEnum):
    STANDARD = "standard"
    NORMAL = "normal"
    EMERGENCY = "emergency"


class Gate(StrEnum):
    REQUEST = "request"
    """CAB (or ECAB) decision on the change request."""
    PLAN = "plan"
    """Approval of one specific release plan hash."""
    RETRO = "retro"
    """Retrospective CAB approval of an emergency change, before close."""
    MARGINAL = "marginal"
    """A human decision on a dark-launch stage whose health was marginal."""


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class GateState(StrEnum):
    PENDING = "pending"
    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    SKIPPED = "skipped"


class Phase(StrEnum):
    REQUESTED = "requested"
    AWAITING_CAB = "awaiting_cab"
    PLANNING = "planning"
    AWAITING_PLAN_APPROVAL = "awaiting_plan_approval"
    BUILDING = "building"
    TESTING = "testing"
    DARK_LAUNCH = "dark_launch"
    DEPLOYING = "deploying"
    REVIEWING = "reviewing"
    CLOSING = "closing"
    COMPENSATING = "compensating"
    CLOSED = "closed"


class Outcome(StrEnum):
    COMPLETED = "completed"
    COMPLETED_WITH_ISSUES = "completed_with_issues"
    REJECTED = "rejected"
    EXPIRED = "expired"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


class CloseCode(StrEnum):
    """The CMDB's close code of a change, one per terminal outcome."""

    SUCCESSFUL = "successful"
    SUCCESSFUL_WITH_ISSUES = "successful_with_issues"
    UNSUCCESSFUL = "unsuccessful"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"
    EXPIRED = "expired"
    ABORTED = "aborted"


class Verdict(StrEnum):
    PASS = "pass"
    MARGINAL = "marginal"
    FAIL = "fail"
    NO_DATA = "no_data"


class Risk(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Criticality(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    MISSION_CRITICAL = "mission_critical"


class Environment(StrEnum):
    STAGING = "staging"
    PRODUCTION = "production"


class WindowKind(StrEnum):
    MAINTENANCE = "maintenance"
    """A planned maintenance period: recorded and listed, it does not close deployment."""
    BLACKOUT = "blackout"
    """No deployments while a blackout is active."""
    FREEZE = "freeze"
    """Change freeze: no deployments except emergency changes."""


class Activity(StrEnum):
    """Registered names of relman's activities; workflow and worker share them."""

    VALIDATE_REQUEST = "validate_request"
    OPEN_CHANGE = "open_change"
    UPDATE_CHANGE = "update_change"
    CLOSE_CHANGE = "close_change"
    CHECK_WINDOW = "check_window"
    BUILD_PACKAGE = "build_package"
    DEPLOY = "deploy"
    ROLLBACK = "rollback"
    RUN_TESTS = "run_tests"
    SET_EXPOSURE = "set_exposure"
    ACQUIRE_LEASE = "acquire_lease"
    RELEASE_LEASE = "release_lease"
    CHECK_HEALTH = "check_health"
    NOTIFY = "notify"


class ErrorType(StrEnum):
    """`ApplicationError.type` of failures that no retry can fix."""

    UNKNOWN_SERVICE = "UnknownService"
    INVALID_REQUEST = "InvalidRequest"
    BUILD_FAILED = "BuildFailed"
    PACKAGE_INVALID = "PackageInvalid"
    TESTS_FAILED = "TestsFailed"
    DEPLOY_FAILED = "DeployFailed"
    HEALTH_FAILED = "HealthFailed"
    ENVIRONMENT_LOCKED = "EnvironmentLocked"
    CATALOG_INVALID = "CatalogInvalid"


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


class ReleaseRequest(Model):
    """What a platform team asks for: a version of a catalog service, and why."""

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

    def content_hash(self) -> str:
        """Stable hash of the request; request and retro approvals are bound to it."""
        return content_hash(self)


class Component(Model):
    name: ServiceName
    version: Version


class RolloutStage(Model):
    """One dark-launch step: expose `percent` of users (plus the allow-list), then bake."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
    percent: float = Field(ge=0, le=100)
    bake_seconds: int = Field(ge=0, le=7 * 24 * 3600)
    allow_list: list[UserName] = Field(default_factory=list, max_length=100)


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


def content_hash(model: BaseModel) -> str:
    """Sha256 of a model's canonical JSON (sorted keys), stable across processes."""
    canonical = json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- approvals -------------------------------------------------------------


class Vote(Model):
    """One approver's answer at a gate, as sent by a client."""

    gate: Gate
    approver: UserName
    decision: Decision
    approved_hash: Sha256
    """Hash of what is approved: the request (request/retro gates) or the plan."""
    on_behalf_of: UserName | None = None
    """The CAB member a delegate acts for; the record keeps both names."""
    comment: Comment = ""


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
    closed_at: datetime | None = None


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
    cab_members: list[UserName] = Field(min_length=1)
    cab_quorum: int = Field(ge=1)
    ecab_members: list[UserName] = Field(default_factory=list)
    stages: list[RolloutStage] = Field(min_length=1, max_length=10)
    acceptance: AcceptanceCriteria = Field(default_factory=AcceptanceCriteria)
    review_period: timedelta = timedelta(days=1)
    timeouts: GateTimeouts = Field(default_factory=GateTimeouts)


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


class WindowDecision(Model):
    open: bool
    reason: Comment = ""
    next_open: datetime | None = None
    """When deployment is next allowed; None when unknown (wait to the deadline)."""


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


class ExposureResult(Model):
    percent: float
    changed: bool = True


class HealthInput(StepInput):
    service: ServiceName
    environment: Environment
    version: Version
    acceptance: AcceptanceCriteria


class HealthReport(Model):
    verdict: Verdict
    error_rate: float | None = None
    latency_ms: float | None = None
    samples: int = 0
    detail: Comment = ""


class Notification(StepInput):
    event: Annotated[str, StringConstraints(pattern=r"^[a-z_.]{1,64}$")]
    message: Comment
    recipients: list[UserName] = Field(default_factory=list)


# --- operator messages -----------------------------------------------------


class OperatorAction(Model):
    """Who asks the release to pause, resume, promote, abort or skip a window, and why."""

    by: UserName
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class Feedback(Model):
    by: UserName
    rating: int = Field(ge=1, le=5)
    comment: Comment = ""
    at: datetime | None = None


class PlanAmendment(Model):
    """A new plan proposed while the plan gate is open; it voids earlier plan votes."""

    by: UserName
    plan: ReleasePlan
    reason: Comment = ""


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


class ReleaseStatus(Model):
    """The full typed state of a release, as the `status` query returns it."""

    release_id: str
    request: ReleaseRequest
    phase: Phase = Phase.REQUESTED
    outcome: Outcome | None = None
    risk: Risk | None = None
    awaiting: str = ""
    """Who or what the release waits for (`cab:alice,bob`, `window`, `operator`)."""
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
    window_overrides: list[OperatorAction] = Field(default_factory=list)
    reason: Comment = ""


CloseChangeInput.model_rebuild()
