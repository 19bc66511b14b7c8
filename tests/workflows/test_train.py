"""ReleaseTrain and its ReleaseComponent children on the time-skipping server, with test
activities that record which component each call was for."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from relman import visibility
from relman.contracts import (
    CloseCode,
    Component,
    Decision,
    ErrorType,
    Gate,
    GateState,
    Outcome,
    Phase,
    ReleasePlan,
    Risk,
    Vote,
    train_id_for,
)
from relman.contracts.train_run import ComponentInput, ComponentMode, ComponentState, TrainStatus
from relman.identity.evidence import sign_envelope, verify_evidence
from relman.identity.evidence_train import build_train_statement
from relman.identity.keys import WORKER, Signer
from relman.workflows.component import ReleaseComponent
from relman.workflows.train import ReleaseTrain
from tests import people
from tests.helpers import new_worker
from tests.workflows.test_release import record_history
from tests.workflows.train_support import (
    STAGES,
    TrainFakes,
    abort_action,
    approve_train,
    component,
    gate_open,
    make_train,
    profile_for,
    start_train,
    train_status,
    train_vote,
    until_all_closed,
    until_baking,
    until_train,
)

WORKFLOWS = (ReleaseTrain, ReleaseComponent)
UNDO = ("exposure-off", "rollback-production", "rollback-staging")


async def final(handle: WorkflowHandle) -> TrainStatus:
    """The train's final status, whether its run completed or failed as a failed change."""
    try:
        return TrainStatus.model_validate(await handle.result())
    except WorkflowFailureError as err:
        cause = err.cause
        assert isinstance(cause, ApplicationError) and cause.type == ErrorType.RELEASE_FAILED, err
        return TrainStatus.model_validate(cause.details[0])


def order(fake: TrainFakes, train_id: str, steps: tuple[str, ...]) -> list[tuple[str, str]]:
    """(service, step) of the calls at `steps`, in the order they ran."""
    return [(rid.removeprefix(f"{train_id}."), step) for _, rid, step in fake.log if step in steps]


async def test_three_components_prepare_together_then_launch_wave_by_wave(
    ts_env: WorkflowEnvironment,
) -> None:
    fake = TrainFakes()
    async with new_worker(ts_env.client, *WORKFLOWS, activities=fake.all()) as worker:
        request = make_train()
        handle = await start_train(ts_env, worker, request)
        await approve_train(ts_env, handle)
        done = await final(handle)
        history = await handle.fetch_history()
        child = ts_env.client.get_workflow_handle(f"{handle.id}.api.launch")
        described = await child.describe()

    train_id = handle.id
    assert done.outcome is Outcome.COMPLETED, done.reason
    assert [t.phase for t in done.history] == [
        Phase.REQUESTED,
        Phase.AWAITING_CAB,
        Phase.PLANNING,
        Phase.AWAITING_PLAN_APPROVAL,
        Phase.BUILDING,
        Phase.DARK_LAUNCH,
        Phase.CLOSING,
        Phase.CLOSED,
    ]
    assert done.waves == [["db-migration"], ["api"], ["worker"]]
    assert {c.state for c in done.components.values()} == {ComponentState.LIVE}
    assert done.components["api"].children == [f"{train_id}.api.prepare", f"{train_id}.api.launch"]
    # Every component is tested in staging before any production deploy, then the waves go
    # in dependency order: each component live before the next wave's first exposure.
    steps = order(fake, train_id, ("tests", "deploy-production", "expose-stage-allow-list"))
    tests_done = max(i for i, (_, step) in enumerate(steps) if step == "tests")
    first_exposure = min(i for i, (_, step) in enumerate(steps) if step.startswith("expose"))
    assert tests_done < first_exposure
    assert [s for s, step in steps if step == "deploy-production"] == ["db-migration", "api", "worker"]
    launches = [s for s, step in steps if step == "expose-stage-allow-list"]
    assert launches == ["db-migration", "api", "worker"]
    assert not [c for c in fake.log if c[2] in UNDO]
    # One change record for the train, closed successful with a row per component; its
    # evidence lists every component's package; leases given back.
    assert [(c.step, c.status) for c in fake.changes] == [("open", "requested"), ("authorized", "authorized")]
    assert [c.release_id for c in fake.train_closes] == [train_id] and fake.closes == []
    close = fake.train_closes[0]
    assert close.close_code is CloseCode.SUCCESSFUL and close.production_at is not None
    assert [(c.service, c.deployed, c.outcome) for c in close.components] == [
        (s, True, Outcome.COMPLETED) for s in ("db-migration", "api", "worker")
    ]
    assert {v.vote.approver for v in close.approvals} == {"alice", "bob", "carol", "dave"}
    evidence = fake.train_evidence[0]
    assert [c.service for c in evidence.components] == ["db-migration", "api", "worker"]
    assert all(c.package and c.release_id == f"{train_id}.{c.service}" for c in evidence.components)
    assert evidence.plan_hash == done.plan_hash
    # The evidence the train wrote verifies offline against the catalog: its gates by the
    # union of the components' approvers, one from each CAB; each component as a release's.
    worker_key = Signer.generate(WORKER)
    envelope = sign_envelope(build_train_statement(evidence), worker_key)
    trusts = {s: profile_for(s).trust for s in ("db-migration", "api", "worker")}
    report = verify_evidence(envelope, trusts, [worker_key.public])
    assert report.findings == [] and report.ok
    assert fake.leases == {}
    # Children say which train they belong to.
    assert described.typed_search_attributes.get(visibility.RELEASE_TRAIN) == train_id
    assert described.parent_id == train_id
    print(f"three-component train: {len(history.events)} parent history events")
    record_history("train_completed", history)


