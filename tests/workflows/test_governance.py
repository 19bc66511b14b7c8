"""Governance on the time-skipping server: every message proves who sent it, or counts for nothing.

Each refusal is asserted with its reason and its effect: no vote, action or amendment counted;
in `status.refusals` when it came by signal; and when an update validator refused it, no new
update event in the Temporal history and no CMDB call (the fake activities saw nothing).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from relman.contracts import (
    GO_LIVE,
    AcceptanceCriteria,
    ChangeType,
    CloseCode,
    Component,
    Criticality,
    Decision,
    Delegation,
    ErrorType,
    Feedback,
    Gate,
    GateState,
    Message,
    OperatorAction,
    OperatorVerb,
    Outcome,
    Phase,
    PlanAmendment,
    Refusal,
    ReleasePlan,
    ReleaseRequest,
    ReleaseStatus,
    Role,
    ServiceProfile,
    Trust,
    Verdict,
    Vote,
)
from relman.identity.signing import seal
from relman.results import final_status
from relman.workflows.release import MAX_REFUSALS, ReleaseWorkflow
from tests import people
from tests.helpers import assert_eventually, new_worker
from tests.people import PEOPLE
from tests.workflows.fakes import STAGES, FakeActivities, make_request, profile_for
from tests.workflows.test_release import act, at_gate, delegated, record_history, refused, status, until, vote
from tests.workflows.test_release import start as start_release

BLACKOUT = "test-blackout"
"""The window FakeActivities closes on the checks named in `closed_window_checks`."""

# --- helpers -----------------------------------------------------------------------

_running: list[WorkflowHandle] = []


@pytest.fixture(autouse=True)
async def _end_releases() -> AsyncIterator[None]:
    """Terminate what a test left running (a failed test, or one that stops at a gate): a
    release waiting on an activity no worker polls would stop the server's time skipping."""
    yield
    while _running:
        handle = _running.pop()
        with contextlib.suppress(RPCError):
            await handle.terminate("test over")


async def start(env: WorkflowEnvironment, w: Worker, request: ReleaseRequest, **kw: bool) -> WorkflowHandle:
    handle = await start_release(env, w, request, **kw)
    _running.append(handle)
    return handle


def worker(env: WorkflowEnvironment, fake: FakeActivities) -> Worker:
    return new_worker(env.client, ReleaseWorkflow, activities=fake.all())


async def ballot(
    handle: WorkflowHandle,
    gate: Gate,
    who: str,
    decision: Decision = Decision.APPROVE,
    *,
    comment: str = "looks good",
    approved_hash: str | None = None,
    on_behalf_of: str | None = None,
    delegation: Delegation | None = None,
) -> Vote:
    """An unsigned vote for what the gate decides now (the caller signs it, or forges it)."""
    if approved_hash is None:
        approved_hash = (await status(handle)).gates[gate].subject_hash
    return Vote(
        gate=gate,
        approver=who,
        decision=decision,
        approved_hash=approved_hash,
        comment=comment,
        on_behalf_of=on_behalf_of,
        delegation=delegation,
    )


def with_proof(message: Any, **changes: Any) -> Any:
    """`message` with its proof changed, the signature kept (a forgery or a tampered proof)."""
    return message.model_copy(update={"proof": message.proof.model_copy(update=changes)})


def flipped(message: Any) -> Any:
    """`message` with one bit of its signature flipped."""
    raw = bytearray(base64.b64decode(message.proof.signature))
    raw[17] ^= 0x01
    return with_proof(message, signature=base64.b64encode(bytes(raw)).decode())


def governance(s: ReleaseStatus) -> dict[str, Any]:
    """Everything a message could change if it counted."""
    return {
        "gates": {g: (v.state, v.subject_hash, [a.vote for a in v.votes]) for g, v in s.gates.items()},
        "plan_hash": s.plan_hash,
        "plan": s.plan,
        "actions": s.actions,
        "amendments": s.amendments,
        "paused": s.paused,
        "window_waits": s.window_waits,
        "outcome": s.outcome,
    }


WORKFLOW_TASK_EVENTS = {
    "EVENT_TYPE_WORKFLOW_TASK_SCHEDULED",
    "EVENT_TYPE_WORKFLOW_TASK_STARTED",
    "EVENT_TYPE_WORKFLOW_TASK_COMPLETED",
}


def update_events(events: list[Any]) -> int:
    return sum(
        1
        for e in events
        if e.event_type
        in (
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
        )
    )


async def validator_refused(
    handle: WorkflowHandle, update: Any, message: Any, fake: FakeActivities | None = None
) -> str:
    """Send `message` by the validated update; it must be refused, leaving no trace anywhere.

    With `fake` the release must be idle (at a gate or a window): then every event added to the
    history and every call to the activities (CMDB included) is checked too.
    """
    before = await status(handle)
    history_before = (await handle.fetch_history()).events
    calls_before = list(fake.calls) if fake else []
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update(update, message)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError), cause
    assert cause.type == ErrorType.REFUSED.value
    after = await status(handle)
    history_after = (await handle.fetch_history()).events
    assert update_events(history_after) == update_events(history_before)
    if fake is not None:
        # An idle release: nothing new but the workflow task that ran the validator (the
        # time-skipping server records it; a real server's speculative task leaves nothing).
        added = {EventType.Name(e.event_type) for e in history_after[len(history_before) :]}
        assert added <= WORKFLOW_TASK_EVENTS, added
    assert governance(after) == governance(before)
    # The validator answers the sender; only signals need the status to show a refusal.
    assert after.refused == before.refused
    if fake is not None:
        assert fake.calls == calls_before
    return cause.message


async def signal_refused(handle: WorkflowHandle, signal: Any, message: Any) -> Refusal:
    """Send `message` by signal; it must land in `status.refusals`, counting for nothing."""
    before = await status(handle)
    await handle.signal(signal, message)

    async def refused_now() -> ReleaseStatus:
        current = await status(handle)
        assert current.refused == before.refused + 1
        return current

    after = await assert_eventually(refused_now)
    assert governance(after) == governance(before)
    return after.refusals[-1]


