"""Contracts of a release train: several components (service + version) released as one.

One request, signed once, names every component; the CAB approves the whole, and the train's
plan hash covers every component's stages, the waves and the backout order, so a vote binds to
the entire train. Each component later runs as its own release (a child workflow) whose request
is derived from the train's (`TrainRequest.component_request`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from relman.contracts.base import (
    ChangeType,
    CloseCode,
    Comment,
    CommitSha,
    LongText,
    Model,
    Outcome,
    Risk,
    ServiceName,
    Sha256,
    ShortText,
    Slug,
    UserName,
    Version,
)
from relman.contracts.governance import Signed, Statement
from relman.contracts.release import (
    ActionRecord,
    AmendmentRecord,
    Approval,
    DeployRecord,
    GateStatus,
    PhaseTransition,
    ReleasePackage,
    ReleasePlan,
    ReleaseRequest,
    ReleaseStatus,
    StageStatus,
    StepInput,
    TestReport,
    TimeWindow,
    WindowWait,
    content_hash,
    request_statement,
)

MAX_COMPONENTS = 20
"""Components per train: the benchmark's size, and a bound on the plan a CAB can read."""

TrainSuiteName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,39}$")]
"""A catalog `train_suites:` entry's name."""


class TrainComponent(Model):
    """One component of a train: a catalog service at a version built from a commit."""

    service: ServiceName
    version: Version
    commit: CommitSha
    after: list[ServiceName] = Field(default_factory=list, max_length=MAX_COMPONENTS)
    """Components of this train it must follow, beyond what the CMDB's relationships say."""
    allow_downgrade: bool = False


class TrainRequest(Signed):
    """What a platform team asks for when several components must go out together."""

    train: Slug
    """The train's name (e.g. `checkout-2026-12`); its release id derives from it."""
    components: list[TrainComponent] = Field(min_length=1, max_length=MAX_COMPONENTS)
    change_type: ChangeType = ChangeType.NORMAL
    requested_by: UserName
    title: ShortText
    description: LongText = ""
    committed_at: datetime | None = None
    target_window: TimeWindow | None = None
    tests: list[TrainSuiteName] = Field(default_factory=list, max_length=20)
    """The catalog's train suites run on the combined staging before the first wave."""

    @model_validator(mode="after")
    def _components_once(self) -> TrainRequest:
        services = [c.service for c in self.components]
        twice = sorted({s for s in services if services.count(s) > 1})
        if twice:
            raise ValueError(f"component(s) listed twice: {', '.join(twice)}")
        suites_twice = sorted({t for t in self.tests if self.tests.count(t) > 1})
        if suites_twice:
            raise ValueError(f"train suite(s) listed twice: {', '.join(suites_twice)}")
        return self

    @property
    def services(self) -> list[str]:
        return [c.service for c in self.components]

    def content_hash(self) -> str:
        """Stable hash of the whole train (without its proof): the request gate's votes bind to it."""
        # Without suites, `tests` stays out of the hash: trains signed before it existed keep theirs.
        return content_hash(self, exclude={"proof"} if self.tests else {"proof", "tests"})

    def statement(self, release_id: str, issued_at: datetime, nonce: str) -> Statement:
        return request_statement(self, release_id, issued_at, nonce)

    def component_request(self, service: str) -> ReleaseRequest:
        """The release request of one component, as the train's child runs it (unsigned: the
        train's signed request and its gates stand for it)."""
        component = next(c for c in self.components if c.service == service)
        return ReleaseRequest(
            service=component.service,
            version=component.version,
            change_type=self.change_type,
            requested_by=self.requested_by,
            title=self.title,
            description=self.description,
            commit=component.commit,
            committed_at=self.committed_at,
            target_window=self.target_window,
            allow_downgrade=component.allow_downgrade,
        )


class TrainTestInput(StepInput):
    """Run the named catalog train suites on the combined staging (`release_id`: the train's id)."""

    train: Slug
    suites: list[TrainSuiteName] = Field(min_length=1, max_length=20)
    min_pass_rate: float = Field(default=1.0, ge=0, le=1)
    """The train's acceptance: every suite must reach it (a suite may demand more)."""


# --- the train in the CMDB and its evidence -----------------------------------------


class ComponentRecord(Model):
    """One component of a train as the CMDB keeps it when the train closes."""

    service: ServiceName
    version: Version
    commit: CommitSha | None = None
    ci_name: ShortText | None = None
    """The CMDB CI the component changes (the catalog's `ci_name`); None: the service's name."""
    previous_version: Version | None = None
    """What ran in production before the train."""
    artifact_digest: Sha256 | None = None
    """The package's digest (`ReleasePackage.digest`), once built."""
    deployed: bool = False
    """Its version runs in production as the train closes: the CI gets a version row."""
    outcome: Outcome | None = None
    """The component's own end: completed (live), rolled_back (backed out), aborted; None if it
    never started."""
    production_at: datetime | None = None
    """When it went live at 100 % (DORA: a deployment of this service)."""
    failed_at: datetime | None = None
    """When it failed after production users saw it (a dark-launch stage above 0 % or its
    go-live), as for a release (DORA: a failed deployment of this service)."""
    recovered_at: datetime | None = None
    """When its backout restored the previous version; None: the train's `recovered_at`."""


ChangeStatus = Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")]