async def test_a_failure_in_the_last_wave_backs_out_the_launched_in_reverse_once_each(
    ts_env: WorkflowEnvironment,
) -> None:
    fake = TrainFakes(fail={("worker", "deploy-production")})
    async with new_worker(ts_env.client, *WORKFLOWS, activities=fake.all()) as worker:
        handle = await start_train(ts_env, worker, make_train())
        await approve_train(ts_env, handle)
        done = await final(handle)
        history = await handle.fetch_history()

    train_id = handle.id
    assert done.outcome is Outcome.ROLLED_BACK and "worker" in done.reason
    with pytest.raises(WorkflowFailureError):  # a failed change fails its run, as a release's
        await handle.result()
    close = fake.train_closes[-1]
    assert close.close_code is CloseCode.ROLLED_BACK and close.failed_at and close.recovered_at
    assert {c.service: (c.deployed, c.outcome) for c in close.components} == {
        s: (False, Outcome.ROLLED_BACK) for s in ("db-migration", "api", "worker")
    }
    # Each was seen by users (a 10% stage at least) before it was undone: a failed deployment
    # of each service (DORA).
    assert all(c.failed_at for c in close.components)
    undone = order(fake, train_id, UNDO)
    # The worker's own launch undid its exposure and production; then the train backs out in
    # reverse dependency order: the worker's staging, then api, then db-migration.
    assert undone == [
        ("worker", "rollback-production"),
        ("worker", "exposure-off"),
        ("worker", "rollback-staging"),
        ("api", "exposure-off"),
        ("api", "rollback-production"),
        ("api", "rollback-staging"),
        ("db-migration", "exposure-off"),
        ("db-migration", "rollback-production"),
        ("db-migration", "rollback-staging"),
    ]
    assert Counter(undone).most_common(1)[0][1] == 1  # exactly once each
    states = {s: c.state for s, c in done.components.items()}
    assert states == {s: ComponentState.BACKED_OUT for s in ("db-migration", "api", "worker")}
    assert done.components["api"].children[-1] == f"{train_id}.api.backout"
    assert not done.needs_operator
    record_history("train_rolled_back", history)


@pytest.mark.parametrize(
    ("components", "reason"),
    [
        (
            [component("db-migration", after=["worker"]), component("api"), component("worker")],
            "invalid train: dependency cycle: api -> worker -> db-migration -> api",
        ),
        ([component("api"), component("unknown")], "unknown component(s) unknown"),
    ],
    ids=["cycle", "unknown"],
)
async def test_a_cycle_or_an_unknown_component_is_refused_before_anything_starts(
    ts_env: WorkflowEnvironment, components: list, reason: str
) -> None:
    fake = TrainFakes()
    async with new_worker(ts_env.client, *WORKFLOWS, activities=fake.all()) as worker:
        handle = await start_train(ts_env, worker, make_train(*components))
        done = await final(handle)
    assert done.outcome is Outcome.REJECTED
    assert reason in done.reason
    assert fake.calls == [("validate_train", "validate")]  # no other activity ran
    assert fake.log == [] and fake.train_closes == []