def with_trust(change: Callable[[Trust], Trust]) -> Callable[[str], ServiceProfile]:
    """A catalog whose trust is the test catalog's, changed by `change`."""

    def profile(service: str) -> ServiceProfile:
        base = profile_for(service)
        return base.model_copy(update={"trust": change(base.trust)})

    return profile


async def at_plan_gate(env: WorkflowEnvironment, handle: WorkflowHandle) -> ReleaseStatus:
    await until(env, handle, at_gate(Gate.REQUEST))
    await vote(handle, Gate.REQUEST, "alice")
    await vote(handle, Gate.REQUEST, "bob")
    return await until(env, handle, at_gate(Gate.PLAN))


async def waiting_on_window(env: WorkflowEnvironment, handle: WorkflowHandle) -> ReleaseStatus:
    return await until(env, handle, lambda s: s.awaiting == ["window"])


def override(by: str, window: str = BLACKOUT, step: str = "allow-list") -> OperatorAction:
    return OperatorAction(
        action=OperatorVerb.OVERRIDE_WINDOW, by=by, reason="fix for the outage", window=window, step=step
    )


# --- signatures ----------------------------------------------------------------------


async def test_forged_signatures_are_refused(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        now = await people.now()
        alice = await ballot(handle, Gate.REQUEST, "alice")

        # zoe signs alice's vote with her own key and claims alice's key id.
        forged = with_proof(people.signed(alice, handle.id, "zoe", at=now), key_id=PEOPLE["alice"].key_id)
        reason = await validator_refused(handle, ReleaseWorkflow.decide, forged, fake)
        assert reason.startswith("the signature by alice does not match this message")

        # alice's real signature with one bit flipped.
        tampered = flipped(people.signed(alice, handle.id, at=now))
        reason = await validator_refused(handle, ReleaseWorkflow.decide, tampered, fake)
        assert reason.startswith("the signature by alice does not match this message")

        # A signed vote whose content changed after signing (the comment).
        altered = people.signed(alice, handle.id, at=now).model_copy(update={"comment": "LGTM"})
        reason = await validator_refused(handle, ReleaseWorkflow.decide, altered, fake)
        assert reason.startswith("the signature by alice does not match this message")

        refusal = await signal_refused(handle, ReleaseWorkflow.approve, forged)
        assert (refusal.actor, refusal.action) == ("alice", "approve at request")
        assert refusal.reason.startswith("the signature by alice does not match this message")
        refusal = await signal_refused(handle, ReleaseWorkflow.approve, tampered)
        assert "does not match" in refusal.reason

        current = await status(handle)
        assert current.gates[Gate.REQUEST].votes == []
        assert current.refused == 2


ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_WORKER = """
import asyncio, os, sys, uuid
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from relman.contracts import Decision, Gate, Vote
from relman.worker import workflow_runner
from relman.workflows.release import MAX_REFUSALS, ReleaseWorkflow
from tests import people
from tests.workflows.fakes import FakeActivities, make_request
from tests.workflows.test_governance import flipped


async def main(target: str) -> None:
    client = await Client.connect(target, data_converter=pydantic_data_converter)
    queue, release_id = f"tq-{uuid.uuid4()}", f"release-test-{uuid.uuid4()}"
    fake = FakeActivities()
    async with Worker(client, task_queue=queue, workflows=[ReleaseWorkflow], activities=fake.all(),
                      workflow_runner=workflow_runner()):
        print("release", release_id, flush=True)
        request = people.signed(make_request(), release_id)
        handle = await client.start_workflow(ReleaseWorkflow.run, request, id=release_id, task_queue=queue)
        while Gate.REQUEST not in (current := await handle.query(ReleaseWorkflow.status)).gates:
            await asyncio.sleep(0.05)
        ballot = Vote(gate=Gate.REQUEST, approver="alice", decision=Decision.APPROVE,
                      approved_hash=current.gates[Gate.REQUEST].subject_hash)
        forged = flipped(people.signed(ballot, release_id))
        try:
            await handle.execute_update(ReleaseWorkflow.decide, forged)
        except WorkflowUpdateFailedError as err:
            print("refused:", err.cause, flush=True)
        await handle.execute_update(ReleaseWorkflow.decide, people.signed(ballot, release_id))
        current = await handle.query(ReleaseWorkflow.status)
        print("counted:", len(current.gates[Gate.REQUEST].votes), flush=True)
    os._exit(0)


asyncio.run(main(sys.argv[1]))
"""


async def test_a_forged_vote_does_not_crash_the_production_worker(dev_env: WorkflowEnvironment) -> None:
    """The production sandbox (relman passed through), in a child process: a crash stays there.

    On the dev server, not the time-skipping one: a workflow task abandoned by a crashed worker
    keeps the time-skipping server from ever skipping time again, stalling every later test.
    """
    target = dev_env.client.service_client.config.target_host
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PRODUCTION_WORKER,
        target,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=120)
    lines = out.decode().splitlines()
    for line in lines:
        if line.startswith("release "):
            with contextlib.suppress(RPCError):
                await dev_env.client.get_workflow_handle(line.split()[1]).terminate("test over")
    panic = [line for line in err.decode().splitlines() if "panicked" in line or "failed to import" in line]
    assert child.returncode == 0, f"worker died with {child.returncode}: {panic[:2]}"
    assert any(
        line.startswith("refused:") and "the signature by alice does not match" in line for line in lines
    ), lines
    assert "counted: 1" in lines


