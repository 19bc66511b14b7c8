"""Pure decision rules of a release: approvals, separation of duties, risk, stages, verdicts.

No temporalio, no I/O: the workflow and the `decide` update validator call these
functions with plain inputs, and the tests call them directly.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from statistics import fmean

from relman.contracts import (
    OPERATOR_ROLE,
    REQUEST_MAX_AGE,
    SIGNATURE_SKEW,
    AcceptanceCriteria,
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
    OperatorAction,
    OperatorVerb,
    Outcome,
    PersonTrust,
    PlanAmendment,
    ProviderTrust,
    ReleasePlan,
    ReleaseRequest,
    Risk,
    Role,
    RolloutStage,
    ServiceProfile,
    StageStatus,
    Trust,
    Verdict,
    Vote,
    WindowWait,
    stages_problem,
)
from relman.contracts.train import TrainRequest
from relman.identity import verify as identity
from relman.identity.evidence import stage_subject
from relman.identity.roles import change_model_problem, gate_policy
from relman.identity.signing import Signable

__all__ = ["gate_policy"]

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


# --- who sent it: the context every message is checked in ----------------------


@dataclass(frozen=True)
class Context:
    """What a message is checked against: this release, its trust, its clock, used nonces."""

    release_id: str
    service: str
    requested_by: str
    trust: Trust
    now: datetime
    seen_nonces: frozenset[str] = frozenset()
    services: tuple[str, ...] = ()
    """A train's components: a delegation covering one of them counts on the train (as the
    train evidence verifies it); empty for a release, whose `service` a delegation covers."""

    def proof_problem(self, message: Signable, actor: str, max_age: timedelta = SIGNATURE_SKEW) -> str | None:
        return identity.proof_problem(
            message,
            actor=actor,
            release_id=self.release_id,
            trust=self.trust,
            now=self.now,
            seen_nonces=self.seen_nonces,
            max_age=max_age,
        )


def request_refusal(request: ReleaseRequest, risk: Risk, ctx: Context) -> str | None:
    """Why a release request may not run: who asked, and whether `standard` is really pre-approved."""
    if problem := ctx.proof_problem(request, request.requested_by, max_age=REQUEST_MAX_AGE):
        return f"request: {problem}"
    if problem := change_model_problem(request, ctx.trust):
        return problem
    model = ctx.trust.change_model(request.change_model)
    if model is None:
        return None
    if _RISK_ORDER.index(risk) > _RISK_ORDER.index(model.max_risk):
        return f"risk {risk} exceeds change model {model.name}'s maximum {model.max_risk}"
    return None


def action_refusal(
    action: OperatorAction, verb: OperatorVerb, ctx: Context, waiting: WindowWait | None = None
) -> str | None:
    """Why an operator action is refused: its proof, the role it needs, and for an override
    its scope (the window and step the release waits on now) and separation of duties."""
    if action.action is not verb:
        return f"the {verb} message carries the action {action.action}"
    if problem := ctx.proof_problem(action, action.by):
        return problem
    role = OPERATOR_ROLE[verb]
    if action.by not in ctx.trust.members(role):
        return f"{action.by} is not one of the {role.value.replace('_', ' ')} of {ctx.service}"
    if verb is not OperatorVerb.OVERRIDE_WINDOW:
        return None
    if action.by == ctx.requested_by:
        return f"{action.by} requested this release and cannot override its windows"
    if waiting is None:
        return "no deployment window is holding this release; an override lets one waiting step through"
    if (action.window, action.step) != (waiting.window, waiting.step):
        return (
            f"the release waits on window {waiting.window!r} before step {waiting.step}, "
            f"not on {action.window!r} before {action.step}"
        )
    return None


def amendment_refusal(
    amendment: PlanAmendment,
    gate: GateStatus | None,
    current: ReleasePlan | None,
    floor: AcceptanceCriteria,
    ctx: Context,
) -> str | None:
    """Why a plan amendment is refused: who sent it, when, and whether the plan stays sound."""
    if gate is None or gate.state is not GateState.OPEN:
        return "the plan gate is not open; a plan is amended only while it awaits approval"
    if current is None:
        return "there is no plan to amend yet"
    if problem := ctx.proof_problem(amendment, amendment.by):
        return problem
    if amendment.by not in ctx.trust.members(Role.RELEASE_MANAGERS):
        return f"{amendment.by} is not a release manager of {ctx.service}"
    plan = amendment.plan
    if plan.revision != current.revision + 1:
        return f"the amendment is revision {plan.revision}, but the plan is at revision {current.revision}"
    if plan.components != current.components:
        return "an amendment may not change the components or versions released"
    try:
        check_stages(plan.stages)
    except ValueError as err:
        return str(err)
    looser = acceptance_loosened(plan.acceptance, floor)
    if looser:
        return "acceptance criteria looser than the catalog's: " + "; ".join(looser)
    if plan.content_hash() == current.model_copy(update={"revision": plan.revision}).content_hash():
        return "the amendment changes nothing in the plan"
    return None


def acceptance_loosened(proposed: AcceptanceCriteria, floor: AcceptanceCriteria) -> list[str]:
    """The criteria in `proposed` that are looser than the catalog's (the catalog is the floor)."""
    out = []
    if proposed.min_pass_rate < floor.min_pass_rate:
        out.append(f"min_pass_rate {proposed.min_pass_rate:g} < {floor.min_pass_rate:g}")
    if proposed.max_error_rate > floor.max_error_rate:
        out.append(f"max_error_rate {proposed.max_error_rate:g} > {floor.max_error_rate:g}")
    if proposed.max_latency_ms > floor.max_latency_ms:
        out.append(f"max_latency_ms {proposed.max_latency_ms:g} > {floor.max_latency_ms:g}")
    return out


