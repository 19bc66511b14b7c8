"""The release policy as plain functions: no Temporal, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from relman.contracts import (
    GO_LIVE,
    AcceptanceCriteria,
    ChangeModel,
    ChangeType,
    CloseCode,
    Component,
    Criticality,
    Decision,
    Delegation,
    Feedback,
    Gate,
    GateState,
    GateStatus,
    HealthReport,
    OperatorAction,
    OperatorVerb,
    Outcome,
    PlanAmendment,
    ReleasePlan,
    ReleaseRequest,
    Risk,
    Role,
    RolloutStage,
    StageStatus,
    TimeWindow,
    Trust,
    Verdict,
    Vote,
    WindowWait,
)
from relman.identity.signing import Signable
from relman.workflows import policy
from tests import people
from tests.workflows.fakes import make_request, profile_for

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
PROFILE = profile_for("checkout")
CAB = PROFILE.trust.members(Role.CAB)
HASH = "a" * 64
RELEASE = "release-checkout-2.4.1"
S = TypeVar("S", bound=Signable)


def context(
    *, trust: Trust | None = None, now: datetime = NOW, seen: frozenset[str] = frozenset()
) -> policy.Context:
    """The checkout release requested by rita, as the workflow would check a message now."""
    return policy.Context(
        release_id=RELEASE,
        service="checkout",
        requested_by="rita",
        trust=trust or PROFILE.trust,
        now=now,
        seen_nonces=seen,
    )


CTX = context()
UNSIGNED = context(trust=PROFILE.trust.model_copy(update={"signatures": "off"}))
"""Signatures off: the rules about roles and gates without the proofs."""


def signed(message: S, who: str | None = None, *, at: datetime = NOW, release_id: str = RELEASE) -> S:
    """`message` signed for the checkout release at NOW (by the name it carries, or `who`)."""
    return people.signed(message, release_id, who, at=at)


def delegation(delegator: str = "alice", delegate: str = "zoe", **scope: object) -> Delegation:
    fields: dict[str, object] = {
        "delegator": delegator,
        "delegate": delegate,
        "services": ["checkout"],
        "gates": [Gate.REQUEST, Gate.PLAN],
        "not_after": NOW + timedelta(days=7),
        **scope,
    }
    return people.signed(Delegation.model_validate(fields), "*", delegator, at=NOW - timedelta(days=1))


def vote(who: str, decision: Decision = Decision.APPROVE, **kw: object) -> Vote:
    fields: dict[str, object] = {
        "gate": Gate.REQUEST,
        "approver": who,
        "decision": decision,
        "approved_hash": HASH,
    }
    fields.update(kw)
    if decision is Decision.REJECT:
        fields.setdefault("comment", "not now")
    return Vote.model_validate(fields)


def normal_gate(gate: Gate = Gate.REQUEST):  # type: ignore[no-untyped-def]
    return policy.open_gate(gate, ChangeType.NORMAL, PROFILE, HASH, NOW)


@pytest.mark.parametrize(
    ("change_type", "criticality", "risk"),
    [
        (ChangeType.STANDARD, Criticality.LOW, Risk.LOW),
        (ChangeType.STANDARD, Criticality.HIGH, Risk.MEDIUM),
        (ChangeType.NORMAL, Criticality.MEDIUM, Risk.MEDIUM),
        (ChangeType.EMERGENCY, Criticality.HIGH, Risk.CRITICAL),
        (ChangeType.EMERGENCY, Criticality.MISSION_CRITICAL, Risk.CRITICAL),
    ],
)
def test_risk_from_change_type_and_criticality(
    change_type: ChangeType, criticality: Criticality, risk: Risk
) -> None:
    assert policy.risk_for(change_type, criticality) is risk


def test_gate_policy_per_change_type() -> None:
    trust = PROFILE.trust
    assert policy.gate_policy(Gate.REQUEST, ChangeType.STANDARD, trust) == (0, [])
    assert policy.gate_policy(Gate.PLAN, ChangeType.STANDARD, trust) == (0, [])
    assert policy.gate_policy(Gate.REQUEST, ChangeType.NORMAL, trust) == (2, CAB)
    assert policy.gate_policy(Gate.RETRO, ChangeType.NORMAL, trust) == (0, [])
    assert policy.gate_policy(Gate.REQUEST, ChangeType.EMERGENCY, trust) == (1, ["erin"])
    assert policy.gate_policy(Gate.RETRO, ChangeType.EMERGENCY, trust) == (2, CAB)
    assert policy.gate_policy(Gate.MARGINAL, ChangeType.STANDARD, trust) == (1, sorted([*CAB, "erin"]))
    assert policy.open_gate(Gate.REQUEST, ChangeType.STANDARD, PROFILE, HASH, NOW).state is GateState.SKIPPED
    emergency = policy.open_gate(Gate.REQUEST, ChangeType.EMERGENCY, PROFILE, HASH, NOW)
    # A requester who sits on the CAB is never awaited on their own release.
    own = policy.open_gate(Gate.REQUEST, ChangeType.NORMAL, PROFILE, HASH, NOW, requested_by="alice")
    assert "alice" not in own.eligible and "alice" not in policy.waiting_for(own)
    assert emergency.deadline == NOW + PROFILE.timeouts.ecab


def test_quorum_and_veto() -> None:
    gate = normal_gate()
    gate = policy.record_vote(gate, vote("alice"), NOW)
    assert gate.state is GateState.OPEN
    assert policy.waiting_for(gate) == ["bob", "carol", "dave"]
    approved = policy.record_vote(gate, vote("bob"), NOW)
    assert approved.state is GateState.APPROVED and approved.closed_at == NOW
    vetoed = policy.record_vote(gate, vote("bob", Decision.REJECT), NOW)
    assert vetoed.state is GateState.REJECTED


def test_a_gate_ends_a_change_when_it_expires_or_is_rejected() -> None:
    gate = normal_gate()
    later = NOW + timedelta(hours=2)
    expired, ended, why = policy.gate_end(gate, False, later)
    assert (expired.state, expired.closed_at, ended) == (GateState.EXPIRED, later, Outcome.EXPIRED)
    assert why == "gate request expired without a decision"
    vetoed = policy.record_vote(gate, vote("bob", Decision.REJECT, comment="not this week"), NOW)
    assert policy.gate_end(vetoed, True, later)[1:] == (
        Outcome.REJECTED,
        "gate request rejected (bob: not this week)",
    )
    approved = policy.record_vote(policy.record_vote(gate, vote("alice"), NOW), vote("carol"), NOW)
    assert policy.gate_end(approved, True, later) == (approved, None, "")


def test_separation_of_duties() -> None:
    gate = normal_gate()
    req = make_request().requested_by
    assert "requested this release" in (policy.refusal(gate, signed(vote(req)), CTX) or "")
    for_req = signed(vote("alice", on_behalf_of=req))
    assert "requested this release" in (policy.refusal(gate, for_req, CTX) or "")
    assert "not a member" in (policy.refusal(gate, signed(vote("mallory")), CTX) or "")
    # A delegate who is not on the CAB may act for a member with their delegation; the
    # record keeps both names.
    by_mallory = signed(vote("mallory", on_behalf_of="alice", delegation=delegation("alice", "mallory")))
    assert policy.refusal(gate, by_mallory, CTX) is None
    gate = policy.record_vote(gate, by_mallory, NOW)
    assert "alice has already voted" in (policy.refusal(gate, signed(vote("alice")), CTX) or "")
    for_bob = signed(vote("mallory", on_behalf_of="bob", delegation=delegation("bob", "mallory")))
    assert "mallory has already voted" in (policy.refusal(gate, for_bob, CTX) or "")
    assert policy.waiting_for(gate) == ["bob", "carol", "dave"]


def test_votes_are_bound_to_gate_hash_and_deadline() -> None:
    gate = normal_gate()
    alice = signed(vote("alice"))
    assert "outdated" in (policy.refusal(gate, signed(vote("alice", approved_hash="b" * 64)), CTX) or "")
    assert "expired" in (policy.refusal(gate, alice, context(now=NOW + timedelta(days=8))) or "")
    assert "not open" in (policy.refusal(None, alice, CTX) or "")
    closed = policy.expire(gate, NOW)
    assert "closed (expired)" in (policy.refusal(closed, alice, CTX) or "")
    assert "needs a reason" in (
        policy.refusal(gate, signed(vote("alice", Decision.REJECT, comment="")), CTX) or ""
    )


def test_an_ended_release_withdraws_only_open_gates() -> None:
    open_gate = normal_gate(Gate.PLAN)
    withdrawn = policy.withdraw(open_gate, NOW)
    assert (withdrawn.state, withdrawn.closed_at) == (GateState.WITHDRAWN, NOW)
    assert policy.waiting_for(withdrawn) == []
    expired = policy.expire(open_gate, NOW)
    assert policy.withdraw(expired, NOW) == expired


def test_amending_the_plan_voids_plan_votes() -> None:
    gate = policy.record_vote(normal_gate(Gate.PLAN), vote("alice", gate=Gate.PLAN), NOW)
    amended = policy.void_votes(gate, "c" * 64, gate.deadline)
    assert amended.votes == [] and amended.subject_hash == "c" * 64
    assert amended.voided == gate.votes  # on record, counted for nothing
    assert policy.tally(amended) is GateState.OPEN
    assert "outdated" in (policy.refusal(amended, signed(vote("bob", gate=Gate.PLAN)), CTX) or "")


def test_plan_hash_is_stable_and_content_bound() -> None:
    plan = policy.build_plan(make_request(), PROFILE)
    assert plan.content_hash() == policy.build_plan(make_request(), PROFILE).content_hash()
    changed = plan.model_copy(update={"backout_plan": "something else"})
    assert changed.content_hash() != plan.content_hash()


def test_rollout_stages_must_grow_and_stay_below_go_live() -> None:
    stages = [
        RolloutStage(name="a", percent=5, bake_seconds=0),
        RolloutStage(name="b", percent=1, bake_seconds=0),
    ]
    with pytest.raises(ValueError, match="must increase"):
        policy.check_stages(stages)
    with pytest.raises(ValueError, match="below 100"):
        policy.check_stages([RolloutStage(name="all", percent=100, bake_seconds=0)])
    with pytest.raises(ValueError, match="repeat"):
        policy.check_stages([RolloutStage(name="a", percent=1, bake_seconds=0)] * 2)


@pytest.mark.parametrize(
    ("verdict", "action"),
    [
        (Verdict.PASS, policy.StageAction.PROMOTE),
        (Verdict.MARGINAL, policy.StageAction.ASK_HUMAN),
        (Verdict.NO_DATA, policy.StageAction.ASK_HUMAN),
        (Verdict.FAIL, policy.StageAction.ROLL_BACK),
    ],
)
def test_only_a_pass_promotes(verdict: Verdict, action: policy.StageAction) -> None:
    assert policy.stage_action(verdict) is action


def test_review_outcome_and_kpis() -> None:
    good = HealthReport(verdict=Verdict.PASS, error_rate=0.001, latency_ms=40, samples=60)
    happy = [Feedback(by="ann", rating=5), Feedback(by="ben", rating=4)]
    assert policy.review_outcome(good, happy, []) == (Outcome.COMPLETED, [])
    outcome, findings = policy.review_outcome(good, [Feedback(by="ann", rating=1)], [])
    assert outcome is Outcome.COMPLETED_WITH_ISSUES and "rating below 3" in findings[0]
    outcome, findings = policy.review_outcome(None, happy, [])
    assert outcome is Outcome.COMPLETED_WITH_ISSUES and "no_data" in findings[0]
    kpis = policy.kpis(good, happy, timedelta(hours=30))
    assert kpis == {
        "feedback_count": 2.0,
        "avg_rating": 4.5,
        "error_rate": 0.001,
        "latency_ms": 40,
        "health_pass": 1.0,
        "lead_time_hours": 30.0,
    }


def test_close_codes() -> None:
    assert policy.close_code(Outcome.COMPLETED) is CloseCode.SUCCESSFUL
    assert policy.close_code(Outcome.ROLLED_BACK) is CloseCode.ROLLED_BACK
    assert policy.close_code(Outcome.ROLLED_BACK, compensation_failed=True) is CloseCode.UNSUCCESSFUL
    assert set(policy.CLOSE_CODES) == set(Outcome)


# --- who sent it: proofs in the policy's context ---------------------------------------------


def test_a_vote_counts_only_with_a_proof_by_its_approver() -> None:
    gate = normal_gate()
    alice = vote("alice")
    assert policy.refusal(gate, signed(alice), CTX) is None
    assert policy.refusal(gate, alice, CTX) == (
        "alice's message is not signed, and this service requires signatures"
    )
    assert policy.refusal(gate, alice, UNSIGNED) is None
    assert policy.refusal(gate, signed(alice, "bob"), CTX) == (
        f"key {people.PEOPLE['bob'].key_id} is not a key of alice in the catalog"
    )
    elsewhere = signed(alice, release_id="release-checkout-9.9.9")
    assert "does not match this message" in (policy.refusal(gate, elsewhere, CTX) or "")
    once = signed(alice)
    assert "already used" in (policy.refusal(gate, once, context(seen=frozenset({once.proof.nonce}))) or "")
    stale = signed(alice, at=NOW - timedelta(minutes=6))
    assert "more than 0:05:00 before now" in (policy.refusal(gate, stale, CTX) or "")
    # Who signed is checked before what they may do: a forged vote by a non-member says so.
    assert "not signed" in (policy.refusal(gate, vote("mallory"), CTX) or "")


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ({}, None),
        ({"services": ["payments"]}, "alice's delegation does not cover service checkout"),
        ({"gates": [Gate.PLAN]}, "alice's delegation does not cover gate request"),
        ({"not_after": NOW - timedelta(seconds=1)}, "alice's delegation ended at 2026-11-27T08:59:59+00:00"),
    ],
)
def test_delegation_scope(scope: dict[str, object], expected: str | None) -> None:
    zoe = signed(vote("zoe", on_behalf_of="alice", delegation=delegation(**scope)))
    assert policy.delegation_problem(zoe, CTX) == expected
    assert policy.refusal(normal_gate(), zoe, CTX) == expected


def test_delegation_must_be_the_delegators_own() -> None:
    assert policy.delegation_problem(signed(vote("zoe", on_behalf_of="alice")), CTX) == (
        "zoe votes for alice without a delegation signed by them"
    )
    bobs = signed(vote("zoe", on_behalf_of="alice", delegation=delegation("bob", "zoe")))
    assert policy.delegation_problem(bobs, CTX) == "the delegation is from bob to zoe, not from alice to zoe"
    to_mallory = signed(vote("zoe", on_behalf_of="alice", delegation=delegation("alice", "mallory")))
    assert policy.delegation_problem(to_mallory, CTX) == (
        "the delegation is from alice to mallory, not from alice to zoe"
    )
    forged = delegation().model_copy(update={"proof": delegation("bob", "zoe").proof})
    by_bob_key = signed(vote("zoe", on_behalf_of="alice", delegation=forged))
    assert (policy.delegation_problem(by_bob_key, CTX) or "").startswith("delegation: ")
    unsigned = delegation().model_copy(update={"proof": None})
    assert policy.delegation_problem(signed(vote("zoe", on_behalf_of="alice", delegation=unsigned)), CTX) == (
        "delegation: alice's message is not signed, and this service requires signatures"
    )
    # A delegation signed long ago still counts until not_after; one signed in the future does not.
    old = people.signed(
        Delegation(
            delegator="alice",
            delegate="zoe",
            services=["checkout"],
            gates=[Gate.REQUEST],
            not_after=NOW + timedelta(days=1),
        ),
        "*",
        at=NOW - timedelta(days=60),
    )
    assert policy.delegation_problem(signed(vote("zoe", on_behalf_of="alice", delegation=old)), CTX) is None
    future = people.signed(old.model_copy(update={"proof": None}), "*", at=NOW + timedelta(hours=1))
    found = policy.delegation_problem(signed(vote("zoe", on_behalf_of="alice", delegation=future)), CTX)
    assert found is not None and "later than now" in found


def test_the_requester_never_approves_even_through_a_delegate() -> None:
    gate = normal_gate()
    by_rita = signed(vote("rita", on_behalf_of="alice", delegation=delegation("alice", "rita")))
    assert policy.refusal(gate, by_rita, CTX) == "rita requested this release and cannot approve it"
    for_rita = signed(vote("alice", on_behalf_of="rita"))
    assert policy.refusal(gate, for_rita, CTX) == "rita requested this release and cannot approve it"
    self_ = signed(vote("alice", on_behalf_of="alice"))
    assert (
        policy.refusal(gate, self_, CTX) == "on_behalf_of names the voter; leave it out to vote for yourself"
    )


# --- the request: who asked, and whether standard is pre-approved ---------------------------------


def request(change_type: ChangeType = ChangeType.NORMAL, **changes: object) -> ReleaseRequest:
    return ReleaseRequest.model_validate(make_request(change_type).model_dump() | changes)


@pytest.mark.parametrize(
    ("change_type", "changes", "risk", "expected"),
    [
        (ChangeType.NORMAL, {}, Risk.MEDIUM, None),
        (ChangeType.EMERGENCY, {}, Risk.CRITICAL, None),
        (ChangeType.STANDARD, {}, Risk.LOW, None),
        (
            ChangeType.STANDARD,
            {"change_model": None},
            Risk.LOW,
            "a standard change names the catalog's change model it follows (change_model)",
        ),
        (
            ChangeType.STANDARD,
            {"change_model": "db-migration"},
            Risk.LOW,
            "checkout has no change model db-migration (declared: config-tweak)",
        ),
        (
            ChangeType.STANDARD,
            {"requested_by": "zoe"},
            Risk.LOW,
            "zoe may not request change model config-tweak",
        ),
        (
            ChangeType.STANDARD,
            {},
            Risk.MEDIUM,
            "risk medium exceeds change model config-tweak's maximum low",
        ),
        (
            ChangeType.NORMAL,
            {"change_model": "config-tweak"},
            Risk.MEDIUM,
            "change model config-tweak is for standard changes, not normal",
        ),
        (
            ChangeType.EMERGENCY,
            {"change_model": "config-tweak"},
            Risk.HIGH,
            "change model config-tweak is for standard changes, not emergency",
        ),
    ],
)
def test_request_refusal(
    change_type: ChangeType, changes: dict[str, object], risk: Risk, expected: str | None
) -> None:
    asked = request(change_type, **changes)
    assert policy.request_refusal(signed(asked), risk, CTX) == expected


def test_a_request_is_signed_by_its_requester_and_may_wait_a_day() -> None:
    asked = request()
    assert policy.request_refusal(asked, Risk.MEDIUM, CTX) == (
        "request: rita's message is not signed, and this service requires signatures"
    )
    assert policy.request_refusal(asked, Risk.MEDIUM, UNSIGNED) is None
    assert policy.request_refusal(signed(asked, "pat"), Risk.MEDIUM, CTX) == (
        f"request: key {people.PEOPLE['pat'].key_id} is not a key of rita in the catalog"
    )
    # A worker outage: the request's first workflow task may come hours later.
    queued = signed(asked, at=NOW - timedelta(hours=23))
    assert policy.request_refusal(queued, Risk.MEDIUM, CTX) is None
    too_old = signed(asked, at=NOW - timedelta(hours=25))
    assert "more than 1 day, 0:00:00 before now" in (policy.request_refusal(too_old, Risk.MEDIUM, CTX) or "")
    # A standard change not in the catalog is refused even with signatures off.
    undeclared = request(ChangeType.STANDARD, change_model="db-migration")
    assert "no change model db-migration" in (policy.request_refusal(undeclared, Risk.LOW, UNSIGNED) or "")


def test_a_change_models_stages_make_the_plan() -> None:
    trust = PROFILE.trust.model_copy(
        update={
            "change_models": [
                ChangeModel(
                    name="config-tweak", description="tweak", requesters=["rita"], stages=["one", "quarter"]
                )
            ]
        }
    )
    profile = PROFILE.model_copy(update={"trust": trust})
    plan = policy.build_plan(request(ChangeType.STANDARD), profile)
    assert [s.name for s in plan.stages] == ["one", "quarter"]
    assert [s.name for s in policy.build_plan(request(), profile).stages] == [s.name for s in PROFILE.stages]


# --- operator actions: role, and the scope of an override --------------------------------------------

WAITING = WindowWait(step="one", window="test-blackout", reason="blackout", since=NOW)


def action(verb: OperatorVerb, by: str, **scope: str) -> OperatorAction:
    return signed(OperatorAction(action=verb, by=by, reason="because", **scope))


def override(by: str = "carol", window: str = "test-blackout", step: str = "one") -> OperatorAction:
    return action(OperatorVerb.OVERRIDE_WINDOW, by, window=window, step=step)


@pytest.mark.parametrize(
    "verb", [OperatorVerb.PAUSE, OperatorVerb.RESUME, OperatorVerb.PROMOTE, OperatorVerb.ABORT]
)
def test_operator_actions_need_an_operator(verb: OperatorVerb) -> None:
    for who in ("oli", "alice"):
        assert policy.action_refusal(action(verb, who), verb, CTX) is None
    for who in ("zoe", "carol", "rita"):  # no role, a change manager, the requester
        assert policy.action_refusal(action(verb, who), verb, CTX) == (
            f"{who} is not one of the operators of checkout"
        )
    assert policy.action_refusal(action(verb, "oli").model_copy(update={"proof": None}), verb, CTX) == (
        "oli's message is not signed, and this service requires signatures"
    )
    other = OperatorVerb.RESUME if verb is OperatorVerb.PAUSE else OperatorVerb.PAUSE
    assert (
        policy.action_refusal(action(other, "oli"), verb, CTX)
        == f"the {verb} message carries the action {other}"
    )


def test_an_override_needs_a_change_manager_who_did_not_request_it() -> None:
    verb = OperatorVerb.OVERRIDE_WINDOW
    assert policy.action_refusal(override("carol"), verb, CTX, WAITING) is None
    assert policy.action_refusal(override("cm"), verb, CTX, WAITING) is None
    for who in ("oli", "alice", "zoe"):
        assert policy.action_refusal(override(who), verb, CTX, WAITING) == (
            f"{who} is not one of the change managers of checkout"
        )
    roles = dict(PROFILE.trust.roles)
    roles[Role.CHANGE_MANAGERS] = [*roles[Role.CHANGE_MANAGERS], "rita"]
    rita_manages = context(trust=PROFILE.trust.model_copy(update={"roles": roles}))
    assert policy.action_refusal(override("rita"), verb, rita_manages, WAITING) == (
        "rita requested this release and cannot override its windows"
    )


def test_an_override_is_scoped_to_the_window_and_step_waiting_now() -> None:
    verb = OperatorVerb.OVERRIDE_WINDOW
    assert policy.action_refusal(override(), verb, CTX, None) == (
        "no deployment window is holding this release; an override lets one waiting step through"
    )
    assert policy.action_refusal(override(window="freeze"), verb, CTX, WAITING) == (
        "the release waits on window 'test-blackout' before step one, not on 'freeze' before one"
    )
    assert policy.action_refusal(override(step="five"), verb, CTX, WAITING) == (
        "the release waits on window 'test-blackout' before step one, not on 'test-blackout' before five"
    )
    go_live = WAITING.model_copy(update={"step": GO_LIVE})
    assert policy.action_refusal(override(step=GO_LIVE), verb, CTX, go_live) is None
    assert "not on 'test-blackout' before one" in (
        policy.action_refusal(override(), verb, CTX, go_live) or ""
    )
    # The override's signature binds its scope: moved to another step, it no longer verifies.
    moved = override().model_copy(update={"step": "five"})
    assert "does not match" in (
        policy.action_refusal(moved, verb, CTX, WAITING.model_copy(update={"step": "five"})) or ""
    )


# --- amendments ----------------------------------------------------------------------------------

PLAN = policy.build_plan(make_request(), PROFILE)
FLOOR = PROFILE.acceptance


def open_plan_gate() -> GateStatus:
    return policy.open_gate(Gate.PLAN, ChangeType.NORMAL, PROFILE, PLAN.content_hash(), NOW)


def amendment(by: str = "rex", **changes: object) -> PlanAmendment:
    plan = PLAN.model_copy(update={"revision": PLAN.revision + 1, **changes})
    return signed(PlanAmendment(by=by, plan=plan, reason="slower"))


SLOWER = [s.model_copy(update={"bake_seconds": 600}) for s in PLAN.stages]


def test_amendment_refusal() -> None:
    gate = open_plan_gate()

    def refusal_of(
        a: PlanAmendment, g: GateStatus | None = gate, current: ReleasePlan | None = PLAN
    ) -> str | None:
        return policy.amendment_refusal(a, g, current, FLOOR, CTX)

    assert refusal_of(amendment(stages=SLOWER)) is None
    assert refusal_of(amendment("alice", stages=SLOWER)) == "alice is not a release manager of checkout"
    assert refusal_of(amendment("rita", stages=SLOWER)) == "rita is not a release manager of checkout"
    assert refusal_of(amendment(stages=SLOWER), g=None) == (
        "the plan gate is not open; a plan is amended only while it awaits approval"
    )
    approved = gate.model_copy(update={"state": GateState.APPROVED})
    assert (refusal_of(amendment(stages=SLOWER), g=approved) or "").startswith("the plan gate is not open")
    assert refusal_of(amendment(stages=SLOWER), current=None) == "there is no plan to amend yet"
    stale = signed(PlanAmendment(by="rex", plan=PLAN.model_copy(update={"stages": SLOWER}), reason="x"))
    assert refusal_of(stale) == "the amendment is revision 1, but the plan is at revision 1"
    assert refusal_of(amendment(components=[Component(name="checkout", version="2.4.2")])) == (
        "an amendment may not change the components or versions released"
    )
    backwards = [SLOWER[1], SLOWER[0], *SLOWER[2:]]
    assert "must increase" in (refusal_of(amendment(stages=backwards)) or "")
    named_go_live = [SLOWER[0].model_copy(update={"name": GO_LIVE})]
    assert "may not be named go-live" in (refusal_of(amendment(stages=named_go_live)) or "")
    loose = AcceptanceCriteria(min_pass_rate=0, max_error_rate=0.9, max_latency_ms=500)
    assert refusal_of(amendment(acceptance=loose)) == (
        "acceptance criteria looser than the catalog's: min_pass_rate 0 < 1; max_error_rate 0.9 > 0.01"
    )
    assert refusal_of(amendment()) == "the amendment changes nothing in the plan"
    unsigned = amendment(stages=SLOWER).model_copy(update={"proof": None})
    assert refusal_of(unsigned) == "rex's message is not signed, and this service requires signatures"


def test_acceptance_loosened() -> None:
    floor = AcceptanceCriteria(min_pass_rate=0.99, max_error_rate=0.01, max_latency_ms=500)
    assert policy.acceptance_loosened(floor, floor) == []
    stricter = AcceptanceCriteria(min_pass_rate=1.0, max_error_rate=0.001, max_latency_ms=200)
    assert policy.acceptance_loosened(stricter, floor) == []
    assert policy.acceptance_loosened(AcceptanceCriteria(min_pass_rate=0.5, max_latency_ms=500), floor) == [
        "min_pass_rate 0.5 < 0.99"
    ]
    assert policy.acceptance_loosened(
        AcceptanceCriteria(min_pass_rate=0.99, max_error_rate=0.02, max_latency_ms=500), floor
    ) == ["max_error_rate 0.02 > 0.01"]
    assert policy.acceptance_loosened(
        AcceptanceCriteria(min_pass_rate=0.99, max_error_rate=0.01, max_latency_ms=501), floor
    ) == ["max_latency_ms 501 > 500"]
    worst = AcceptanceCriteria(min_pass_rate=0, max_error_rate=1, max_latency_ms=10_000)
    assert len(policy.acceptance_loosened(worst, floor)) == 3


def test_plan_changes_name_every_change_in_one_line_each() -> None:
    old = ReleasePlan(
        components=[Component(name="checkout", version="2.4.1")],
        stages=[
            RolloutStage(name="canary", percent=1, bake_seconds=60, allow_list=["tester"]),
            RolloutStage(name="five", percent=5, bake_seconds=60),
            RolloutStage(name="quarter", percent=25, bake_seconds=60),
        ],
    )
    assert policy.plan_changes(old, old) == []
    assert policy.plan_changes(old, old.model_copy(update={"revision": 2})) == []
    new = old.model_copy(
        update={
            "stages": [
                RolloutStage(name="canary", percent=2, bake_seconds=0, allow_list=["tester", "alice"]),
                RolloutStage(name="ten", percent=10, bake_seconds=30),
                RolloutStage(name="quarter", percent=25, bake_seconds=60),
            ],
            "acceptance": AcceptanceCriteria(min_pass_rate=1, max_error_rate=0.005, max_latency_ms=300),
            "backout_plan": "Roll back at once.",
            "target_window": TimeWindow(start=NOW, end=NOW + timedelta(hours=1)),
            "revision": 2,
        }
    )
    assert policy.plan_changes(old, new) == [
        "stage five removed",
        "stage canary: 1% -> 2%",
        "stage canary: bake 60s -> 0s",
        "stage canary: allow-list 1 -> 2 people",
        "stage ten added: 10%, bake 30s",
        "acceptance max_error_rate: 0.01 -> 0.005",
        "acceptance max_latency_ms: 500 -> 300",
        "backout plan rewritten",
        "target window changed",
    ]
    swapped = old.model_copy(update={"stages": [old.stages[1], old.stages[0], old.stages[2]]})
    assert policy.plan_changes(old, swapped) == ["stage order changed"]
    # Every line is one line: it goes to the timeline, the status and the CMDB as is.
    assert all("\n" not in line for line in policy.plan_changes(old, new))


# --- feedback ----------------------------------------------------------------------------------


def test_feedback_comes_from_a_person_the_catalog_knows() -> None:
    assert policy.feedback_refusal(signed(Feedback(by="pat", rating=4)), CTX) is None
    assert policy.feedback_refusal(Feedback(by="pat", rating=4), CTX) == (
        "pat's message is not signed, and this service requires signatures"
    )
    assert policy.feedback_refusal(Feedback(by="stranger", rating=1), UNSIGNED) is None
    assert policy.feedback_refusal(signed(Feedback(by="pat", rating=4), "zoe"), CTX) == (
        f"key {people.PEOPLE['zoe'].key_id} is not a key of pat in the catalog"
    )


def _stages(*percents: float) -> list[StageStatus]:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    return [StageStatus(name=f"s{i}", percent=p, started_at=at) for i, p in enumerate(percents)]


@pytest.mark.parametrize(
    ("outcome", "percents", "in_production", "failed"),
    [
        (Outcome.ROLLED_BACK, (), False, False),  # failed in staging: no user saw it
        (Outcome.ROLLED_BACK, (0,), False, False),  # the allow-list alone is internal testing
        (Outcome.ROLLED_BACK, (0, 1), False, True),
        (Outcome.ABORTED, (0, 1, 5), False, True),  # aborted after users saw it: still a failure
        (Outcome.ABORTED, (0,), False, False),
        (Outcome.ROLLED_BACK, (), True, True),  # no stages, but it went live
        (Outcome.REJECTED, (), False, False),
        (Outcome.COMPLETED, (0, 1), True, False),
    ],
)
def test_a_failed_deployment_is_one_production_users_saw(
    outcome: Outcome, percents: tuple[float, ...], in_production: bool, failed: bool
) -> None:
    assert policy.failed_deployment(outcome, _stages(*percents), in_production) is failed