async def test_one_members_key_cannot_sign_as_another(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        now = await people.now()
        alice = await ballot(handle, Gate.REQUEST, "alice")
        as_alice_by_bob = people.signed(alice, handle.id, "bob", at=now)
        reason = await validator_refused(handle, ReleaseWorkflow.decide, as_alice_by_bob, fake)
        assert reason == f"key {PEOPLE['bob'].key_id} is not a key of alice in the catalog"
        as_alice_by_zoe = people.signed(alice, handle.id, "zoe", at=now)
        reason = await validator_refused(handle, ReleaseWorkflow.decide, as_alice_by_zoe, fake)
        assert reason == f"key {PEOPLE['zoe'].key_id} is not a key of alice in the catalog"
        refusal = await signal_refused(handle, ReleaseWorkflow.approve, as_alice_by_bob)
        assert refusal.reason == f"key {PEOPLE['bob'].key_id} is not a key of alice in the catalog"
        # bob's own vote still counts: his key was not used up by signing for alice.
        await vote(handle, Gate.REQUEST, "bob")
        assert [a.vote.approver for a in (await status(handle)).gates[Gate.REQUEST].votes] == ["bob"]


async def test_valid_signatures_replayed_elsewhere_are_refused(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with worker(ts_env, fake) as w:
        first = await start(ts_env, w, make_request())
        second = await start(ts_env, w, make_request())
        await until(ts_env, first, at_gate(Gate.REQUEST))
        await until(ts_env, second, at_gate(Gate.REQUEST))

        # Another release: the same request (same hash), but the signature names the first.
        for_first = await people.sign(await ballot(first, Gate.REQUEST, "alice"), first.id)
        reason = await validator_refused(second, ReleaseWorkflow.decide, for_first)
        assert "does not match this message" in reason and "another release" in reason
        refusal = await signal_refused(second, ReleaseWorkflow.approve, for_first)
        assert "does not match this message" in refusal.reason
        await first.execute_update(ReleaseWorkflow.decide, for_first)  # where it was meant: counts
        await vote(first, Gate.REQUEST, "bob")
        current = await until(ts_env, first, at_gate(Gate.PLAN))

        # Another gate: signed for the request gate, sent to the plan gate with the plan's hash.
        at_request = await people.sign(
            await ballot(first, Gate.REQUEST, "carol", approved_hash=current.plan_hash), first.id
        )
        reason = await validator_refused(
            first, ReleaseWorkflow.decide, at_request.model_copy(update={"gate": Gate.PLAN})
        )
        assert "does not match this message" in reason

        # An older plan hash: carol signs for the plan, rex amends it, carol's vote is stale.
        old_hash = current.plan_hash
        stale = await people.sign(await ballot(first, Gate.PLAN, "carol"), first.id)
        assert current.plan is not None
        plan = current.plan.model_copy(
            update={"revision": 2, "backout_plan": "Exposure to 0%, then switch production back."}
        )
        amendment = await people.sign(PlanAmendment(by="rex", plan=plan, reason="clearer backout"), first.id)
        await first.execute_update(ReleaseWorkflow.amend, amendment)
        amended = await status(first)
        assert amended.plan_hash != old_hash
        reason = await validator_refused(first, ReleaseWorkflow.decide, stale)
        assert reason.startswith(
            f"vote is for {old_hash[:12]}, but gate plan is for {amended.plan_hash[:12]}"
        )
        refusal = await signal_refused(first, ReleaseWorkflow.approve, stale)
        assert "outdated plan or request" in refusal.reason
        # The stale signature moved onto the new hash does not verify.
        moved = stale.model_copy(update={"approved_hash": amended.plan_hash})
        assert "does not match" in await validator_refused(first, ReleaseWorkflow.decide, moved)
        assert (await status(first)).gates[Gate.PLAN].votes == []


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (timedelta(minutes=-6), "more than 0:05:00 before now"),
        (timedelta(minutes=6), "later than now"),
    ],
)
async def test_issued_at_outside_the_skew_window_is_refused(
    ts_env: WorkflowEnvironment, offset: timedelta, expected: str
) -> None:
    fake = FakeActivities()
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        alice = await ballot(handle, Gate.REQUEST, "alice")
        off = people.signed(alice, handle.id, at=await people.now() + offset)
        assert expected in await validator_refused(handle, ReleaseWorkflow.decide, off, fake)
        refusal = await signal_refused(handle, ReleaseWorkflow.approve, off)
        assert expected in refusal.reason
        oli = people.signed(
            OperatorAction(action=OperatorVerb.PAUSE, by="oli", reason="look"),
            handle.id,
            at=await people.now() + offset,
        )
        assert expected in await validator_refused(handle, ReleaseWorkflow.operate, oli, fake)
        # Within the window it counts.
        inside = people.signed(alice, handle.id, at=await people.now() + offset * 0.5)
        await handle.execute_update(ReleaseWorkflow.decide, inside)
        assert len((await status(handle)).gates[Gate.REQUEST].votes) == 1


