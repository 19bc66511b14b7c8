"""A small test catalog of a train's components and test activities that know which
component each call is for (`<train id>.<service>` release ids)."""

from __future__ import annotations

import uuid
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
    Gate,
    GateState,
    GateTimeouts,
    LeaseDecision,
    LeaseInput,
    OperatorAction,
    OperatorVerb,
    Role,
    RolloutStage,
    ServiceProfile,
    StepInput,
    Vote,
    train_id_for,
)
from relman.contracts.train import TrainComponent, TrainRequest
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

    fail: set[tuple[str, str]] = field(default_factory=set)
    log: list[tuple[str, str, str]] = field(default_factory=list)
    """(activity, component release id or train id, step), in the order they ran."""
    lease_log: list[tuple[str, str]] = field(default_factory=list)

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
        return TrainProfile(
            profiles={s: profile_for(s) for s in request.services}, relationships=RELATIONSHIPS
        )

    @activity.defn(name=Activity.ACQUIRE_LEASE)
    async def acquire_lease(self, inp: LeaseInput) -> LeaseDecision:
        self.lease_log.append((inp.release_id, inp.service))
        return await super().acquire_lease(inp)

    def all(self, *, cmdb: bool = True) -> list[Any]:
        return [self.validate_train, *super().all(cmdb=cmdb)]

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
    env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any], predicate: Any, attempts: int = 200
) -> TrainStatus:
    """Skip time in small steps until the train's status satisfies `predicate`."""
    for _ in range(attempts):
        current = await train_status(handle)
        if predicate(current):
            return current
        await env.sleep(timedelta(seconds=10))
    raise AssertionError(f"never held; phase={current.phase} awaiting={current.awaiting}")


def gate_open(gate: Gate) -> Any:
    return lambda s: gate in s.gates and s.gates[gate].state is GateState.OPEN


async def train_vote(handle: WorkflowHandle[Any, Any], gate: Gate, who: str) -> None:
    current = await train_status(handle)
    ballot = Vote(
        gate=gate, approver=who, decision=Decision.APPROVE, approved_hash=current.gates[gate].subject_hash
    )
    await handle.execute_update(ReleaseTrain.decide, await people.sign(ballot, handle.id))


async def approve_train(env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any]) -> None:
    """Both gates approved by one member of each CAB (alice for api/worker, carol for the data)."""
    await until_train(env, handle, gate_open(Gate.REQUEST))
    await train_vote(handle, Gate.REQUEST, "alice")
    await train_vote(handle, Gate.REQUEST, "carol")
    await until_train(env, handle, gate_open(Gate.PLAN))
    await train_vote(handle, Gate.PLAN, "bob")
    await train_vote(handle, Gate.PLAN, "dave")


async def abort_action(handle: WorkflowHandle[Any, Any], by: str = "oli") -> OperatorAction:
    return await people.sign(
        OperatorAction(action=OperatorVerb.ABORT, by=by, reason="wave 2 looks wrong"), handle.id
    )
