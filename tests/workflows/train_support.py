"""A small test catalog of a train's components and test activities that know which
component each call is for (`<train id>.<service>` release ids)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from relman.contracts import (
    Activity,
    Decision,
    ErrorType,
    EvidenceRecord,
    Gate,
    GateState,
    GateTimeouts,
    HealthInput,
    HealthReport,
    LeaseDecision,
    LeaseInput,
    OperatorAction,
    OperatorVerb,
    Phase,
    Role,
    RolloutStage,
    ServiceProfile,
    StepInput,
    SuiteResult,
    TestReport,
    Verdict,
    Vote,
    train_id_for,
)
from relman.contracts.train import (
    TrainChangeInput,
    TrainCloseInput,
    TrainComponent,
    TrainEvidenceInput,
    TrainRequest,
    TrainTestInput,
)
from relman.contracts.train_run import TrainProfile, TrainStatus
from relman.workflows.train import ReleaseTrain
from tests import people
from tests.workflows.fakes import FakeActivities

STAGES = [
    RolloutStage(name="allow-list", percent=0, bake_seconds=60, allow_list=["tester"]),
    RolloutStage(name="ten", percent=10, bake_seconds=60),
]
RELATIONSHIPS = [
    ("api", "depends_on", "db-migration"),
    ("worker", "depends_on", "api"),
    ("api", "runs_on", "local-host"),
]
SERVICES = ("db-migration", "api", "worker", "billing")
TRAIN_SUITES = ("combined", "smoke")
"""The catalog's train suites (`train_suites:`)."""
DATA_CAB = ["carol", "dave"]
"""db-migration's CAB; every other component's is alice and bob."""


def profile_for(service: str) -> ServiceProfile:
    if service not in SERVICES:
        raise KeyError(service)
    trust = people.trust()
    cab = DATA_CAB if service == "db-migration" else ["alice", "bob"]
    trust = trust.model_copy(update={"roles": {**trust.roles, Role.CAB: cab}})
    return ServiceProfile(
        service=service, ci_name=f"{service}-app", stages=STAGES, trust=trust, timeouts=GateTimeouts()
    )