async def test_a_signed_message_is_accepted_once(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        alice = await people.sign(await ballot(handle, Gate.REQUEST, "alice"), handle.id)
        await handle.execute_update(ReleaseWorkflow.decide, alice)
        used = "this signed message was already used (its nonce was seen before)"
        assert await validator_refused(handle, ReleaseWorkflow.decide, alice, fake) == used
        assert (await signal_refused(handle, ReleaseWorkflow.approve, alice)).reason == used
        assert len((await status(handle)).gates[Gate.REQUEST].votes) == 1

        # A pause replayed after the resume would hold the release again: refused.
        pause = await act(handle, OperatorVerb.PAUSE, "oli", "looking at dashboards")
        await handle.execute_update(ReleaseWorkflow.operate, pause)
        await handle.execute_update(
            ReleaseWorkflow.operate, await act(handle, OperatorVerb.RESUME, "oli", "all clear")
        )
        assert not (await status(handle)).paused
        assert await validator_refused(handle, ReleaseWorkflow.operate, pause, fake) == used
        refusal = await signal_refused(handle, ReleaseWorkflow.pause, pause)
        assert (refusal.actor, refusal.action, refusal.reason) == ("oli", "pause", used)
        current = await status(handle)
        assert not current.paused
        assert [r.action.action for r in current.actions] == [OperatorVerb.PAUSE, OperatorVerb.RESUME]


async def test_the_same_signed_abort_twice_counts_once(ts_env: WorkflowEnvironment) -> None:
    # The CMDB refuses the close twice (retried for a few seconds): the release is still running
    # when the same abort comes again.
    fake = FakeActivities(compensation_failures={"close": 2})
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        abort = await act(handle, OperatorVerb.ABORT, "oli", "wrong version")
        await handle.execute_update(ReleaseWorkflow.operate, abort)
        again = await validator_refused(handle, ReleaseWorkflow.operate, abort)
        assert again in ("the release has ended (aborted)", "already aborting (by oli)")
        await handle.signal(ReleaseWorkflow.abort, abort)
        final = await final_status(handle)
    assert final.outcome is Outcome.ABORTED
    assert [r.action.action for r in final.actions] == [OperatorVerb.ABORT]
    assert [(r.actor, r.action) for r in final.refusals] == [("oli", "abort")]
    assert final.refusals[0].reason in ("the release has ended (aborted)", "already aborting (by oli)")
    assert [c.close_code for c in fake.closes] == [CloseCode.ABORTED]


async def test_unsigned_votes_are_refused_when_signatures_are_required(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        unsigned = await ballot(handle, Gate.REQUEST, "alice")
        expected = "alice's message is not signed, and this service requires signatures"
        assert await validator_refused(handle, ReleaseWorkflow.decide, unsigned, fake) == expected
        assert (await signal_refused(handle, ReleaseWorkflow.approve, unsigned)).reason == expected
        unsigned_abort = OperatorAction(action=OperatorVerb.ABORT, by="oli", reason="stop")
        assert "oli's message is not signed" in await validator_refused(
            handle, ReleaseWorkflow.operate, unsigned_abort, fake
        )
        assert (await status(handle)).gates[Gate.REQUEST].votes == []


async def test_an_unsigned_request_is_refused_when_signatures_are_required(
    ts_env: WorkflowEnvironment,
) -> None:
    fake = FakeActivities()
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request(), sign=False)
        final = await final_status(handle)
    assert final.outcome is Outcome.REJECTED
    assert final.reason == (
        "request refused: request: rita's message is not signed, and this service requires signatures"
    )
    assert fake.closes[-1].close_code is CloseCode.REJECTED


async def test_unsigned_votes_count_when_the_catalog_turns_signatures_off(
    ts_env: WorkflowEnvironment,
) -> None:
    fake = FakeActivities(profile=with_trust(lambda t: t.model_copy(update={"signatures": "off"})))
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request(), sign=False)
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        await handle.execute_update(ReleaseWorkflow.decide, await ballot(handle, Gate.REQUEST, "alice"))
        await handle.signal(ReleaseWorkflow.approve, await ballot(handle, Gate.REQUEST, "bob"))
        current = await until(ts_env, handle, at_gate(Gate.PLAN))
        request_gate = current.gates[Gate.REQUEST]
        assert request_gate.state is GateState.APPROVED
        assert [(a.vote.approver, a.vote.proof) for a in request_gate.votes] == [
            ("alice", None),
            ("bob", None),
        ]
        # Roles still hold without signatures.
        assert "zoe is not a member" in await validator_refused(
            handle, ReleaseWorkflow.decide, await ballot(handle, Gate.PLAN, "zoe")
        )


# --- delegation -----------------------------------------------------------------------


async def test_votes_on_behalf_of_someone_need_their_delegation(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))

        async def for_alice(who: str = "zoe", delegation: Delegation | None = None, **kw: Any) -> Vote:
            b = await ballot(handle, Gate.REQUEST, who, on_behalf_of="alice", delegation=delegation, **kw)
            return await people.sign(b, handle.id, who)

        async def refusal_of(message: Vote) -> str:
            return await validator_refused(handle, ReleaseWorkflow.decide, message, fake)

        now = await people.now()
        assert await refusal_of(await for_alice()) == (
            "zoe votes for alice without a delegation signed by them"
        )
        expired = await delegated("alice", "zoe", not_after=now - timedelta(hours=1))
        assert (await refusal_of(await for_alice(delegation=expired))).startswith(
            "alice's delegation ended at "
        )
        other_service = await delegated("alice", "zoe", services=["payments"])
        assert await refusal_of(await for_alice(delegation=other_service)) == (
            "alice's delegation does not cover service checkout"
        )
        other_gate = await delegated("alice", "zoe", gates=[Gate.PLAN])
        assert await refusal_of(await for_alice(delegation=other_gate)) == (
            "alice's delegation does not cover gate request"
        )
        # A delegation that claims alice but was signed by zoe herself (or by bob).
        for signer in ("zoe", "bob"):
            fields = (await delegated("alice", "zoe")).model_dump(exclude={"proof"})
            not_hers = await people.sign(Delegation.model_validate(fields), "*", signer)
            assert await refusal_of(await for_alice(delegation=not_hers)) == (
                f"delegation: key {PEOPLE[signer].key_id} is not a key of alice in the catalog"
            )
        # A delegation altered after alice signed it (a later not_after).
        stretched = (await delegated("alice", "zoe")).model_copy(
            update={"not_after": now + timedelta(days=90)}
        )
        assert (await refusal_of(await for_alice(delegation=stretched))).startswith(
            "delegation: the signature by alice does not match"
        )
        bobs = await delegated("bob", "zoe")
        assert await refusal_of(await for_alice(delegation=bobs)) == (
            "the delegation is from bob to zoe, not from alice to zoe"
        )
        # The requester: as the member voted for, and as the delegate.
        for_rita = await people.sign(
            await ballot(handle, Gate.REQUEST, "alice", on_behalf_of="rita"), handle.id
        )
        assert await refusal_of(for_rita) == "rita requested this release and cannot approve it"
        by_rita = await for_alice("rita", delegation=await delegated("alice", "rita"))
        assert await refusal_of(by_rita) == "rita requested this release and cannot approve it"

        refusal = await signal_refused(handle, ReleaseWorkflow.approve, await for_alice(delegation=expired))
        assert refusal.actor == "zoe" and refusal.reason.startswith("alice's delegation ended at ")
        refusal = await signal_refused(handle, ReleaseWorkflow.approve, await for_alice())
        assert refusal.reason == "zoe votes for alice without a delegation signed by them"
        assert (await status(handle)).gates[Gate.REQUEST].votes == []