def plan_changes(old: ReleasePlan, new: ReleasePlan) -> list[str]:
    """What an amendment changed, one short line each, for the timeline, status and CMDB."""
    out: list[str] = []
    before = {s.name: s for s in old.stages}
    after = {s.name: s for s in new.stages}
    for name in before.keys() - after.keys():
        out.append(f"stage {name} removed")
    for stage in new.stages:
        was = before.get(stage.name)
        if was is None:
            out.append(f"stage {stage.name} added: {stage.percent:g}%, bake {stage.bake_seconds}s")
            continue
        if was.percent != stage.percent:
            out.append(f"stage {stage.name}: {was.percent:g}% -> {stage.percent:g}%")
        if was.bake_seconds != stage.bake_seconds:
            out.append(f"stage {stage.name}: bake {was.bake_seconds}s -> {stage.bake_seconds}s")
        if was.allow_list != stage.allow_list:
            out.append(
                f"stage {stage.name}: allow-list {len(was.allow_list)} -> {len(stage.allow_list)} people"
            )
    if [s.name for s in old.stages if s.name in after] != [s.name for s in new.stages if s.name in before]:
        out.append("stage order changed")
    for field in ("min_pass_rate", "max_error_rate", "max_latency_ms"):
        a, b = getattr(old.acceptance, field), getattr(new.acceptance, field)
        if a != b:
            out.append(f"acceptance {field}: {a:g} -> {b:g}")
    if old.backout_plan != new.backout_plan:
        out.append("backout plan rewritten")
    if old.target_window != new.target_window:
        out.append("target window changed")
    return out


def feedback_refusal(feedback: Feedback, ctx: Context) -> str | None:
    """Feedback counts in the review's KPIs, so it too comes from a person the catalog knows."""
    if problem := ctx.proof_problem(feedback, feedback.by):
        return problem
    declared = {p.name for p in ctx.trust.people}
    declared |= {name for provider in ctx.trust.providers for name in provider.vouches_for}
    if ctx.trust.signatures == "required" and feedback.by not in declared:
        return f"{feedback.by} is not a person the catalog declares"
    return None


# --- gates -------------------------------------------------------------------


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
    requested_by: str = "",
) -> GateStatus:
    """A new gate for `subject_hash`: open with a deadline, or skipped when no approval is needed.

    The requester is never eligible, so nobody lists them as awaited on their own release.
    """
    required, eligible = gate_policy(gate, change_type, profile.trust)
    eligible = [m for m in eligible if m != requested_by]
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


def refusal(
    status: GateStatus | None,
    vote: Vote,
    ctx: Context,
) -> str | None:
    """Why a vote must be refused, or None when it may count. Never mutates anything.

    The order matters only for the message: the state of the gate first, then who signed,
    then what they may do.
    """
    if status is None or status.state is GateState.PENDING:
        return f"gate {vote.gate} is not open yet"
    if status.state is not GateState.OPEN:
        return f"gate {vote.gate} is closed ({status.state})"
    if status.deadline is not None and ctx.now >= status.deadline:
        return f"gate {vote.gate} expired at {status.deadline.isoformat()}"
    if problem := ctx.proof_problem(vote, vote.approver):
        return problem
    member = counted_member(vote)
    if ctx.requested_by in (vote.approver, member):
        return f"{ctx.requested_by} requested this release and cannot approve it"
    if vote.on_behalf_of is not None and vote.on_behalf_of == vote.approver:
        return "on_behalf_of names the voter; leave it out to vote for yourself"
    if member not in status.eligible:
        return f"{member} is not a member of the approvers for gate {vote.gate}"
    if vote.on_behalf_of is not None and (problem := delegation_problem(vote, ctx)):
        return problem
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