@dataclass
class TrainFakes(FakeActivities):
    """FakeActivities plus validate_train; `fail` injects a failure at (service, step)."""

    profile: Callable[[str], ServiceProfile] = profile_for
    """The catalog a child re-reads at its marginal gate: this file's, as validate_train's."""
    fail: set[tuple[str, str]] = field(default_factory=set)
    marginal: set[tuple[str, str]] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)
    """People removed from every CAB after the catalog's first read (the request gate's)."""
    """(service, health step) whose health is marginal (a human decides on the child)."""
    failing_suites: set[str] = field(default_factory=set)
    """Train suites that fail on the combined staging."""
    log: list[tuple[str, str, str]] = field(default_factory=list)
    """(activity, component release id or train id, step), in the order they ran."""
    lease_log: list[tuple[str, str]] = field(default_factory=list)
    changes: list[TrainChangeInput] = field(default_factory=list)
    train_closes: list[TrainCloseInput] = field(default_factory=list)
    train_evidence: list[TrainEvidenceInput] = field(default_factory=list)

    def _call(self, name: Activity, inp: StepInput) -> None:
        self.log.append((name.value, inp.release_id, inp.step))
        service = inp.release_id.rsplit(".", 1)[-1]
        if (service, inp.step) in self.fail:
            self.keys[(name.value, inp.idempotency_key)] += 1
            raise ApplicationError(
                f"injected failure at {service} {inp.step}", type=ErrorType.DEPLOY_FAILED, non_retryable=True
            )
        super()._call(name, inp)

    @activity.defn(name=Activity.VALIDATE_TRAIN)
    async def validate_train(self, request: TrainRequest) -> TrainProfile:
        self.calls.append((Activity.VALIDATE_TRAIN.value, "validate"))
        unknown = [s for s in request.services if s not in SERVICES]
        if unknown:
            raise ApplicationError(
                f"unknown component(s) {', '.join(unknown)}",
                type=ErrorType.UNKNOWN_SERVICE,
                non_retryable=True,
            )
        if missing := [t for t in request.tests if t not in TRAIN_SUITES]:
            raise ApplicationError(
                f"unknown train suite(s) {', '.join(missing)}; the catalog has: {', '.join(TRAIN_SUITES)}",
                type=ErrorType.INVALID_REQUEST,
                non_retryable=True,
            )
        profiles = {s: profile_for(s) for s in request.services}
        if self.revoked and any(name == Activity.VALIDATE_TRAIN.value for name, _ in self.calls[:-1]):
            # A later read of the catalog: the revoked people are no longer on any CAB.
            for service, profile in profiles.items():
                roles = {**profile.trust.roles}
                roles[Role.CAB] = [m for m in roles[Role.CAB] if m not in self.revoked]
                trust = profile.trust.model_copy(update={"roles": roles})
                profiles[service] = profile.model_copy(update={"trust": trust})
        return TrainProfile(profiles=profiles, relationships=RELATIONSHIPS)

    @activity.defn(name=Activity.RUN_TRAIN_TESTS)
    async def run_train_tests(self, inp: TrainTestInput) -> TestReport:
        """Each suite passes 3 tests, or fails one if it is in `failing_suites`."""
        self.log.append((Activity.RUN_TRAIN_TESTS.value, inp.release_id, inp.step))
        suites = [
            SuiteResult(name=n, passed=2, failed=1, failures=[f"{n}::test_together"])
            if n in self.failing_suites
            else SuiteResult(name=n, passed=3)
            for n in inp.suites
        ]
        report = TestReport(suites=suites, accepted=not self.failing_suites & set(inp.suites))
        if not report.accepted:
            raise ApplicationError(
                f"train {inp.train} failed acceptance; failing: {', '.join(sorted(self.failing_suites))}",
                report.model_dump(mode="json"),
                type=ErrorType.TESTS_FAILED,
                non_retryable=True,
            )
        return report

    @activity.defn(name=Activity.CHECK_HEALTH)
    async def check_health(self, inp: HealthInput) -> HealthReport:
        report = await super().check_health(inp)
        if (inp.release_id.rsplit(".", 1)[-1], inp.step) in self.marginal:
            return report.model_copy(update={"verdict": Verdict.MARGINAL, "detail": "marginal"})
        return report

    @activity.defn(name=Activity.ACQUIRE_LEASE)
    async def acquire_lease(self, inp: LeaseInput) -> LeaseDecision:
        self.lease_log.append((inp.release_id, inp.service))
        return await super().acquire_lease(inp)

    @activity.defn(name=Activity.OPEN_TRAIN)
    async def open_train(self, inp: TrainChangeInput) -> None:
        self._call(Activity.OPEN_TRAIN, inp)
        self.changes.append(inp)

    @activity.defn(name=Activity.UPDATE_TRAIN)
    async def update_train(self, inp: TrainChangeInput) -> None:
        self._call(Activity.UPDATE_TRAIN, inp)
        self.changes.append(inp)

    @activity.defn(name=Activity.CLOSE_TRAIN)
    async def close_train(self, inp: TrainCloseInput) -> None:
        self._call(Activity.CLOSE_TRAIN, inp)
        self.train_closes.append(inp)

    @activity.defn(name=Activity.WRITE_TRAIN_EVIDENCE)
    async def write_train_evidence(self, inp: TrainEvidenceInput) -> EvidenceRecord:
        self._call(Activity.WRITE_TRAIN_EVIDENCE, inp)
        self.train_evidence.append(inp)
        return EvidenceRecord(envelope_sha256="0" * 64, key_id="test")

    def all(self, *, cmdb: bool = True) -> list[Any]:
        train = [self.open_train, self.update_train, self.close_train] if cmdb else []
        return [
            self.validate_train,
            *train,
            self.write_train_evidence,
            self.run_train_tests,
            *super().all(cmdb=cmdb),
        ]

    def undone(self, release_id: str) -> list[str]:
        """The compensations that ran for a component, in order."""
        return [
            step
            for name, rid, step in self.log
            if rid == release_id and step in ("exposure-off", "rollback-production", "rollback-staging")
        ]


def component(service: str, version: str = "2.0.0", **more: Any) -> TrainComponent:
    return TrainComponent(service=service, version=version, commit="0a1b2c3d4e5f", **more)