async def test_a_delegated_vote_records_both_names_and_both_keys(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        await vote(handle, Gate.REQUEST, "zoe", on_behalf_of="alice", comment="for alice, on leave")
        current = await status(handle)
        (approval,) = current.gates[Gate.REQUEST].votes
        recorded = approval.vote
        assert (recorded.approver, recorded.on_behalf_of) == ("zoe", "alice")
        assert recorded.proof is not None and recorded.proof.key_id == PEOPLE["zoe"].key_id
        assert recorded.delegation is not None and recorded.delegation.proof is not None
        assert (recorded.delegation.delegator, recorded.delegation.delegate) == ("alice", "zoe")
        assert recorded.delegation.proof.key_id == PEOPLE["alice"].key_id
        assert "alice" not in current.awaiting
        # alice is counted once: neither she nor another delegate votes for her again.
        assert "alice has already voted" in await refused(handle, Gate.REQUEST, "alice")
        assert "alice has already voted" in await refused(
            handle, Gate.REQUEST, "mallory", on_behalf_of="alice"
        )
        await vote(handle, Gate.REQUEST, "bob")
        await until(ts_env, handle, at_gate(Gate.PLAN))
        await handle.signal(ReleaseWorkflow.abort, await act(handle, OperatorVerb.ABORT, "oli", "test over"))
        final = await final_status(handle)
        record_history("normal_delegated_vote_aborted", await handle.fetch_history())
    delegated_votes = [a.vote for a in fake.closes[-1].approvals if a.vote.on_behalf_of]
    assert [(v.approver, v.on_behalf_of) for v in delegated_votes] == [("zoe", "alice")]
    assert final.outcome is Outcome.ABORTED


# --- operator actions ---------------------------------------------------------------------


async def test_operator_actions_need_the_role(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        not_operator = "zoe is not one of the operators of checkout"
        for verb in (OperatorVerb.ABORT, OperatorVerb.PAUSE, OperatorVerb.RESUME, OperatorVerb.PROMOTE):
            zoes = await act(handle, verb, "zoe", "because")
            assert await validator_refused(handle, ReleaseWorkflow.operate, zoes, fake) == not_operator
        # The requester holds no operator role either.
        ritas = await act(handle, OperatorVerb.ABORT, "rita", "changed my mind")
        assert await validator_refused(handle, ReleaseWorkflow.operate, ritas, fake) == (
            "rita is not one of the operators of checkout"
        )
        for who in ("zoe", "alice"):  # alice is an operator, not a change manager
            overriding = await people.sign(override(who), handle.id)
            assert await validator_refused(handle, ReleaseWorkflow.operate, overriding, fake) == (
                f"{who} is not one of the change managers of checkout"
            )

        signals = {
            OperatorVerb.ABORT: ReleaseWorkflow.abort,
            OperatorVerb.PAUSE: ReleaseWorkflow.pause,
            OperatorVerb.PROMOTE: ReleaseWorkflow.promote,
        }
        for verb, signal in signals.items():
            refusal = await signal_refused(handle, signal, await act(handle, verb, "zoe", "because"))
            assert (refusal.actor, refusal.action, refusal.reason) == ("zoe", verb.value, not_operator)
        refusal = await signal_refused(
            handle, ReleaseWorkflow.override_window, await people.sign(override("alice"), handle.id)
        )
        assert (refusal.actor, refusal.action) == ("alice", "override_window")
        assert refusal.reason == "alice is not one of the change managers of checkout"
        # A message whose verb is not the signal's is refused as such.
        refusal = await signal_refused(
            handle, ReleaseWorkflow.pause, await act(handle, OperatorVerb.ABORT, "oli", "sneaky")
        )
        assert refusal.reason == "the pause message carries the action abort"

        current = await status(handle)
        assert current.phase is Phase.AWAITING_CAB and not current.paused and current.actions == []
        assert current.refused == 5
        # An operator may.
        await handle.execute_update(
            ReleaseWorkflow.operate, await act(handle, OperatorVerb.PAUSE, "oli", "looking")
        )
        assert (await status(handle)).paused


async def test_an_override_by_the_requester_is_refused(ts_env: WorkflowEnvironment) -> None:
    def rita_manages_changes(trust: Trust) -> Trust:
        roles = dict(trust.roles)
        roles[Role.CHANGE_MANAGERS] = [*roles[Role.CHANGE_MANAGERS], "rita"]
        return trust.model_copy(update={"roles": roles})

    fake = FakeActivities(profile=with_trust(rita_manages_changes), closed_window_checks={0})
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request(ChangeType.STANDARD))
        await waiting_on_window(ts_env, handle)
        ritas = await people.sign(override("rita"), handle.id)
        expected = "rita requested this release and cannot override its windows"
        assert await validator_refused(handle, ReleaseWorkflow.operate, ritas, fake) == expected
        assert (await signal_refused(handle, ReleaseWorkflow.override_window, ritas)).reason == expected
        current = await status(handle)
        assert current.awaiting == ["window"] and current.stages == []
        assert current.window_waits[0].override is None


async def test_an_override_names_the_window_and_step_the_release_waits_on(
    ts_env: WorkflowEnvironment,
) -> None:
    fake = FakeActivities()
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        carols = await people.sign(override("carol"), handle.id)
        expected = "no deployment window is holding this release; an override lets one waiting step through"
        assert await validator_refused(handle, ReleaseWorkflow.operate, carols, fake) == expected
        assert (await signal_refused(handle, ReleaseWorkflow.override_window, carols)).reason == expected

    fake = FakeActivities(closed_window_checks={0})
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request(ChangeType.STANDARD))
        await waiting_on_window(ts_env, handle)
        for window, step in (("other-window", "allow-list"), (BLACKOUT, "one"), (BLACKOUT, GO_LIVE)):
            wrong = await people.sign(override("carol", window, step), handle.id)
            assert await validator_refused(handle, ReleaseWorkflow.operate, wrong, fake) == (
                f"the release waits on window {BLACKOUT!r} before step allow-list, "
                f"not on {window!r} before {step}"
            )
        wrong = await people.sign(override("cm", step="five"), handle.id)
        refusal = await signal_refused(handle, ReleaseWorkflow.override_window, wrong)
        assert refusal.actor == "cm" and "not on 'test-blackout' before five" in refusal.reason