def delegation_problem(vote: Vote, ctx: Context) -> str | None:
    """Why a vote on behalf of someone does not count for them, or None."""
    d = vote.delegation
    if d is None:
        return f"{vote.approver} votes for {vote.on_behalf_of} without a delegation signed by them"
    if d.delegator != vote.on_behalf_of or d.delegate != vote.approver:
        return (
            f"the delegation is from {d.delegator} to {d.delegate}, "
            f"not from {vote.on_behalf_of} to {vote.approver}"
        )
    if not set(ctx.services or (ctx.service,)) & set(d.services):
        return (
            f"{d.delegator}'s delegation does not cover service {', '.join(ctx.services or (ctx.service,))}"
        )
    if vote.gate not in d.gates:
        return f"{d.delegator}'s delegation does not cover gate {vote.gate}"
    if ctx.now > d.not_after:
        return f"{d.delegator}'s delegation ended at {d.not_after.isoformat()}"
    # A delegation is valid until `not_after`, however long ago it was signed.
    problem = identity.proof_problem(
        d, actor=d.delegator, release_id="*", trust=ctx.trust, now=ctx.now, max_age=None
    )
    return f"delegation: {problem}" if problem else None


def tally(status: GateStatus) -> GateState:
    """Gate state from its votes: any rejection vetoes; a quorum of distinct members approves,
    and on a train's gate only once every group (a component's approvers) has one of them."""
    if any(a.vote.decision is Decision.REJECT for a in status.votes):
        return GateState.REJECTED
    approvers = {counted_member(a.vote) for a in status.votes if a.vote.decision is Decision.APPROVE}
    if len(approvers) >= status.required and not unrepresented(status.groups, approvers):
        return GateState.APPROVED
    return GateState.OPEN


def unrepresented(groups: Mapping[str, Sequence[str]], approvers: Collection[str]) -> list[str]:
    """The groups none of whose members approved yet (empty when `groups` is)."""
    return [name for name, members in groups.items() if not any(m in approvers for m in members)]


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


def gate_end(status: GateStatus, decided: bool, at: datetime) -> tuple[GateStatus, Outcome | None, str]:
    """A gate once its wait is over: as it stands, and whether it ends the change (expired
    without a decision, or rejected, with the rejecters' comments) and why."""
    if not decided:
        return expire(status, at), Outcome.EXPIRED, f"gate {status.gate} expired without a decision"
    if status.state is GateState.REJECTED:
        who = ", ".join(
            f"{a.vote.approver}: {a.vote.comment}" for a in status.votes if a.vote.decision == "reject"
        )
        return status, Outcome.REJECTED, f"gate {status.gate} rejected ({who})"
    return status, None, ""


def withdraw(status: GateStatus, at: datetime) -> GateStatus:
    """An open gate of a release that ended without its decision: nobody is awaited any more."""
    if status.state is not GateState.OPEN:
        return status
    return status.model_copy(update={"state": GateState.WITHDRAWN, "closed_at": at})


def void_votes(status: GateStatus, new_hash: str, deadline: datetime | None) -> GateStatus:
    """A gate re-bound to a new subject (an amended plan): earlier votes no longer count, and
    stay on record as voided."""
    return status.model_copy(
        update={
            "subject_hash": new_hash,
            "votes": [],
            "voided": [*status.voided, *status.votes],
            "deadline": deadline,
        }
    )


def waiting_for(status: GateStatus) -> list[str]:
    """Eligible members who have not voted yet on an open gate."""
    if status.state is not GateState.OPEN:
        return []
    voted = {counted_member(a.vote) for a in status.votes}
    return [m for m in status.eligible if m not in voted]


def stage_hash(plan_hash: str, stage: str) -> str:
    """Subject of a marginal-health decision: this plan's stage, nothing else."""
    return stage_subject(plan_hash, stage)


# --- plan and rollout ----------------------------------------------------------


def build_plan(request: ReleaseRequest, profile: ServiceProfile) -> ReleasePlan:
    """The release plan from the request and the catalog's rollout template."""
    stages = profile.stages
    model = profile.trust.change_model(request.change_model)
    if model is not None and model.stages:
        stages = [s for s in stages if s.name in model.stages]
    return ReleasePlan(
        components=[Component(name=request.service, version=request.version)],
        stages=check_stages(stages),
        acceptance=profile.acceptance,
        backout_plan=(
            f"Exposure of {request.service} {request.version} to 0%; production `current` "
            "switched back to the previous version and verified; staging restored."
        ),
        target_window=request.target_window,
    )


def check_stages(stages: list[RolloutStage]) -> list[RolloutStage]:
    """The rollout stages, or ValueError naming what `stages_problem` found wrong."""
    if problem := stages_problem(stages):
        raise ValueError(problem)
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