def make_train(*components: TrainComponent, name: str | None = None) -> TrainRequest:
    return TrainRequest(
        train=name or f"t-{uuid.uuid4().hex[:12]}",
        components=list(components or (component("db-migration"), component("api"), component("worker"))),
        requested_by="rita",
        title="checkout: schema, api and worker together",
    )


async def start_train(
    env: WorkflowEnvironment, worker: Worker, request: TrainRequest
) -> WorkflowHandle[ReleaseTrain, TrainStatus]:
    train_id = train_id_for(request.train)
    return await env.client.start_workflow(
        ReleaseTrain.run,
        await people.sign(request, train_id),
        id=train_id,
        task_queue=worker.task_queue,
        result_type=TrainStatus,
    )


async def train_status(handle: WorkflowHandle[Any, Any]) -> TrainStatus:
    return await handle.query(ReleaseTrain.status)


async def until_train(
    env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any], predicate: Any, attempts: int = 400
) -> TrainStatus:
    """Skip time in steps of 5 s until the train's status satisfies `predicate`.

    Steps shorter than the workflow task timeout (10 s): a skip past it while the train's
    workflow task runs would time that task out (the test server skips time regardless).
    """
    for _ in range(attempts):
        current = await train_status(handle)
        if predicate(current):
            return current
        await env.sleep(timedelta(seconds=5))
    raise AssertionError(f"never held; phase={current.phase} awaiting={current.awaiting}")


async def until_all_closed(
    env: WorkflowEnvironment, handles: list[WorkflowHandle[Any, Any]], attempts: int = 1000
) -> list[TrainStatus]:
    """Several trains run to their end in steps of 9 s (under the workflow task timeout).

    Awaiting their results instead lets the server skip to the next timer, and a train waiting
    for a lease (15 s to 5 min between checks) then times out the other's workflow tasks each
    time it wakes."""
    for _ in range(attempts):
        statuses = [await train_status(h) for h in handles]
        if all(s.phase is Phase.CLOSED for s in statuses):
            return statuses
        await env.sleep(timedelta(seconds=9))
    raise AssertionError(f"not all closed: {[(s.train_id, s.phase, s.awaiting) for s in statuses]}")


async def until_baking(
    env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any], fake: TrainFakes, service: str
) -> None:
    """Until the component's launch bakes its first stage (its exposure done, its timer on).

    Tests cancel a launch there, not while its child waits for an activity: the test server
    refuses the cancellation of an activity it scheduled but no worker started yet
    (ACTIVITY_UNKNOWN) and the child's workflow task then never completes.
    """
    exposed = (Activity.SET_EXPOSURE.value, f"{handle.id}.{service}", "expose-stage-allow-list")
    await until_train(env, handle, lambda _: exposed in fake.log)
    await env.sleep(timedelta(seconds=5))


def gate_open(gate: Gate) -> Any:
    return lambda s: gate in s.gates and s.gates[gate].state is GateState.OPEN


async def train_vote(handle: WorkflowHandle[Any, Any], gate: Gate, who: str) -> None:
    current = await train_status(handle)
    ballot = Vote(
        gate=gate, approver=who, decision=Decision.APPROVE, approved_hash=current.gates[gate].subject_hash
    )
    await handle.execute_update(ReleaseTrain.decide, await people.sign(ballot, handle.id))


async def approve_gate(
    env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any], gate: Gate, preferred: list[str]
) -> None:
    """Votes from `preferred` (those eligible, in order) until the gate is decided."""
    status = (await until_train(env, handle, gate_open(gate))).gates[gate]
    for who in preferred:
        if who in status.eligible:
            await train_vote(handle, gate, who)
            status = (await train_status(handle)).gates[gate]
            if status.state is not GateState.OPEN:
                return
    raise AssertionError(f"gate {gate} still open after votes of {preferred}")


async def approve_train(env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any]) -> None:
    """Both gates approved by one member of each CAB (alice or bob for api and worker, carol or
    dave for the data), different people at each gate."""
    await approve_gate(env, handle, Gate.REQUEST, ["alice", "carol", "bob", "dave"])
    await approve_gate(env, handle, Gate.PLAN, ["bob", "dave", "alice", "carol"])


async def abort_action(handle: WorkflowHandle[Any, Any], by: str = "oli") -> OperatorAction:
    return await people.sign(
        OperatorAction(action=OperatorVerb.ABORT, by=by, reason="wave 2 looks wrong"), handle.id
    )