async def test_two_trains_sharing_a_service_take_leases_in_one_order_and_both_finish(
    ts_env: WorkflowEnvironment,
) -> None:
    fake = TrainFakes()
    async with new_worker(ts_env.client, *WORKFLOWS, activities=fake.all()) as worker:
        first = await start_train(ts_env, worker, make_train())
        second = await start_train(
            ts_env,
            worker,
            make_train(component("worker", "2.1.0"), component("billing"), component("api", "2.1.0")),
        )
        await approve_train(ts_env, first)
        await approve_train(ts_env, second)
        await until_all_closed(ts_env, [first, second])
        done = [await final(first), await final(second)]

    assert [d.outcome for d in done] == [Outcome.COMPLETED, Outcome.COMPLETED]
    for handle in (first, second):
        asked = list(dict.fromkeys(s for rid, s in fake.lease_log if rid == handle.id))
        assert asked == sorted(asked)
    # One of them waited for the other's leases on api and worker.
    assert len(fake.lease_log) > 6
    assert fake.leases == {}


async def test_an_abort_in_wave_two_backs_out_waves_one_and_two(ts_env: WorkflowEnvironment) -> None:
    fake = TrainFakes()
    async with new_worker(ts_env.client, *WORKFLOWS, activities=fake.all()) as worker:
        handle = await start_train(ts_env, worker, make_train())
        await approve_train(ts_env, handle)
        await until_baking(ts_env, handle, fake, "api")
        await handle.signal(ReleaseTrain.abort, await abort_action(handle))
        done = await final(handle)

    train_id = handle.id
    assert done.outcome is Outcome.ABORTED and "aborted by oli" in done.reason
    assert fake.train_closes[-1].close_code is CloseCode.ABORTED
    undone = order(fake, train_id, UNDO)
    assert undone == [
        ("worker", "rollback-staging"),  # prepared, never launched
        ("api", "exposure-off"),
        ("api", "rollback-production"),
        ("api", "rollback-staging"),
        ("db-migration", "exposure-off"),
        ("db-migration", "rollback-production"),
        ("db-migration", "rollback-staging"),
    ]
    # The cancelled api launch never reached production; its rollback finds no deploy record.
    assert ("api", "deploy-production") not in order(fake, train_id, ("deploy-production",))
    assert done.components["worker"].children == [f"{train_id}.worker.prepare", f"{train_id}.worker.backout"]
    assert done.components["api"].issue == "launch cancelled"
    assert {c.state for c in done.components.values()} == {ComponentState.BACKED_OUT}


async def test_an_abort_by_someone_who_is_no_operator_is_refused(ts_env: WorkflowEnvironment) -> None:
    fake = TrainFakes()
    async with new_worker(ts_env.client, *WORKFLOWS, activities=fake.all()) as worker:
        handle = await start_train(ts_env, worker, make_train())
        await until_train(ts_env, handle, gate_open(Gate.REQUEST))
        await handle.signal(ReleaseTrain.abort, await abort_action(handle, by="zoe"))
        current = await until_train(ts_env, handle, lambda s: s.refused == 1)
        assert "zoe is not one of the operators" in current.refusals[-1].reason
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert fake.train_closes[-1].close_code is CloseCode.ABORTED


async def test_one_cabs_quorum_does_not_approve_a_train_spanning_two(ts_env: WorkflowEnvironment) -> None:
    fake = TrainFakes()
    async with new_worker(ts_env.client, *WORKFLOWS, activities=fake.all()) as worker:
        handle = await start_train(ts_env, worker, make_train())
        await until_train(ts_env, handle, gate_open(Gate.REQUEST))
        await train_vote(handle, Gate.REQUEST, "alice")
        await train_vote(handle, Gate.REQUEST, "bob")
        current = await train_status(handle)
        assert current.gates[Gate.REQUEST].state is GateState.OPEN
        assert current.awaiting == ["carol", "dave"]
        await train_vote(handle, Gate.REQUEST, "dave")
        current = await until_train(ts_env, handle, gate_open(Gate.PLAN))
        assert current.gates[Gate.REQUEST].state is GateState.APPROVED
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()


async def test_a_component_started_by_a_client_is_refused(ts_env: WorkflowEnvironment) -> None:
    fake = TrainFakes()
    train_id = train_id_for(f"t-{uuid.uuid4().hex[:12]}")
    request = make_train()
    inp = ComponentInput(
        train_id=train_id,
        mode=ComponentMode.LAUNCH,
        request=request.component_request("api"),
        profile=profile_for("api"),
        plan=ReleasePlan(components=[Component(name="api", version="2.0.0")], stages=STAGES),
        risk=Risk.MEDIUM,
    )
    async with new_worker(ts_env.client, *WORKFLOWS, activities=fake.all()) as worker:
        with pytest.raises(WorkflowFailureError) as err:
            await ts_env.client.execute_workflow(
                ReleaseComponent.run, inp, id=f"{train_id}.api.launch", task_queue=worker.task_queue
            )
    cause = err.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == ErrorType.INVALID_REQUEST
    assert cause.message == (
        f"{train_id}.api.launch: a ReleaseComponent runs only as a child of its train {train_id}; "
        "start the train instead"
    )
    assert fake.calls == [] and fake.log == []