def failed_deployment(outcome: Outcome, stages: Sequence[StageStatus], in_production: bool) -> bool:
    """Whether an undone release was a deployment that failed (DORA's change failure): rolled
    back or aborted after production users saw it, i.e. a stage above 0% was exposed or it went
    live. Exposure to the allow-list alone (0%, named internal people) is testing, not a
    deployment, so undoing it is no failed deployment."""
    if outcome not in (Outcome.ROLLED_BACK, Outcome.ABORTED):
        return False
    return in_production or any(stage.percent > 0 for stage in stages)


def failed_change(code: CloseCode) -> bool:
    """A rolled-back change, or one whose undo failed, is a failure an operator should find in
    Temporal's failure views; a rejection, expiry or abort is the process deciding, not failing."""
    return code in (CloseCode.ROLLED_BACK, CloseCode.UNSUCCESSFUL)


def close_code(outcome: Outcome, compensation_failed: bool = False) -> CloseCode:
    """CMDB close code of an outcome; a rollback whose undo failed is `unsuccessful`."""
    if compensation_failed:
        return CloseCode.UNSUCCESSFUL
    return CLOSE_CODES[outcome]


# --- release trains --------------------------------------------------------------


def merged_trust(trusts: Iterable[Trust]) -> Trust:
    """The trust a train checks messages against: every component's people, keys and roles.

    A vote counts on the train if it would count on one of its components (the gate's groups
    then make sure each component's approvers are represented); signatures are required if
    any component requires them, and the quorum is the largest.
    """
    trusts = list(trusts)
    people: dict[str, list[str]] = {}
    providers: dict[str, ProviderTrust] = {}
    roles: dict[Role, list[str]] = {}
    for trust in trusts:
        for person in trust.people:
            keys = people.setdefault(person.name, [])
            keys.extend(k for k in person.keys if k not in keys)
        for provider in trust.providers:
            known = providers.get(provider.name)
            providers[provider.name] = (
                provider
                if known is None
                else known.model_copy(
                    update={
                        "keys": list(dict.fromkeys([*known.keys, *provider.keys])),
                        "vouches_for": list(dict.fromkeys([*known.vouches_for, *provider.vouches_for])),
                    }
                )
            )
        for role, members in trust.roles.items():
            listed = roles.setdefault(role, [])
            listed.extend(m for m in members if m not in listed)
    return Trust(
        signatures="required" if any(t.signatures == "required" for t in trusts) else "off",
        people=[PersonTrust(name=name, keys=keys) for name, keys in people.items()],
        providers=list(providers.values()),
        roles=roles,
        quorum=max((t.quorum for t in trusts), default=1),
    )


def train_gate(
    gate: Gate,
    change_type: ChangeType,
    profiles: Mapping[str, ServiceProfile],
    subject_hash: str,
    now: datetime,
    requested_by: str,
) -> GateStatus:
    """A train's gate: eligible are the union of its components' approvers (never the
    requester), the quorum is the largest component's, and every component's approvers must
    be represented by one approval (a quorum from one CAB alone does not approve a train that
    spans two). Skipped only when no component's gate needs an approval."""
    groups: dict[str, list[str]] = {}
    required = 0
    for service, profile in profiles.items():
        needed, members = gate_policy(gate, change_type, profile.trust)
        if needed == 0:
            continue
        required = max(required, needed)
        groups[service] = [m for m in members if m != requested_by]
    if required == 0:
        return GateStatus(gate=gate, state=GateState.SKIPPED, subject_hash=subject_hash, closed_at=now)
    eligible = sorted({m for members in groups.values() for m in members})
    deadline = now + min(gate_timeout(gate, change_type, p) for p in profiles.values())
    return GateStatus(
        gate=gate,
        state=GateState.OPEN,
        required=required,
        eligible=eligible,
        subject_hash=subject_hash,
        deadline=deadline,
        groups=groups,
    )


def train_gate_problem(status: GateStatus) -> str | None:
    """Why a train's gate can never be approved (a component's only approver is the requester,
    or fewer eligible than the quorum), or None: refused at once instead of expiring."""
    if status.state is not GateState.OPEN:
        return None
    empty = [name for name, members in status.groups.items() if not members]
    if empty:
        return f"gate {status.gate}: nobody but the requester may approve for {', '.join(empty)}"
    if len(status.eligible) < status.required:
        eligible = len(status.eligible)
        return f"gate {status.gate}: {eligible} eligible approvers for a quorum of {status.required}"
    return None


def train_request_refusal(request: TrainRequest, ctx: Context) -> str | None:
    """Why a train request may not run: who asked (signed, with the train's merged trust), and
    its change type (a standard change follows one service's change model; a train is not one)."""
    if problem := ctx.proof_problem(request, request.requested_by, max_age=REQUEST_MAX_AGE):
        return f"request: {problem}"
    if request.change_type is ChangeType.STANDARD:
        return "a train is a normal or emergency change: change models pre-approve one service's changes"
    return None