async def test_an_override_lets_exactly_one_step_through_and_is_recorded(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities(closed_window_checks={0})  # a two-day blackout from the first stage on
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request(ChangeType.STANDARD))
        await waiting_on_window(ts_env, handle)
        accepted = await handle.execute_update(
            ReleaseWorkflow.operate, await people.sign(override("carol"), handle.id)
        )
        assert accepted.record.action.action is OperatorVerb.OVERRIDE_WINDOW
        # The next stage meets the same blackout and waits again: the override was for one step.
        current = await until(ts_env, handle, lambda s: len(s.window_waits) == 2)
        assert current.awaiting == ["window"]
        assert [s.name for s in current.stages] == ["allow-list"]
        first, second = current.window_waits
        assert (first.step, first.window) == ("allow-list", BLACKOUT)
        assert first.override is not None and first.override.by == "carol" and first.until is not None
        assert (second.step, second.window, second.override) == ("one", BLACKOUT, None)
        assert "expose-stage-one" not in [s for _, s in fake.calls]
        assert [(e.action, e.actor, e.detail) for e in fake.events] == [
            (
                "window.overridden",
                "carol",
                {"window": BLACKOUT, "step": "allow-list", "reason": "fix for the outage"},
            )
        ]
        assert any(t.note == "override window by carol: fix for the outage" for t in current.history), (
            current.history
        )
        final = await final_status(handle)
        record_history("standard_window_overridden", await handle.fetch_history())
    assert final.outcome is Outcome.COMPLETED
    note = f"window {BLACKOUT!r} passed before allow-list by carol: fix for the outage"
    assert final.reason == note
    assert fake.closes[-1].reason == note
    assert [w.override is not None for w in final.window_waits] == [True, False]
    assert final.window_waits[1].until is not None
    assert fake.evidence[-1].status.window_waits[0].override == first.override


async def test_an_override_at_go_live_lets_the_go_live_through(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities(closed_window_checks={4})  # checks 0-3 are the four stages
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request(ChangeType.STANDARD))
        current = await waiting_on_window(ts_env, handle)
        assert current.phase is Phase.DEPLOYING
        stage = await people.sign(override("carol", step="quarter"), handle.id)
        assert await validator_refused(handle, ReleaseWorkflow.operate, stage, fake) == (
            f"the release waits on window {BLACKOUT!r} before step {GO_LIVE}, "
            f"not on {BLACKOUT!r} before quarter"
        )
        await handle.signal(
            ReleaseWorkflow.override_window, await people.sign(override("carol", step=GO_LIVE), handle.id)
        )
        final = await final_status(handle)
    assert final.outcome is Outcome.COMPLETED
    assert [(w.step, w.override is not None) for w in final.window_waits] == [(GO_LIVE, True)]
    # Deployed inside the blackout, and the record says so.
    assert final.deploys[-1].at < final.window_waits[0].since + timedelta(days=2)
    assert final.reason == f"window {BLACKOUT!r} passed before {GO_LIVE} by carol: fix for the outage"
    assert [(e.action, e.detail["step"]) for e in fake.events] == [("window.overridden", GO_LIVE)]


# --- plan amendments -------------------------------------------------------------------------


def amended(plan: ReleasePlan, **changes: Any) -> ReleasePlan:
    return plan.model_copy(update={"revision": plan.revision + 1, **changes})


async def test_plan_amendments_are_authorized_sound_and_visible(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request())
        current = await at_plan_gate(ts_env, handle)
        plan = current.plan
        assert plan is not None
        await vote(handle, Gate.PLAN, "carol")

        async def amendment(by: str, new: ReleasePlan, reason: str = "tighter rollout") -> PlanAmendment:
            return await people.sign(PlanAmendment(by=by, plan=new, reason=reason), handle.id)

        async def refusal_of(message: PlanAmendment) -> str:
            return await validator_refused(handle, ReleaseWorkflow.amend, message, fake)

        slower = [s.model_copy(update={"bake_seconds": 600}) if s.name == "one" else s for s in plan.stages]
        assert await refusal_of(await amendment("alice", amended(plan, stages=slower))) == (
            "alice is not a release manager of checkout"
        )
        loose = AcceptanceCriteria(min_pass_rate=0, max_error_rate=0.9, max_latency_ms=500)
        assert await refusal_of(await amendment("rex", amended(plan, acceptance=loose))) == (
            "acceptance criteria looser than the catalog's: min_pass_rate 0 < 1; max_error_rate 0.9 > 0.01"
        )
        slow = AcceptanceCriteria(max_latency_ms=900)
        assert "max_latency_ms 900 > 500" in await refusal_of(
            await amendment("rex", amended(plan, acceptance=slow))
        )
        stale = plan.model_copy(update={"stages": slower})  # same revision as the plan
        assert await refusal_of(await amendment("rex", stale)) == (
            "the amendment is revision 1, but the plan is at revision 1"
        )
        other = amended(plan, components=[Component(name="checkout", version="9.9.9")])
        assert await refusal_of(await amendment("rex", other)) == (
            "an amendment may not change the components or versions released"
        )
        assert await refusal_of(await amendment("rex", amended(plan))) == (
            "the amendment changes nothing in the plan"
        )
        refusal = await signal_refused(
            handle, ReleaseWorkflow.amend_plan, await amendment("alice", amended(plan, stages=slower))
        )
        assert (refusal.actor, refusal.action) == ("alice", "amend plan")
        assert refusal.reason == "alice is not a release manager of checkout"

        # A release manager's sound amendment: in the timeline, the status and the CMDB.
        strict = AcceptanceCriteria(max_error_rate=0.005)
        new_plan = await handle.execute_update(
            ReleaseWorkflow.amend, await amendment("rex", amended(plan, stages=slower, acceptance=strict))
        )
        assert new_plan.revision == 2
        changes = ["stage one: bake 60s -> 600s", "acceptance max_error_rate: 0.01 -> 0.005"]
        current = await status(handle)
        assert current.plan_hash == new_plan.content_hash() != plan.content_hash()
        (record,) = current.amendments
        assert record.changes == changes
        assert (record.previous_hash, record.plan_hash) == (plan.content_hash(), current.plan_hash)
        assert record.amendment.by == "rex" and record.amendment.proof is not None
        assert current.history[-1].note == f"plan amended to revision 2 by rex: {'; '.join(changes)}"
        assert current.gates[Gate.PLAN].votes == []  # carol's approval was for the old plan
        assert [a.vote.approver for a in current.gates[Gate.PLAN].voided] == ["carol"]  # kept, not counted

        async def recorded() -> None:
            assert [(e.action, e.actor) for e in fake.events] == [("plan.amended", "rex")]

        await assert_eventually(recorded)
        assert fake.events[0].detail == {
            "revision": 2,
            "previous_hash": plan.content_hash(),
            "plan_hash": current.plan_hash,
            "changes": changes,
            "reason": "tighter rollout",
        }
        # Written against revision 1 again: stale.
        assert await refusal_of(await amendment("rex", amended(plan, backout_plan="Roll back."))) == (
            "the amendment is revision 2, but the plan is at revision 2"
        )

        await vote(handle, Gate.PLAN, "carol")
        await vote(handle, Gate.PLAN, "dave")
        closed = await until(ts_env, handle, lambda s: s.gates[Gate.PLAN].state is GateState.APPROVED)
        assert closed.plan is not None
        late = await amendment("rex", amended(closed.plan, backout_plan="Roll back."))
        # The release is building meanwhile: only the update events and the plan are compared.
        assert await validator_refused(handle, ReleaseWorkflow.amend, late) == (
            "the plan gate is not open; a plan is amended only while it awaits approval"
        )
        final = await final_status(handle)
    assert final.outcome is Outcome.COMPLETED
    assert final.plan is not None and final.plan.acceptance.max_error_rate == 0.005
    assert [e.action for e in fake.events] == ["plan.amended"]
    assert fake.evidence[-1].status.amendments[0].changes == changes