async def test_a_failed_preparation_backs_out_every_staging_deploy_once(ts_env: WorkflowEnvironment) -> None:
    fake = TrainFakes(fail={("api", "tests")})
    async with new_worker(ts_env.client, *WORKFLOWS, activities=fake.all()) as worker:
        handle = await start_train(ts_env, worker, make_train())
        await approve_train(ts_env, handle)
        done = await final(handle)

    train_id = handle.id
    assert done.outcome is Outcome.ROLLED_BACK and done.reason.startswith("api: prepare rolled_back")
    assert order(fake, train_id, ("deploy-production", "exposure-off")) == []  # nothing launched
    undone = order(fake, train_id, UNDO)
    # api undid its own staging deploy; the train backs out the others' (prepared, or cut short
    # and undone through their deploy's record), each once, in backout order.
    assert undone[0] == ("api", "rollback-staging")
    assert sorted(undone[1:]) == [("db-migration", "rollback-staging"), ("worker", "rollback-staging")]
    assert [s for s, _ in undone[1:]] == [
        s for s in ("worker", "db-migration") if (s, "rollback-staging") in undone
    ]
    assert done.components["api"].state is ComponentState.FAILED
    assert fake.train_closes[-1].close_code is CloseCode.ROLLED_BACK


async def test_a_cancelled_train_backs_out_what_it_launched(ts_env: WorkflowEnvironment) -> None:
    fake = TrainFakes()
    async with new_worker(ts_env.client, *WORKFLOWS, activities=fake.all()) as worker:
        handle = await start_train(ts_env, worker, make_train())
        await approve_train(ts_env, handle)
        await until_baking(ts_env, handle, fake, "api")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        done = await train_status(handle)

    train_id = handle.id
    assert done.outcome is Outcome.ABORTED and done.reason == "train cancelled"
    assert [s for s, _ in order(fake, train_id, UNDO)] == ["worker"] + ["api"] * 3 + ["db-migration"] * 3
    assert fake.train_closes[-1].close_code is CloseCode.ABORTED and fake.leases == {}


async def test_a_marginal_stage_is_decided_on_the_components_child(ts_env: WorkflowEnvironment) -> None:
    fake = TrainFakes(marginal={("api", "health-ten-0")})
    async with new_worker(ts_env.client, *WORKFLOWS, activities=fake.all()) as worker:
        handle = await start_train(ts_env, worker, make_train())
        await approve_train(ts_env, handle)
        child = ts_env.client.get_workflow_handle(f"{handle.id}.api.launch")
        await until_train(ts_env, handle, lambda s: s.components["api"].state is ComponentState.LAUNCHED)
        for _ in range(100):
            gate = (await child.query(ReleaseComponent.status)).gates.get(Gate.MARGINAL)
            if gate is not None and gate.state is GateState.OPEN:
                break
            await ts_env.sleep(5)
        assert gate is not None and gate.eligible == ["alice", "bob", "erin"]
        ballot = Vote(
            gate=Gate.MARGINAL, approver="bob", decision=Decision.APPROVE, approved_hash=gate.subject_hash
        )
        # Signed for the component's release id, as the train's evidence verifies it.
        await child.execute_update(ReleaseComponent.decide, await people.sign(ballot, f"{handle.id}.api"))
        done = await final(handle)

    assert done.outcome is Outcome.COMPLETED, done.reason
    evidence = fake.train_evidence[-1]
    api = next(c for c in evidence.components if c.service == "api")
    assert [a.vote.approver for stage in api.stages for a in stage.decisions] == ["bob"]


async def test_a_member_removed_from_the_catalog_stops_counting_at_the_plan_gate(
    ts_env: WorkflowEnvironment,
) -> None:
    fake = TrainFakes(revoked={"carol"})
    async with new_worker(ts_env.client, *WORKFLOWS, activities=fake.all()) as worker:
        handle = await start_train(ts_env, worker, make_train())
        await until_train(ts_env, handle, gate_open(Gate.REQUEST))
        await train_vote(handle, Gate.REQUEST, "alice")
        await train_vote(handle, Gate.REQUEST, "carol")
        current = await until_train(ts_env, handle, gate_open(Gate.PLAN))
        assert current.gates[Gate.PLAN].groups["db-migration"] == ["dave"]
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await train_vote(handle, Gate.PLAN, "carol")
        assert "carol is not a member of the approvers for gate plan" in str(refused.value.cause)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
