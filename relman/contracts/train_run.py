"""Contracts of a running release train: its plan, its children's inputs, its status.

The train (a parent workflow) drives each component through child workflows, one per mode,
with everything a child needs in its start input: no parent-to-child signal exists, since a
signal has no sender and anyone with Temporal access could send one.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from relman.contracts.base import (
    Environment,
    Gate,
    LongText,
    Model,
    Outcome,
    Phase,
    ReleaseId,
    Risk,
    ServiceName,
    Version,
)
from relman.contracts.governance import Refusal
from relman.contracts.release import (
    AcceptanceCriteria,
    ActionRecord,
    Component,
    DeployRecord,
    GateStatus,
    PhaseTransition,
    ReleasePackage,
    ReleasePlan,
    ReleaseRequest,
    RolloutStage,
    ServiceProfile,
    TestReport,
    TimeWindow,
    content_hash,
)
from relman.contracts.train import MAX_COMPONENTS, TrainRequest

TRAIN_WORKFLOW = "ReleaseTrain"
COMPONENT_WORKFLOW = "ReleaseComponent"


class ComponentPlan(Model):
    """One component as the CAB approves it inside the train's plan."""

    service: ServiceName
    version: Version
    stages: list[RolloutStage] = Field(min_length=1, max_length=10)
    acceptance: AcceptanceCriteria
    backout_plan: LongText


class TrainPlan(Model):
    """The plan of a whole train; the plan gate's votes bind to its hash, which covers every
    component's stages and acceptance, the waves, the backout order and the train's acceptance."""

    components: list[ComponentPlan] = Field(min_length=1, max_length=MAX_COMPONENTS)
    waves: list[list[ServiceName]] = Field(min_length=1)
    backout_order: list[ServiceName] = Field(min_length=1)
    acceptance: AcceptanceCriteria
    """The whole train's acceptance: the strictest of its components'."""
    target_window: TimeWindow | None = None
    revision: int = Field(default=1, ge=1)

    def content_hash(self) -> str:
        return content_hash(self)

    def component(self, service: str) -> ComponentPlan:
        return next(c for c in self.components if c.service == service)

    def release_plan(self, service: str) -> ReleasePlan:
        """The plan a component's child runs: its part of the train's approved plan."""
        part = self.component(service)
        return ReleasePlan(
            components=[Component(name=part.service, version=part.version)],
            stages=part.stages,
            acceptance=part.acceptance,
            backout_plan=part.backout_plan,
            target_window=self.target_window,
            revision=self.revision,
        )


class TrainProfile(Model):
    """What the catalog says about a train's components (the validate_train activity)."""

    profiles: dict[ServiceName, ServiceProfile]
    relationships: list[tuple[str, str, str]] = Field(default_factory=list)
    """`(service, type, target)` triples of the catalog, targets that are services named so."""


class ComponentMode(StrEnum):
    PREPARE = "prepare"
    """Build, deploy to staging, test; on failure undo its own staging deploy."""
    LAUNCH = "launch"
    """Dark launch through the stages, then go-live; on failure undo its own exposure and
    production deploy."""
    BACKOUT = "backout"
    """Undo what a prepared or launched component did, each compensation once."""


class Backout(Model):
    """What a BACKOUT child undoes (the parent knows what its children did or may have done)."""

    exposure: bool = False
    production: bool = False
    production_restore: Version | None = None
    """The version production ran before (unknown: the adapter reads the deploy's record)."""
    staging: bool = False
    staging_restore: Version | None = None


class ComponentInput(Model):
    """Everything a component's child workflow runs on; the train's gates stand for its own."""

    train_id: ReleaseId
    mode: ComponentMode
    request: ReleaseRequest
    profile: ServiceProfile
    plan: ReleasePlan
    risk: Risk
    package: ReleasePackage | None = None
    """LAUNCH and BACKOUT: what PREPARE built."""
    backout: Backout = Field(default_factory=Backout)


class ComponentState(StrEnum):
    PENDING = "pending"
    PREPARED = "prepared"
    LAUNCHED = "launched"
    """Its launch started: something may be exposed or deployed to production."""
    LIVE = "live"
    FAILED = "failed"
    BACKED_OUT = "backed_out"


class ComponentStatus(Model):
    """One component of a running train."""

    service: ServiceName
    version: Version
    state: ComponentState = ComponentState.PENDING
    wave: int = 0
    children: list[str] = Field(default_factory=list)
    """Child workflow ids, in the order they ran (`<train id>.<service>.<mode>`)."""
    package: ReleasePackage | None = None
    tests: TestReport | None = None
    deploys: list[DeployRecord] = Field(default_factory=list)
    compensations: list[str] = Field(default_factory=list)
    staged: bool = False
    """A staging deploy may stand (a preparation started and was not undone)."""
    exposed: bool = False
    """Exposure or a production deploy may stand (a launch started and was not undone)."""
    needs_operator: bool = False
    issue: str = ""
    live_at: datetime | None = None
    backed_out_at: datetime | None = None

    def deployed(self, env: Environment) -> DeployRecord | None:
        return next((d for d in reversed(self.deploys) if d.environment is env), None)


class TrainStatus(Model):
    """The full typed state of a train, as its `status` query returns it."""

    train_id: str
    request: TrainRequest
    phase: Phase = Phase.REQUESTED
    outcome: Outcome | None = None
    reason: str = ""
    risk: Risk | None = None
    awaiting: list[str] = Field(default_factory=list)
    gates: dict[Gate, GateStatus] = Field(default_factory=dict)
    plan: TrainPlan | None = None
    plan_hash: str = ""
    waves: list[list[str]] = Field(default_factory=list)
    components: dict[str, ComponentStatus] = Field(default_factory=dict)
    history: list[PhaseTransition] = Field(default_factory=list)
    issues: list[str] = Field(default_factory=list)
    needs_operator: bool = False
    actions: list[ActionRecord] = Field(default_factory=list)
    refusals: list[Refusal] = Field(default_factory=list)
    refused: int = 0
    leases: list[str] = Field(default_factory=list)
    """Services whose lease the train holds now."""
    tests: TestReport | None = None
    """The train suites' report on the combined staging (the manifest's `tests:`)."""
    closed_at: datetime | None = None
