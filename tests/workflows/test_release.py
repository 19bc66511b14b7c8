"""ReleaseWorkflow on the time-skipping server, with test activities under the real names."""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import (
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowHistory,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from relman import visibility
from relman.contracts import (
    ChangeType,
    CloseCode,
    Decision,
    Delegation,
    Gate,
    GateState,
    OperatorAction,
    OperatorVerb,
    Outcome,
    Phase,
    PlanAmendment,
    ReleaseRequest,
    ReleaseStatus,
    RolloutStage,
    Verdict,
    Vote,
    WindowKind,
)
from relman.results import final_status
from relman.workflows import details
from relman.workflows.release import ReleaseWorkflow
from tests import people
from tests.helpers import new_worker
from tests.workflows.fakes import FakeActivities, make_request

HISTORIES = Path(__file__).parent.parent / "histories"
FULL_PATH = [
    Phase.REQUESTED,
    Phase.AWAITING_CAB,
    Phase.PLANNING,
    Phase.AWAITING_PLAN_APPROVAL,
    Phase.BUILDING,
    Phase.TESTING,
    Phase.DARK_LAUNCH,
    Phase.DEPLOYING,
    Phase.REVIEWING,
    Phase.CLOSING,
    Phase.CLOSED,
]


async def start(
    env: WorkflowEnvironment, worker: Worker, request: ReleaseRequest, *, sign: bool = True
) -> WorkflowHandle[ReleaseWorkflow, ReleaseStatus]:
    release_id = f"release-test-{uuid.uuid4()}"
    return await env.client.start_workflow(
        ReleaseWorkflow.run,
        await people.sign(request, release_id) if sign else request,
        id=release_id,
        task_queue=worker.task_queue,
        static_summary=f"{request.service} {request.version} — {request.change_type} change",
    )


async def status(handle: WorkflowHandle) -> ReleaseStatus:
    return await handle.query(ReleaseWorkflow.status)


async def until(
    env: WorkflowEnvironment,
    handle: WorkflowHandle,
    predicate: Callable[[ReleaseStatus], bool],
    step: timedelta = timedelta(seconds=10),
    attempts: int = 200,
) -> ReleaseStatus:
    """Skip time in small steps until the release's status satisfies `predicate`."""
    for _ in range(attempts):
        current = await status(handle)
        if predicate(current):
            return current
        await env.sleep(step)
    raise AssertionError(
        f"condition never held; last status phase={current.phase} awaiting={current.awaiting}"
    )


async def vote(
    handle: WorkflowHandle,
    gate: Gate,
    who: str,
    decision: Decision = Decision.APPROVE,
    *,
    comment: str = "looks good",
    approved_hash: str | None = None,
    on_behalf_of: str | None = None,
    delegation: Delegation | None = None,
) -> None:
    current = await status(handle)
    if on_behalf_of not in (None, who) and delegation is None:
        delegation = await delegated(str(on_behalf_of), who)
    ballot = Vote(
        gate=gate,
        approver=who,
        decision=decision,
        approved_hash=approved_hash or current.gates[gate].subject_hash,
        comment=comment,
        on_behalf_of=on_behalf_of,
        delegation=delegation,
    )
    await handle.execute_update(ReleaseWorkflow.decide, await people.sign(ballot, handle.id))


async def delegated(delegator: str, delegate: str, **scope: object) -> Delegation:
    """A delegation signed by `delegator` for checkout's request and plan gates, for a week."""
    fields: dict[str, object] = {
        "delegator": delegator,
        "delegate": delegate,
        "services": ["checkout"],
        "gates": [Gate.REQUEST, Gate.PLAN],
        "not_after": await people.now() + timedelta(days=7),
        **scope,
    }
    return await people.sign(Delegation.model_validate(fields), "*", delegator)


async def act(
    handle: WorkflowHandle, verb: OperatorVerb, by: str, reason: str, **scope: str
) -> OperatorAction:
    return await people.sign(OperatorAction(action=verb, by=by, reason=reason, **scope), handle.id)


def at_gate(gate: Gate) -> Callable[[ReleaseStatus], bool]:
    return lambda s: gate in s.gates and s.gates[gate].state is GateState.OPEN


def record_history(name: str, history: WorkflowHistory) -> None:
    """Keep a history for the replay test when RELMAN_RECORD_HISTORIES is set.

    The workflow id is kept with it: it is the release id every signed message is bound to,
    so a replay under another id would refuse them all.
    """
    if os.environ.get("RELMAN_RECORD_HISTORIES"):
        HISTORIES.mkdir(exist_ok=True)
        data = {"workflowId": history.workflow_id, **json.loads(history.to_json())}
        (HISTORIES / f"{name}.json").write_text(json.dumps(data, indent=1))


async def refused(handle: WorkflowHandle, gate: Gate, who: str, **kwargs: object) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await vote(handle, gate, who, **kwargs)  # type: ignore[arg-type]
    return str(info.value.cause)


# --- happy paths -------------------------------------------------------------------


async def test_normal_release_completes_through_every_phase(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        await vote(handle, Gate.REQUEST, "alice")
        await vote(handle, Gate.REQUEST, "bob", on_behalf_of="carol", comment="for carol, on leave")
        await until(ts_env, handle, at_gate(Gate.PLAN))
        await vote(handle, Gate.PLAN, "dave")
        await vote(handle, Gate.PLAN, "alice")
        handle.result_type = ReleaseStatus
        final = await handle.result()
        history = await handle.fetch_history()

    assert final.outcome is Outcome.COMPLETED
    assert [t.phase for t in final.history] == FULL_PATH
    assert [s.verdict for s in final.stages] == [Verdict.PASS] * 4
    close = fake.closes[-1]
    assert close.close_code is CloseCode.SUCCESSFUL
    assert close.deployed_version == "2.4.1"
    assert {a.vote.on_behalf_of for a in close.approvals} == {None, "carol"}
    assert len(close.approvals) == 4
    assert fake.steps(fake.rollback.__temporal_activity_definition.name) == []  # type: ignore[attr-defined]
    events = len(history.events)
    kinds = Counter(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events)
    print(f"normal release: {events} history events: {kinds.most_common()}")
    assert events < 200, kinds.most_common()
    record_history("normal_completed", history)


async def test_standard_release_skips_cab_and_plan_gates(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        final = await handle.result()
        history = await handle.fetch_history()
    final = ReleaseStatus.model_validate(final)
    assert final.outcome is Outcome.COMPLETED
    assert [t.phase for t in final.history] == [
        p for p in FULL_PATH if p not in (Phase.AWAITING_CAB, Phase.AWAITING_PLAN_APPROVAL)
    ]
    assert final.gates[Gate.REQUEST].state is GateState.SKIPPED
    record_history("standard_completed", history)


async def test_emergency_release_needs_ecab_now_and_cab_retro_approval(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.EMERGENCY))
        current = await until(ts_env, handle, at_gate(Gate.REQUEST))
        assert current.gates[Gate.REQUEST].eligible == ["erin"]
        assert "not a member" in await refused(handle, Gate.REQUEST, "alice")
        await vote(handle, Gate.REQUEST, "erin")
        await until(ts_env, handle, at_gate(Gate.PLAN))
        await vote(handle, Gate.PLAN, "erin")
        retro = await until(ts_env, handle, at_gate(Gate.RETRO), step=timedelta(seconds=30))
        # An open retro gate is awaited like any other: `list --awaiting alice` finds it.
        assert retro.phase is Phase.REVIEWING and retro.awaiting == ["alice", "bob", "carol", "dave"]
        await vote(handle, Gate.RETRO, "alice")
        await vote(handle, Gate.RETRO, "bob")
        final = await final_status(handle)
        history = await handle.fetch_history()
    assert final.outcome is Outcome.COMPLETED
    assert final.gates[Gate.RETRO].state is GateState.APPROVED
    assert [t.phase for t in final.history] == FULL_PATH
    record_history("emergency_retro_completed", history)


async def test_emergency_without_retro_approval_completes_with_issues(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.EMERGENCY))
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        await vote(handle, Gate.REQUEST, "erin")
        await until(ts_env, handle, at_gate(Gate.PLAN))
        await vote(handle, Gate.PLAN, "erin")
        final = await final_status(handle)
    assert final.outcome is Outcome.COMPLETED_WITH_ISSUES
    assert final.gates[Gate.RETRO].state is GateState.EXPIRED
    assert "retro-approval expired" in final.reason
    assert fake.closes[-1].close_code is CloseCode.SUCCESSFUL_WITH_ISSUES


# --- gates --------------------------------------------------------------------------


async def test_cab_rejection_ends_release_rejected(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        await vote(handle, Gate.REQUEST, "alice")
        await vote(handle, Gate.REQUEST, "bob", Decision.REJECT, comment="no rollback tested")
        final = await final_status(handle)
        history = await handle.fetch_history()
    assert final.outcome is Outcome.REJECTED
    assert "no rollback tested" in final.reason
    assert fake.closes[-1].close_code is CloseCode.REJECTED
    assert not fake.steps(fake.build_package.__temporal_activity_definition.name)  # type: ignore[attr-defined]
    record_history("normal_rejected", history)


async def test_unanswered_gate_expires(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request())
        final = await final_status(handle)
    assert final.outcome is Outcome.EXPIRED
    assert final.gates[Gate.REQUEST].state is GateState.EXPIRED
    assert fake.closes[-1].close_code is CloseCode.EXPIRED


async def test_an_aborted_release_withdraws_its_open_gate_and_names_its_timers(
    ts_env: WorkflowEnvironment,
) -> None:
    fake = FakeActivities()
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request())
        waiting = await until(ts_env, handle, at_gate(Gate.REQUEST))
        assert waiting.awaiting == ["alice", "bob", "carol", "dave"]  # rita, the requester, is not awaited
        await vote(handle, Gate.REQUEST, "alice")
        await handle.signal(
            ReleaseWorkflow.abort, await act(handle, OperatorVerb.ABORT, "oli", "wrong version")
        )
        final = await final_status(handle)
        history = await handle.fetch_history()
    assert final.outcome is Outcome.ABORTED
    request_gate = final.gates[Gate.REQUEST]
    assert request_gate.state is GateState.WITHDRAWN and request_gate.closed_at is not None
    assert request_gate.approvals == 1  # what was decided stays on record
    assert final.awaiting == []
    # The UI's timeline names each timer instead of `3 (1s)`.
    summaries = [
        e.user_metadata.summary.data.decode()
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]
    assert summaries and all("gate request deadline" in s for s in summaries), summaries


async def test_unknown_service_is_rejected_and_recorded(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(service="unknown"))
        final = await final_status(handle)
    assert final.outcome is Outcome.REJECTED
    assert "UnknownService" in final.reason
    assert fake.closes[-1].outcome is Outcome.REJECTED


async def test_refused_votes_name_the_reason_and_leave_no_history(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        assert "rita requested this release" in await refused(handle, Gate.REQUEST, "rita")
        assert "rita requested this release" in await refused(
            handle, Gate.REQUEST, "alice", on_behalf_of="rita"
        )
        assert "mallory is not a member" in await refused(handle, Gate.REQUEST, "mallory")
        assert "gate plan is not open" in await refused(handle, Gate.PLAN, "alice", approved_hash="0" * 64)
        assert "outdated" in await refused(handle, Gate.REQUEST, "alice", approved_hash="f" * 64)
        assert "needs a reason" in await refused(
            handle, Gate.REQUEST, "alice", decision=Decision.REJECT, comment=""
        )
        await vote(handle, Gate.REQUEST, "alice")
        assert "alice has already voted" in await refused(handle, Gate.REQUEST, "alice")
        assert "carol has already voted" not in await refused(
            handle, Gate.REQUEST, "alice", on_behalf_of="alice"
        )
        await vote(handle, Gate.REQUEST, "bob")
        assert "closed (approved)" in await refused(handle, Gate.REQUEST, "carol")

        # Plan amendment voids the plan votes cast so far.
        current = await until(ts_env, handle, at_gate(Gate.PLAN))
        old_hash = current.plan_hash
        await vote(handle, Gate.PLAN, "carol")
        assert current.plan is not None
        amended = current.plan.model_copy(
            update={
                "stages": [RolloutStage(name="ten", percent=10, bake_seconds=30)],
                "revision": current.plan.revision + 1,
            }
        )
        await handle.signal(
            ReleaseWorkflow.amend_plan,
            await people.sign(PlanAmendment(by="rex", plan=amended, reason="smaller"), handle.id),
        )
        current = await until(ts_env, handle, lambda s: s.plan_hash != old_hash)
        assert current.gates[Gate.PLAN].votes == []
        assert current.gates[Gate.PLAN].subject_hash == current.plan_hash
        assert "outdated" in await refused(handle, Gate.PLAN, "dave", approved_hash=old_hash)
        await vote(handle, Gate.PLAN, "carol")
        await vote(handle, Gate.PLAN, "dave")
        final = await final_status(handle)
        history = await handle.fetch_history()
    assert final.outcome is Outcome.COMPLETED
    assert [s.name for s in final.stages] == ["ten"]
    accepted = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    ]
    assert len(accepted) == 5  # alice, bob, carol (voided), carol, dave; refusals left nothing
    plan_votes = [a for a in fake.closes[-1].approvals if a.vote.gate is Gate.PLAN]
    assert {a.vote.approver for a in plan_votes} == {"carol", "dave"}
    assert all(a.vote.approved_hash == final.plan_hash for a in plan_votes)
    record_history("normal_amended_plan", history)


# --- failures, compensation, abort -----------------------------------------------------

ROLLBACK_STAGING = "roll back staging"
EXPOSURE_OFF = "exposure to 0%"
ROLLBACK_PRODUCTION = "roll back production"


@pytest.mark.parametrize(
    ("fail_step", "expected"),
    [
        ("deploy-staging", [ROLLBACK_STAGING]),
        ("expose-stage-allow-list", [EXPOSURE_OFF, ROLLBACK_STAGING]),
        ("expose-stage-one", [EXPOSURE_OFF, ROLLBACK_STAGING]),
        ("expose-stage-five", [EXPOSURE_OFF, ROLLBACK_STAGING]),
        ("expose-stage-quarter", [EXPOSURE_OFF, ROLLBACK_STAGING]),
        ("deploy-production", [ROLLBACK_PRODUCTION, EXPOSURE_OFF, ROLLBACK_STAGING]),
    ],
)
async def test_failure_runs_compensations_in_reverse_exactly_once(
    ts_env: WorkflowEnvironment, fail_step: str, expected: list[str]
) -> None:
    fake = FakeActivities(fail_steps={fail_step})
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        final = await final_status(handle)
        history = await handle.fetch_history()
    assert final.outcome is Outcome.ROLLED_BACK
    assert "injected failure" in final.reason
    assert final.compensations == expected
    undo_steps = [s for n, s in fake.calls if n == "rollback" or s == "exposure-off"]
    assert len(undo_steps) == len(expected) == len(set(undo_steps))
    assert fake.closes[-1].close_code is CloseCode.ROLLED_BACK
    assert fake.closes[-1].deployed_version is None
    if fail_step == "deploy-production":
        record_history("standard_rolled_back", history)


async def test_operator_abort_during_dark_launch_compensates(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        await until(ts_env, handle, lambda s: len(s.stages) >= 2)
        await handle.signal(
            ReleaseWorkflow.abort, await act(handle, OperatorVerb.ABORT, "oli", "pager storm")
        )
        final = await final_status(handle)
        history = await handle.fetch_history()
    assert final.outcome is Outcome.ABORTED
    assert "oli" in final.reason and "pager storm" in final.reason
    assert final.compensations == [EXPOSURE_OFF, ROLLBACK_STAGING]
    assert fake.closes[-1].close_code is CloseCode.ABORTED
    # Stage `one` (1%) was exposed: production users saw it, so DORA counts a failed deployment.
    assert fake.closes[-1].failed_at is not None
    record_history("standard_aborted", history)


async def test_workflow_cancellation_compensates_and_records(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        await until(ts_env, handle, lambda s: len(s.stages) >= 1)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    assert isinstance(info.value.cause, CancelledError)
    assert [s for n, s in fake.calls if n == "rollback" or s == "exposure-off"] == [
        "exposure-off",
        "rollback-staging",
    ]
    assert fake.closes[-1].outcome is Outcome.ABORTED


async def test_pause_holds_the_release_until_resume(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        await until(ts_env, handle, lambda s: len(s.stages) >= 1)
        await handle.signal(
            ReleaseWorkflow.pause, await act(handle, OperatorVerb.PAUSE, "oli", "investigating")
        )
        paused = await until(ts_env, handle, lambda s: s.awaiting == ["operator"])
        await ts_env.sleep(timedelta(hours=2))
        still = await status(handle)
        assert still.phase is Phase.DARK_LAUNCH and len(still.stages) == len(paused.stages)
        await handle.signal(
            ReleaseWorkflow.resume, await act(handle, OperatorVerb.RESUME, "oli", "all clear")
        )
        final = await final_status(handle)
    assert final.outcome is Outcome.COMPLETED


async def test_compensation_failure_flags_the_operator(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities(fail_steps={"expose-stage-one"}, compensation_failures={"rollback-staging": 100})
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        final = await final_status(handle)
        desc = await handle.describe()
    assert final.outcome is Outcome.ROLLED_BACK
    assert final.needs_operator
    assert final.compensations == [EXPOSURE_OFF]
    assert any("roll back staging" in issue for issue in final.issues)
    assert desc.typed_search_attributes.get(visibility.RELEASE_AWAITING) == ["operator"]
    assert fake.closes[-1].close_code is CloseCode.UNSUCCESSFUL


# --- windows and verdicts -------------------------------------------------------------


async def test_closed_window_at_go_live_waits_durably_then_deploys(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities(closed_window_checks={4})  # checks 0-3 are the four stages
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        waiting = await until(ts_env, handle, lambda s: s.awaiting == ["window"])
        assert waiting.phase is Phase.DEPLOYING
        desc = await handle.describe()
        assert desc.typed_search_attributes.get(visibility.RELEASE_AWAITING) == ["window"]
        # Which window, its kind and reason, and when it reopens: in the status and the UI.
        wait = waiting.window_waits[-1]
        assert (wait.window, wait.kind, wait.step) == ("test-blackout", WindowKind.BLACKOUT, "go-live")
        assert wait.reopens is not None and abs(wait.reopens - wait.since - timedelta(days=2)) < timedelta(
            seconds=1
        )
        meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        assert (
            f"**waiting for blackout 'test-blackout'** before go-live: reopens {details.when(wait.reopens)}"
            in (meta.current_details)
        )
        assert "quarter-end close" in meta.current_details
        assert "production" not in "".join(s for n, s in fake.calls if n == "deploy" and "production" in s)
        final = await final_status(handle)
    times = {t.phase: t.at for t in final.history}
    assert final.outcome is Outcome.COMPLETED
    assert times[Phase.REVIEWING] - times[Phase.DEPLOYING] >= timedelta(days=2)
    assert ("deploy", "deploy-production") in fake.calls


@pytest.mark.parametrize("verdict", [Verdict.NO_DATA, Verdict.MARGINAL])
async def test_no_data_and_marginal_do_not_promote_on_their_own(
    ts_env: WorkflowEnvironment, verdict: Verdict
) -> None:
    fake = FakeActivities(verdicts={f"health-one-{i}": verdict for i in range(3)})
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        waiting = await until(ts_env, handle, at_gate(Gate.MARGINAL))
        await ts_env.sleep(timedelta(minutes=30))
        waiting = await status(handle)
        assert waiting.gates[Gate.MARGINAL].state is GateState.OPEN
        assert [s.name for s in waiting.stages] == ["allow-list", "one"]
        assert waiting.stages[-1].verdict is None
        assert "expose-stage-five" not in [s for _, s in fake.calls]
        assert set(waiting.awaiting) == {"alice", "bob", "carol", "dave", "erin"}
        # What the approvers decide on: the health that opened the gate, in status, UI and message.
        assert waiting.stages[-1].health is not None
        assert waiting.stages[-1].health.verdict is verdict
        evidence = f"stage one at 1%: health {verdict}, 100 samples, error rate 0.10%, latency 20 ms"
        meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        assert evidence in meta.current_details
        asked = [n for n in fake.notifications if n.event == "gate.marginal"]
        assert len(asked) == 1 and evidence in asked[0].message
        assert set(asked[0].recipients) == set(waiting.awaiting)
        await vote(handle, Gate.MARGINAL, "erin", comment="error budget fine")
        final = await final_status(handle)
    assert final.outcome is Outcome.COMPLETED_WITH_ISSUES
    assert final.stages[1].verdict is verdict


async def test_marginal_rejected_rolls_back(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities(verdicts={"health-five-0": Verdict.MARGINAL})
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        await until(ts_env, handle, at_gate(Gate.MARGINAL))
        await vote(handle, Gate.MARGINAL, "alice", Decision.REJECT, comment="latency creeping up")
        final = await final_status(handle)
    assert final.outcome is Outcome.ROLLED_BACK
    assert "latency creeping up" in final.reason
    assert final.compensations == [EXPOSURE_OFF, ROLLBACK_STAGING]


async def test_failed_health_rolls_back(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities(verdicts={"health-quarter-0": Verdict.FAIL})
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        final = await final_status(handle)
    assert final.outcome is Outcome.ROLLED_BACK
    assert final.stages[-1].verdict is Verdict.FAIL  # the failed stage says so
    assert fake.closes[-1].failed_at is not None


# --- visibility ---------------------------------------------------------------------


async def test_search_attributes_and_details_follow_the_phase(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        await vote(handle, Gate.REQUEST, "alice")
        desc = await handle.describe()
        attrs = desc.typed_search_attributes
        assert attrs.get(visibility.RELEASE_PHASE) == "awaiting_cab"
        assert attrs.get(visibility.RELEASE_SERVICE) == "checkout"
        assert attrs.get(visibility.RELEASE_VERSION) == "2.4.1"
        assert attrs.get(visibility.RELEASE_CHANGE_TYPE) == "normal"
        assert attrs.get(visibility.RELEASE_RISK) == "medium"
        assert attrs.get(visibility.RELEASE_AWAITING) == ["bob", "carol", "dave"]
        meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        assert "gate **request** open: 1/2 approvals" in meta.current_details
        assert "alice (approve)" in meta.current_details
        assert await desc.static_summary() == "checkout 2.4.1 — normal change"
        timeline = await handle.query(ReleaseWorkflow.history)
        assert [t.phase for t in timeline] == [Phase.REQUESTED, Phase.AWAITING_CAB]
        await handle.signal(ReleaseWorkflow.abort, await act(handle, OperatorVerb.ABORT, "oli", "test over"))
        final = await final_status(handle)
    assert final.outcome is Outcome.ABORTED


# --- one release at a time per service ---------------------------------------------------


async def test_second_release_of_a_service_waits_for_the_first_to_go_live(
    ts_env: WorkflowEnvironment,
) -> None:
    fake = FakeActivities()
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        first = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        await until(ts_env, first, lambda s: s.phase is Phase.DARK_LAUNCH)
        second = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        waiting = await until(
            ts_env, second, lambda s: s.awaiting[:1] != [] and s.awaiting[0].startswith("release:")
        )
        assert waiting.awaiting == [f"release:{first.id}"]
        assert waiting.phase is Phase.TESTING
        desc = await second.describe()
        assert desc.typed_search_attributes.get(visibility.RELEASE_AWAITING) == [f"release:{first.id}"]
        first_final = await final_status(first)
        second_final = await final_status(second)
    assert first_final.outcome is Outcome.COMPLETED and second_final.outcome is Outcome.COMPLETED
    # Never interleaved: the second touches staging only after the first verified production.
    deploys = [s for n, s in fake.calls if n in ("deploy", "acquire_lease", "release_lease")]
    assert deploys.index("deploy-production") < len(deploys) - deploys[::-1].index("deploy-staging") - 1
    first_go_live = {t.phase: t.at for t in first_final.history}[Phase.REVIEWING]
    second_testing_done = {t.phase: t.at for t in second_final.history}[Phase.DARK_LAUNCH]
    assert second_testing_done >= first_go_live
    assert fake.leases == {}


# --- input from any Temporal client ------------------------------------------------------


async def test_invalid_input_from_another_client_fails_the_workflow_naming_the_field(
    ts_env: WorkflowEnvironment,
) -> None:
    fake = FakeActivities()
    bad = make_request().model_dump(mode="json") | {"version": "../1.0.0"}
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await ts_env.client.start_workflow(
            "ReleaseWorkflow", bad, id=f"release-test-{uuid.uuid4()}", task_queue=worker.task_queue
        )
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
        bad_id = await ts_env.client.start_workflow(
            ReleaseWorkflow.run, make_request(), id="Bad Id/../x", task_queue=worker.task_queue
        )
        with pytest.raises(WorkflowFailureError) as id_info:
            await bad_id.result()
    assert "version" in str(info.value.cause) and "must be a semantic version" in str(info.value.cause)
    assert isinstance(id_info.value.cause, ApplicationError)
    assert id_info.value.cause.type == "InvalidRequest" and "is invalid" in id_info.value.cause.message
    assert fake.calls == []
