"""Pure decision rules of a release: approvals, separation of duties, risk, stages, verdicts.

No temporalio, no I/O: the workflow and the `decide` update validator call these
functions with plain inputs, and the tests call them directly.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from enum import StrEnum
from statistics import fmean

from relman.contracts import (
    Approval,
    ChangeType,
    CloseCode,
    Component,
    Criticality,
    Decision,
    Feedback,
    Gate,
    GateState,
    GateStatus,
    HealthReport,
    Outcome,
    ReleasePlan,
    ReleaseRequest,
    Risk,
    RolloutStage,
    ServiceProfile,
    Verdict,
    Vote,
)

# --- risk --------------------------------------------------------------------

_RISK_ORDER = [Risk.LOW, Risk.MEDIUM, Risk.HIGH, Risk.CRITICAL]
_CRITICALITY_BASE = {
    Criticality.LOW: 0,
    Criticality.MEDIUM: 1,
    Criticality.HIGH: 2,
    Criticality.MISSION_CRITICAL: 3,
}
_CHANGE_TYPE_SHIFT = {ChangeType.STANDARD: -1, ChangeType.NORMAL: 0, ChangeType.EMERGENCY: 1}


def risk_for(change_type: ChangeType, criticality: Criticality) -> Risk:
    """Risk from the CI's criticality, lowered for standard and raised for emergency changes."""
    index = _CRITICALITY_BASE[criticality] + _CHANGE_TYPE_SHIFT[change_type]
    return _RISK_ORDER[max(0, min(index, len(_RISK_ORDER) - 1))]


# --- gates -------------------------------------------------------------------


def gate_policy(gate: Gate, change_type: ChangeType, profile: ServiceProfile) -> tuple[int, list[str]]:
    """(approvals required, eligible members) of a gate; (0, []) when the gate is skipped.

    standard: pre-approved, no CAB gate and no plan gate.
    normal: a quorum of the CAB at the request and plan gates.
    emergency: one ECAB member now (request and plan), the CAB quorum retrospectively.
    marginal health: any one CAB or ECAB member decides.
    """
    cab = list(profile.cab_members)
    ecab = list(profile.ecab_members) or cab
    if gate is Gate.MARGINAL:
        return 1, sorted(set(cab) | set(ecab))
    if change_type is ChangeType.STANDARD:
        return 0, []
    if change_type is ChangeType.EMERGENCY:
        if gate is Gate.RETRO:
            return profile.cab_quorum, cab
        return 1, ecab
    if gate is Gate.RETRO:
        return 0, []
    return profile.cab_quorum, cab


def gate_timeout(gate: Gate, change_type: ChangeType, profile: ServiceProfile) -> timedelta:
    """How long a gate stays open before it expires."""
    t = profile.timeouts
    if gate is Gate.PLAN:
        return t.ecab if change_type is ChangeType.EMERGENCY else t.plan
    if gate is Gate.RETRO:
        return t.retro
    if gate is Gate.MARGINAL:
        return t.marginal
    return t.ecab if change_type is ChangeType.EMERGENCY else t.cab


def open_gate(
    gate: Gate,
    change_type: ChangeType,
    profile: ServiceProfile,
    subject_hash: str,
    now: datetime,
) -> GateStatus:
    """A new gate for `subject_hash`: open with a deadline, or skipped when no approval is needed."""
    required, eligible = gate_policy(gate, change_type, profile)
    if required == 0:
        return GateStatus(gate=gate, state=GateState.SKIPPED, subject_hash=subject_hash, closed_at=now)
    return GateStatus(
        gate=gate,
        state=GateState.OPEN,
        required=required,
        eligible=eligible,
        subject_hash=subject_hash,
        deadline=now + gate_timeout(gate, change_type, profile),
    )


def counted_member(vote: Vote) -> str:
    """The CAB member a vote counts for: the member a delegate acts for, else the voter."""
    return vote.on_behalf_of or vote.approver


def refusal(status: GateStatus | None, vote: Vote, requested_by: str, now: datetime) -> str | None:
    """Why a vote must be refused, or None when it may count. Never mutates anything."""
    if status is None or status.state is GateState.PENDING:
        return f"gate {vote.gate} is not open yet"
    if status.state is not GateState.OPEN:
        return f"gate {vote.gate} is closed ({status.state})"
    if status.deadline is not None and now >= status.deadline:
        return f"gate {vote.gate} expired at {status.deadline.isoformat()}"
    member = counted_member(vote)
    if requested_by in (vote.approver, member):
        return f"{requested_by} requested this release and cannot approve it"
    if member not in status.eligible:
        return f"{member} is not a member of the approvers for gate {vote.gate}"
    if vote.on_behalf_of is not None and vote.on_behalf_of == vote.approver:
        return "on_behalf_of names the voter; leave it out to vote for yourself"
    if vote.decision is Decision.REJECT and not vote.comment:
        return "a rejection needs a reason (comment)"
    if any(counted_member(a.vote) == member for a in status.votes):
        return f"{member} has already voted at gate {vote.gate}"
    if any(a.vote.approver == vote.approver for a in status.votes):
        return f"{vote.approver} has already voted at gate {vote.gate}"
    if vote.approved_hash != status.subject_hash:
        return (
            f"vote is for {vote.approved_hash[:12]}, but gate {vote.gate} is for "
            f"{status.subject_hash[:12]} (outdated plan or request)"
        )
    return None


