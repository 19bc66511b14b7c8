"""The release policy as plain functions: no Temporal, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from relman.contracts import (
    ChangeType,
    CloseCode,
    Criticality,
    Decision,
    Feedback,
    Gate,
    GateState,
    HealthReport,
    Outcome,
    Risk,
    RolloutStage,
    Verdict,
    Vote,
)
from relman.workflows import policy
from tests.workflows.fakes import make_request, profile_for

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
PROFILE = profile_for("checkout")
HASH = "a" * 64


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
    assert policy.gate_policy(Gate.REQUEST, ChangeType.STANDARD, PROFILE) == (0, [])
    assert policy.gate_policy(Gate.PLAN, ChangeType.STANDARD, PROFILE) == (0, [])
    assert policy.gate_policy(Gate.REQUEST, ChangeType.NORMAL, PROFILE) == (2, PROFILE.cab_members)
    assert policy.gate_policy(Gate.RETRO, ChangeType.NORMAL, PROFILE) == (0, [])
    assert policy.gate_policy(Gate.REQUEST, ChangeType.EMERGENCY, PROFILE) == (1, ["erin"])
    assert policy.gate_policy(Gate.RETRO, ChangeType.EMERGENCY, PROFILE) == (2, PROFILE.cab_members)
    assert policy.open_gate(Gate.REQUEST, ChangeType.STANDARD, PROFILE, HASH, NOW).state is GateState.SKIPPED
    emergency = policy.open_gate(Gate.REQUEST, ChangeType.EMERGENCY, PROFILE, HASH, NOW)
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


def test_separation_of_duties() -> None:
    gate = normal_gate()
    req = make_request().requested_by
    assert "requested this release" in (policy.refusal(gate, vote(req), req, NOW) or "")
    assert "requested this release" in (policy.refusal(gate, vote("alice", on_behalf_of=req), req, NOW) or "")
    assert "not a member" in (policy.refusal(gate, vote("mallory"), req, NOW) or "")
    # A delegate who is not on the CAB may act for a member; the record keeps both names.
    assert policy.refusal(gate, vote("mallory", on_behalf_of="alice"), req, NOW) is None
    gate = policy.record_vote(gate, vote("mallory", on_behalf_of="alice"), NOW)
    assert "alice has already voted" in (policy.refusal(gate, vote("alice"), req, NOW) or "")
    assert "mallory has already voted" in (
        policy.refusal(gate, vote("mallory", on_behalf_of="bob"), req, NOW) or ""
    )


def test_votes_are_bound_to_gate_hash_and_deadline() -> None:
    gate = normal_gate()
    req = "rita"
    assert "outdated" in (policy.refusal(gate, vote("alice", approved_hash="b" * 64), req, NOW) or "")
    assert "expired" in (policy.refusal(gate, vote("alice"), req, NOW + timedelta(days=8)) or "")
    assert "not open" in (policy.refusal(None, vote("alice"), req, NOW) or "")
    closed = policy.expire(gate, NOW)
    assert "closed (expired)" in (policy.refusal(closed, vote("alice"), req, NOW) or "")
    assert "needs a reason" in (
        policy.refusal(gate, vote("alice", Decision.REJECT, comment=""), req, NOW) or ""
    )


def test_amending_the_plan_voids_plan_votes() -> None:
    gate = policy.record_vote(normal_gate(Gate.PLAN), vote("alice", gate=Gate.PLAN), NOW)
    amended = policy.void_votes(gate, "c" * 64, gate.deadline)
    assert amended.votes == [] and amended.subject_hash == "c" * 64
    assert "outdated" in (policy.refusal(amended, vote("bob", gate=Gate.PLAN), "rita", NOW) or "")


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
    with pytest.raises(ValueError, match="must not decrease"):
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