async def test_amending_before_the_plan_exists_is_refused(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        plan = ReleasePlan(
            components=[Component(name="checkout", version="2.4.1")],
            stages=STAGES,
            revision=2,
        )
        early = await people.sign(PlanAmendment(by="rex", plan=plan, reason="early"), handle.id)
        assert (await validator_refused(handle, ReleaseWorkflow.amend, early, fake)).startswith(
            "the plan gate is not open"
        )


# --- change models ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change_type", "model", "requester", "expected"),
    [
        (
            ChangeType.STANDARD,
            None,
            "rita",
            "a standard change names the catalog's change model it follows (change_model)",
        ),
        (
            ChangeType.STANDARD,
            "db-migration",
            "rita",
            "checkout has no change model db-migration (declared: config-tweak)",
        ),
        (ChangeType.STANDARD, "config-tweak", "zoe", "zoe may not request change model config-tweak"),
        (
            ChangeType.NORMAL,
            "config-tweak",
            "rita",
            "change model config-tweak is for standard changes, not normal",
        ),
    ],
)
async def test_only_declared_change_models_are_standard(
    ts_env: WorkflowEnvironment, change_type: ChangeType, model: str | None, requester: str, expected: str
) -> None:
    fake = FakeActivities()
    request = ReleaseRequest.model_validate(
        make_request(change_type).model_dump() | {"change_model": model, "requested_by": requester}
    )
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, request)
        final = await final_status(handle)
    assert final.outcome is Outcome.REJECTED
    assert final.reason == f"request refused: {expected}"
    assert fake.closes[-1].close_code is CloseCode.REJECTED
    assert fake.closes[-1].reason == final.reason
    assert Gate.REQUEST not in final.gates
    assert not fake.steps(fake.build_package.__temporal_activity_definition.name)  # type: ignore[attr-defined]


async def test_a_standard_change_riskier_than_its_model_is_rejected(ts_env: WorkflowEnvironment) -> None:
    def critical(service: str) -> ServiceProfile:
        return profile_for(service).model_copy(update={"criticality": Criticality.MISSION_CRITICAL})

    fake = FakeActivities(profile=critical)
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request(ChangeType.STANDARD))
        final = await final_status(handle)
    assert final.outcome is Outcome.REJECTED
    assert final.reason == "request refused: risk high exceeds change model config-tweak's maximum low"


# --- identity providers and revocation -----------------------------------------------------------


async def test_an_identity_provider_vouches_only_for_its_people(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        now = await people.now()
        for_carol = seal(await ballot(handle, Gate.REQUEST, "carol"), handle.id, people.CONSOLE, now=now)
        expected = "identity provider console may not vouch for carol"
        assert await validator_refused(handle, ReleaseWorkflow.decide, for_carol, fake) == expected
        assert (await signal_refused(handle, ReleaseWorkflow.approve, for_carol)).reason == expected
        # A provider the catalog does not trust, and a person's key passed off as the provider's.
        rogue = seal(
            await ballot(handle, Gate.REQUEST, "alice"), handle.id, PEOPLE["zoe"].as_provider("evil"), now=now
        )
        assert await validator_refused(handle, ReleaseWorkflow.decide, rogue, fake) == (
            "identity provider evil is not trusted by the catalog"
        )
        zoe_as_console = seal(
            await ballot(handle, Gate.REQUEST, "alice"),
            handle.id,
            PEOPLE["zoe"].as_provider("console"),
            now=now,
        )
        assert await validator_refused(handle, ReleaseWorkflow.decide, zoe_as_console, fake) == (
            f"key {PEOPLE['zoe'].key_id} is not a key of identity provider console in the catalog"
        )

        for_alice = seal(await ballot(handle, Gate.REQUEST, "alice"), handle.id, people.CONSOLE, now=now)
        gate = await handle.execute_update(ReleaseWorkflow.decide, for_alice)
        (approval,) = gate.votes
        assert approval.vote.approver == "alice"
        assert approval.vote.proof is not None
        assert (approval.vote.proof.provider, approval.vote.proof.key_id) == (
            "console",
            people.CONSOLE.key_id,
        )


async def test_a_key_removed_from_the_catalog_stops_counting_at_the_next_gate(
    ts_env: WorkflowEnvironment,
) -> None:
    reads = 0

    def revoking(service: str) -> ServiceProfile:
        """The catalog as the worker reads it: bob's key is removed after the first read."""
        nonlocal reads
        reads += 1
        profile = profile_for(service)
        if reads == 1:
            return profile
        people_left = [p for p in profile.trust.people if p.name != "bob"]
        return profile.model_copy(update={"trust": profile.trust.model_copy(update={"people": people_left})})

    fake = FakeActivities(profile=revoking)
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request())
        current = await at_plan_gate(ts_env, handle)  # bob's vote at the request gate counts
        assert [a.vote.approver for a in current.gates[Gate.REQUEST].votes] == ["alice", "bob"]
        assert current.gates[Gate.REQUEST].state is GateState.APPROVED
        assert reads == 2
        bobs = await people.sign(await ballot(handle, Gate.PLAN, "bob"), handle.id)
        expected = "bob has no public key in the catalog"
        assert await validator_refused(handle, ReleaseWorkflow.decide, bobs, fake) == expected
        assert (await signal_refused(handle, ReleaseWorkflow.approve, bobs)).reason == expected
        assert (await status(handle)).gates[Gate.PLAN].votes == []
        # bob is still on the CAB: the plan gate still names him, it just cannot hear him.
        assert "bob" in current.gates[Gate.PLAN].eligible