def tally(status: GateStatus) -> GateState:
    """Gate state from its votes: any rejection vetoes; a quorum of distinct members approves."""
    if any(a.vote.decision is Decision.REJECT for a in status.votes):
        return GateState.REJECTED
    approvers = {counted_member(a.vote) for a in status.votes if a.vote.decision is Decision.APPROVE}
    if len(approvers) >= status.required:
        return GateState.APPROVED
    return GateState.OPEN


def record_vote(status: GateStatus, vote: Vote, at: datetime) -> GateStatus:
    """The gate after a vote that `refusal` accepted; closes it when the tally decides."""
    votes = [*status.votes, Approval(vote=vote, at=at)]
    updated = status.model_copy(update={"votes": votes})
    state = tally(updated)
    closed_at = at if state is not GateState.OPEN else None
    return updated.model_copy(update={"state": state, "closed_at": closed_at})


def expire(status: GateStatus, at: datetime) -> GateStatus:
    """The gate after its deadline passed without a decision."""
    return status.model_copy(update={"state": GateState.EXPIRED, "closed_at": at})


def void_votes(status: GateStatus, new_hash: str, deadline: datetime | None) -> GateStatus:
    """A gate re-bound to a new subject (an amended plan): earlier votes no longer count."""
    return status.model_copy(update={"subject_hash": new_hash, "votes": [], "deadline": deadline})


def waiting_for(status: GateStatus) -> list[str]:
    """Eligible members who have not voted yet on an open gate."""
    if status.state is not GateState.OPEN:
        return []
    voted = {counted_member(a.vote) for a in status.votes}
    return [m for m in status.eligible if m not in voted]


def stage_hash(plan_hash: str, stage: str) -> str:
    """Subject of a marginal-health decision: this plan's stage, nothing else."""
    return hashlib.sha256(f"{plan_hash}:{stage}".encode()).hexdigest()


# --- plan and rollout ----------------------------------------------------------


def build_plan(request: ReleaseRequest, profile: ServiceProfile) -> ReleasePlan:
    """The release plan from the request and the catalog's rollout template."""
    return ReleasePlan(
        components=[Component(name=request.service, version=request.version)],
        stages=check_stages(profile.stages),
        acceptance=profile.acceptance,
        backout_plan=(
            f"Exposure of {request.service} {request.version} to 0%; production `current` "
            "switched back to the previous version and verified; staging restored."
        ),
        target_window=request.target_window,
    )


def check_stages(stages: list[RolloutStage]) -> list[RolloutStage]:
    """Rollout stages in order: unique names, percentages never decreasing, below 100%."""
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"rollout stage names repeat: {names}")
    percents = [s.percent for s in stages]
    if percents != sorted(percents):
        raise ValueError(f"rollout stage percentages must not decrease: {percents}")
    if percents and percents[-1] >= 100:
        raise ValueError("dark-launch stages stay below 100%; go-live is the deploying phase")
    return list(stages)


class StageAction(StrEnum):
    PROMOTE = "promote"
    ASK_HUMAN = "ask_human"
    ROLL_BACK = "roll_back"


def stage_action(verdict: Verdict) -> StageAction:
    """What a dark-launch stage does with a health verdict: only a pass promotes by itself."""
    if verdict is Verdict.PASS:
        return StageAction.PROMOTE
    if verdict is Verdict.FAIL:
        return StageAction.ROLL_BACK
    return StageAction.ASK_HUMAN


# --- review and close ------------------------------------------------------------


def kpis(
    health: HealthReport | None, feedback: list[Feedback], lead_time: timedelta | None
) -> dict[str, float]:
    """Post-implementation KPIs: production health, user feedback and lead time."""
    out: dict[str, float] = {"feedback_count": float(len(feedback))}
    if feedback:
        out["avg_rating"] = round(fmean(f.rating for f in feedback), 2)
    if health is not None:
        if health.error_rate is not None:
            out["error_rate"] = health.error_rate
        if health.latency_ms is not None:
            out["latency_ms"] = health.latency_ms
        out["health_pass"] = 1.0 if health.verdict is Verdict.PASS else 0.0
    if lead_time is not None:
        out["lead_time_hours"] = round(lead_time.total_seconds() / 3600, 3)
    return out


def review_outcome(
    health: HealthReport | None, feedback: list[Feedback], issues: list[str]
) -> tuple[Outcome, list[str]]:
    """`completed` or `completed_with_issues`, with the review's findings."""
    findings = list(issues)
    if health is None or health.verdict is not Verdict.PASS:
        verdict = health.verdict if health else Verdict.NO_DATA
        findings.append(f"production health at review: {verdict}")
    if feedback and fmean(f.rating for f in feedback) < 3:
        findings.append("average feedback rating below 3")
    return (Outcome.COMPLETED_WITH_ISSUES if findings else Outcome.COMPLETED), findings


CLOSE_CODES = {
    Outcome.COMPLETED: CloseCode.SUCCESSFUL,
    Outcome.COMPLETED_WITH_ISSUES: CloseCode.SUCCESSFUL_WITH_ISSUES,
    Outcome.REJECTED: CloseCode.REJECTED,
    Outcome.EXPIRED: CloseCode.EXPIRED,
    Outcome.ROLLED_BACK: CloseCode.ROLLED_BACK,
    Outcome.ABORTED: CloseCode.ABORTED,
}


def close_code(outcome: Outcome, compensation_failed: bool = False) -> CloseCode:
    """CMDB close code of an outcome; a rollback whose undo failed is `unsuccessful`."""
    if compensation_failed:
        return CloseCode.UNSUCCESSFUL
    return CLOSE_CODES[outcome]