def _components_of(request: TrainRequest, components: list[ComponentRecord]) -> None:
    """Each record names a component of the request, once, at the request's version."""
    wanted = {c.service: c.version for c in request.components}
    seen: set[str] = set()
    for c in components:
        if c.service not in wanted:
            raise ValueError(f"component {c.service} is not in train {request.train}")
        if c.service in seen:
            raise ValueError(f"component {c.service} is recorded twice")
        if c.version != wanted[c.service]:
            raise ValueError(
                f"component {c.service} is at version {c.version}, the train asks for {wanted[c.service]}"
            )
        seen.add(c.service)


class TrainChangeInput(StepInput):
    """Open (or move) the CMDB change of a train: one change row, a component row per service.

    `release_id` is the train's id (`train-<name>`)."""

    request: TrainRequest
    risk: Risk
    status: ChangeStatus
    note: Comment = ""
    ci_names: dict[ServiceName, ShortText] = Field(default_factory=dict)
    """Service -> the CMDB CI it changes (the catalog's `ci_name`); absent: the service's name."""

    @model_validator(mode="after")
    def _known_services(self) -> TrainChangeInput:
        unknown = sorted(set(self.ci_names) - set(self.request.services))
        if unknown:
            raise ValueError(f"ci_names: {', '.join(unknown)} not in train {self.request.train}")
        return self


class TrainCloseInput(StepInput):
    """Everything the CMDB keeps about a finished train, written in one transaction.

    Components not listed are written as never deployed."""

    request: TrainRequest
    risk: Risk
    outcome: Outcome
    close_code: CloseCode
    reason: Comment = ""
    approvals: list[Approval] = Field(default_factory=list)
    """The votes counted at the train's request and plan gates."""
    components: list[ComponentRecord] = Field(default_factory=list, max_length=MAX_COMPONENTS)
    production_at: datetime | None = None
    """When the last component went live (the train as a whole reached production)."""
    failed_at: datetime | None = None
    """When the train failed after production users saw one of its components."""
    recovered_at: datetime | None = None
    """When its backout ended."""

    @model_validator(mode="after")
    def _components_of_the_train(self) -> TrainCloseInput:
        _components_of(self.request, self.components)
        return self


class ComponentEvidence(Model):
    """What one component's children (prepare, launch, backout) did, for the train's evidence."""

    service: ServiceName
    release_id: Annotated[str, StringConstraints(max_length=200)]
    """The component's release id (`<train id>.<service>`): its children's votes are bound to it."""
    plan: ReleasePlan | None = None
    plan_hash: str = ""
    """The component plan its marginal-gate decisions are bound to."""
    package: ReleasePackage | None = None
    tests: TestReport | None = None
    stages: list[StageStatus] = Field(default_factory=list)
    deploys: list[DeployRecord] = Field(default_factory=list)
    compensations: list[str] = Field(default_factory=list)
    issues: list[str] = Field(default_factory=list)
    actions: list[ActionRecord] = Field(default_factory=list)
    window_waits: list[WindowWait] = Field(default_factory=list)
    amendments: list[AmendmentRecord] = Field(default_factory=list)

    @classmethod
    def from_statuses(cls, service: str, release_id: str, *statuses: ReleaseStatus) -> ComponentEvidence:
        """One component's evidence from the statuses its children ended with, in the order
        they ran: the first package and tests, the last plan, every stage, deploy and undo.
        `release_id` is the id its marginal decisions were signed for (the launching child's
        `ReleaseStatus.release_id`)."""
        planned = [s for s in statuses if s.plan is not None]
        return cls(
            service=service,
            release_id=release_id,
            plan=planned[-1].plan if planned else None,
            plan_hash=planned[-1].plan_hash if planned else "",
            package=next((s.package for s in statuses if s.package is not None), None),
            tests=next((s.tests for s in statuses if s.tests is not None), None),
            stages=[x for s in statuses for x in s.stages],
            deploys=[x for s in statuses for x in s.deploys],
            compensations=[x for s in statuses for x in s.compensations],
            issues=[x for s in statuses for x in s.issues],
            actions=[x for s in statuses for x in s.actions],
            window_waits=[x for s in statuses for x in s.window_waits],
            amendments=[x for s in statuses for x in s.amendments],
        )


class TrainEvidenceInput(StepInput):
    """Everything a train's evidence states, as the train closes (`release_id`: the train's id)."""

    request: TrainRequest
    """With the requester's proof."""
    risk: Risk | None = None
    outcome: Outcome | None = None
    close_code: CloseCode
    reason: Comment = ""
    plan: dict[str, Any] | None = None
    """The train plan as JSON (`TrainPlan.model_dump(mode="json")`): `plan_hash` is the sha256
    of its canonical JSON, as `content_hash` computes it."""
    plan_hash: str = ""
    gates: list[GateStatus] = Field(default_factory=list)
    """The train's request and plan gates, every vote with its proof."""
    actions: list[ActionRecord] = Field(default_factory=list)
    """Operator actions on the train (an abort), signed."""
    issues: list[str] = Field(default_factory=list)
    history: list[PhaseTransition] = Field(default_factory=list)
    components: list[ComponentEvidence] = Field(default_factory=list, max_length=MAX_COMPONENTS)
    tests: TestReport | None = None
    """The train suites' report on the combined staging; None when the manifest names none."""

    @model_validator(mode="after")
    def _components_of_the_train(self) -> TrainEvidenceInput:
        services = [c.service for c in self.components]
        unknown = sorted(set(services) - set(self.request.services))
        if unknown:
            raise ValueError(f"evidence of {', '.join(unknown)}: not in train {self.request.train}")
        twice = sorted({s for s in services if services.count(s) > 1})
        if twice:
            raise ValueError(f"evidence of {', '.join(twice)} given twice")
        return self