# --- marginal health -----------------------------------------------------------------------


async def test_every_marginal_decision_is_kept_per_stage(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities(verdicts={"health-one-0": Verdict.MARGINAL, "health-five-0": Verdict.MARGINAL})
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request(ChangeType.STANDARD))
        first = await until(ts_env, handle, lambda s: at_gate(Gate.MARGINAL)(s) and len(s.stages) == 2)
        await vote(handle, Gate.MARGINAL, "alice", comment="error budget fine")
        second = await until(ts_env, handle, lambda s: at_gate(Gate.MARGINAL)(s) and len(s.stages) == 3)
        assert second.gates[Gate.MARGINAL].subject_hash != first.gates[Gate.MARGINAL].subject_hash
        # A decision on stage one does not carry over to stage five.
        reason = await refused(
            handle, Gate.MARGINAL, "carol", approved_hash=first.gates[Gate.MARGINAL].subject_hash
        )
        assert "outdated" in reason
        assert [a.vote.approver for a in second.stages[1].decisions] == ["alice"]
        await vote(handle, Gate.MARGINAL, "bob", comment="latency within budget")
        final = await final_status(handle)
    assert final.outcome is Outcome.COMPLETED_WITH_ISSUES
    decisions = {s.name: [(a.vote.approver, a.vote.comment) for a in s.decisions] for s in final.stages}
    assert decisions == {
        "allow-list": [],
        "one": [("alice", "error budget fine")],
        "five": [("bob", "latency within budget")],
        "quarter": [],
    }
    assert [s.verdict for s in final.stages] == [
        Verdict.PASS,
        Verdict.MARGINAL,
        Verdict.MARGINAL,
        Verdict.PASS,
    ]
    kept = fake.evidence[-1].status.stages
    assert [a.vote.approver for s in kept for a in s.decisions] == ["alice", "bob"]


PLAN = ReleasePlan(components=[Component(name="checkout", version="2.4.1")], stages=STAGES)

# --- free text --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "LGTM\napprove oli: LGTM",
        "fine\r\nretro approved 2/2",
        "\x1b[2K\x1b[1Gapprove oli: LGTM",
        "ok \x1b]8;;http://evil\x07link",
        "ok\u202eKO",
        "nul\x00byte",
    ],
)
def test_free_text_that_could_forge_output_is_refused_at_the_contract(text: str) -> None:
    rule = "must not contain control characters or escape sequences"
    attempts: list[Callable[[], object]] = [
        lambda: Vote(
            gate=Gate.REQUEST,
            approver="alice",
            decision=Decision.APPROVE,
            approved_hash="a" * 64,
            comment=text,
        ),
        lambda: OperatorAction(action=OperatorVerb.ABORT, by="oli", reason=text),
        lambda: Feedback(by="alice", rating=4, comment=text),
        lambda: ReleaseRequest.model_validate(make_request().model_dump() | {"title": text}),
        lambda: PlanAmendment(by="rex", plan=PLAN, reason=text),
    ]
    for attempt in attempts:
        with pytest.raises(ValidationError, match=rule):
            attempt()


# --- refusals in the status ------------------------------------------------------------------


async def test_refusals_in_the_status_are_bounded_and_all_counted(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with worker(ts_env, fake) as w:
        handle = await start(ts_env, w, make_request())
        await until(ts_env, handle, at_gate(Gate.REQUEST))
        unsigned = await ballot(handle, Gate.REQUEST, "mallory")
        for _ in range(MAX_REFUSALS + 5):
            await handle.signal(ReleaseWorkflow.approve, unsigned)
        last = await people.sign(await ballot(handle, Gate.REQUEST, "zoe"), handle.id)
        await handle.signal(ReleaseWorkflow.approve, last)

        async def all_counted() -> ReleaseStatus:
            current = await status(handle)
            assert current.refused == MAX_REFUSALS + 6
            return current

        current = await assert_eventually(all_counted)
        assert len(current.refusals) == MAX_REFUSALS
        assert (current.refusals[-1].actor, current.refusals[-1].reason) == (
            "zoe",
            "zoe is not a member of the approvers for gate request",
        )
        assert current.gates[Gate.REQUEST].votes == []


async def test_an_abort_sent_with_the_start_counts(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with worker(ts_env, fake) as w:
        release_id = f"release-test-{uuid.uuid4()}"
        abort = await people.sign(
            OperatorAction(action=OperatorVerb.ABORT, by="oli", reason="wrong version"), release_id
        )
        handle = await ts_env.client.start_workflow(
            ReleaseWorkflow.run,
            await people.sign(make_request(), release_id),
            id=release_id,
            task_queue=w.task_queue,
            start_signal=Message.ABORT.value,
            start_signal_args=[abort],
        )
        _running.append(handle)
        current = await until(ts_env, handle, lambda s: s.phase is not Phase.REQUESTED)
        assert [r.reason for r in current.refusals] == []
        final = await final_status(handle)
    assert final.outcome is Outcome.ABORTED
    assert [r.action.by for r in final.actions] == ["oli"]
