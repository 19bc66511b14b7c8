"""A release train's evidence: one in-toto statement listing every component's artifacts, and
its offline verification (`relman verify` recognises it by its predicate type).

What the train's own gates mean, as the train workflow applies them: eligible are the union
of the components' approvers (minus the requester), required is the largest of the
components' quorums, and every component whose catalog requires approvals there needs at
least one counted approval by its own approvers. Each component's part (its plan, stages and
the marginal decisions taken on them, its operator actions) is checked as a release's is,
against that component's service in the catalog and bound to the component's release id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field, ValidationError

from relman.contracts import (
    OPERATOR_ROLE,
    ActionRecord,
    AuditAnchor,
    ChangeType,
    CloseCode,
    Decision,
    Environment,
    Gate,
    GateState,
    GateStatus,
    Model,
    Outcome,
    PhaseTransition,
    ReleaseId,
    Risk,
    Sha256,
    Slug,
    TestReport,
    Trust,
)
from relman.contracts.train import ComponentEvidence, TrainEvidenceInput, TrainRequest
from relman.errors import one_line
from relman.identity.evidence import (
    DEPLOYED,
    STATEMENT_TYPE,
    TRAIN_PREDICATE_TYPE,
    EvidenceReport,
    GateCheck,
    ReleaseEvidence,
    _Signatures,
    _Verifier,
    _who,
)
from relman.identity.keys import key_id
from relman.identity.roles import gate_policy

TRAIN_GATES = (Gate.REQUEST, Gate.PLAN, Gate.RETRO)


class TrainEvidence(Model):
    """The predicate of a train's evidence (`TRAIN_PREDICATE_TYPE`)."""

    release_id: ReleaseId
    """The train's id: the request, the train's gates and its operator actions are bound to it."""
    train: Slug
    change_type: ChangeType
    risk: Risk | None = None
    outcome: Outcome | None = None
    close_code: CloseCode
    reason: str = ""
    request: TrainRequest
    """With the requester's proof."""
    request_hash: Sha256
    plan: dict[str, Any] | None = None
    plan_hash: str = ""
    gates: list[GateStatus] = Field(default_factory=list)
    actions: list[ActionRecord] = Field(default_factory=list)
    issues: list[str] = Field(default_factory=list)
    history: list[PhaseTransition] = Field(default_factory=list)
    components: list[ComponentEvidence] = Field(default_factory=list)
    tests: TestReport | None = None
    """The train suites' report on the combined staging (the manifest's `tests:`)."""
    audit_anchor: AuditAnchor | None = None


def plan_digest(plan: Mapping[str, Any]) -> str:
    """The hash `content_hash` gives a model whose JSON is `plan`."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _subject(ev: TrainEvidence) -> list[dict[str, Any]]:
    """Every component's artifacts, named `<service>/<artifact>`; the request when none was built."""
    subject = [
        {"name": f"{c.service}/{a.name}", "digest": {"sha256": a.sha256}}
        for c in ev.components
        if c.package is not None
        for a in c.package.artifacts
    ]
    return subject or [{"name": f"request:{ev.release_id}", "digest": {"sha256": ev.request_hash}}]


def build_train_statement(inp: TrainEvidenceInput, audit_anchor: AuditAnchor | None = None) -> dict[str, Any]:
    """The in-toto Statement v1 of a closing train: every component's artifacts, and what led
    to them; with `audit_anchor`, the audit log's newest row as the worker read it."""
    gate_order = list(Gate)
    ev = TrainEvidence(
        release_id=inp.release_id,
        train=inp.request.train,
        change_type=inp.request.change_type,
        risk=inp.risk,
        outcome=inp.outcome,
        close_code=inp.close_code,
        reason=inp.reason,
        request=inp.request,
        request_hash=inp.request.content_hash(),
        plan=inp.plan,
        plan_hash=inp.plan_hash,
        gates=sorted(inp.gates, key=lambda g: gate_order.index(g.gate)),
        actions=inp.actions,
        issues=inp.issues,
        history=inp.history,
        # In the request's order, so that the statement does not depend on who finished first.
        components=sorted(inp.components, key=lambda c: inp.request.services.index(c.service)),
        tests=inp.tests,
        audit_anchor=audit_anchor,
    )
    body = ev.model_dump(mode="json")
    if inp.tests is None:
        del body["tests"]  # a train without suites states what it stated before they existed
    if audit_anchor is None:
        del body["audit_anchor"]
    return {
        "_type": STATEMENT_TYPE,
        "subject": _subject(ev),
        "predicateType": TRAIN_PREDICATE_TYPE,
        "predicate": body,
    }


def _merged(trusts: Sequence[Trust]) -> Trust:
    """One trust for the train's own messages: every component's people, providers and roles;
    signatures required when any component requires them."""
    roles: dict[Any, list[str]] = {}
    for t in trusts:
        for role, members in t.roles.items():
            roles[role] = sorted(set(roles.get(role, [])) | set(members))
    return Trust(
        signatures="required" if any(t.signatures == "required" for t in trusts) else "off",
        people=[p for t in trusts for p in t.people],
        providers=[p for t in trusts for p in t.providers],
        roles=roles,
        quorum=max(t.quorum for t in trusts),
    )


class _TrainVerifier(_Signatures):
    def __init__(self, ev: TrainEvidence, trusts: Mapping[str, Trust]) -> None:
        self.ev = ev
        self.trusts = {s: trusts[s] for s in ev.request.services}
        super().__init__(
            _merged(list(self.trusts.values())), ev.release_id, ev.request.requested_by, ev.request.services
        )

    def request(self) -> None:
        if self.ev.request_hash != self.ev.request.content_hash():
            self.findings.append("the request hash in the evidence is not the hash of its request.")
        if self.ev.change_type is not self.ev.request.change_type:
            self.findings.append("the change type in the evidence is not the request's.")
        requester = self.ev.request.requested_by
        self.proof(self.ev.request, requester, f"the train request by {requester}")
        if self.ev.plan is not None and plan_digest(self.ev.plan) != self.ev.plan_hash:
            self.findings.append("the plan hash in the evidence is not the hash of its plan.")

    def policy(self, gate: Gate) -> tuple[int, list[str], dict[str, list[str]]]:
        """(required, eligible, approvers per component that requires approvals) of a train gate."""
        required, eligible, groups = 0, set[str](), {}
        for service, trust in self.trusts.items():
            needed, members = gate_policy(gate, self.ev.change_type, trust)
            required = max(required, needed)
            eligible |= set(members) - {self.requester}
            if needed:
                groups[service] = sorted(set(members) - {self.requester})
        return required, sorted(eligible), groups

    def gate(self, status: GateStatus) -> GateCheck:
        required, eligible, groups = self.policy(status.gate)
        subject = self.ev.plan_hash if status.gate is Gate.PLAN else self.ev.request_hash
        if status.gate not in TRAIN_GATES:
            self.findings.append(f"gate {status.gate} is not a gate of a train.")
        elif subject and status.subject_hash != subject:
            self.findings.append(
                f"gate {status.gate} is bound to {status.subject_hash[:12] or 'nothing'}, "
                "not to the hash of what it approves."
            )
        members: list[str] = []
        vetoes: list[str] = []
        for approval in status.votes:
            member = self.vote(approval, status.gate, status.subject_hash, eligible)
            if member is None:
                continue
            counted = members if approval.vote.decision is Decision.APPROVE else vetoes
            if member not in counted:
                counted.append(member)
        for approval in status.voided:
            vote = approval.vote
            self.proof(
                vote, vote.approver, f"gate {status.gate}: {_who(vote)}'s voided {vote.decision.value}"
            )
        if status.state is GateState.APPROVED:
            if vetoes:
                self.findings.append(
                    f"gate {status.gate} is recorded approved although {', '.join(vetoes)} rejected it."
                )
            if len(members) < required:
                self.findings.append(
                    f"gate {status.gate} is recorded approved with {len(members)} valid approval(s) "
                    f"of the {required} the catalog requires."
                )
            for service, approvers in groups.items():
                if not set(approvers) & set(members):
                    self.findings.append(
                        f"gate {status.gate} is recorded approved without an approval by one of "
                        f"{service}'s approvers."
                    )
        if status.state is GateState.SKIPPED and required:
            self.findings.append(
                f"gate {status.gate} was skipped, but the catalog requires {required} approval(s) "
                f"for a {self.ev.change_type} change."
            )
        return GateCheck(
            gate=status.gate, state=status.state, required=required, approvals=len(members), approvers=members
        )

    def gates_required(self, checks: Sequence[GateCheck]) -> None:
        """A train that reached production passed its request and plan gates."""
        went_live = self.ev.outcome in DEPLOYED or any(
            d.environment is Environment.PRODUCTION for c in self.ev.components for d in c.deploys
        )
        by_gate = {c.gate: c for c in checks}
        for gate in (Gate.REQUEST, Gate.PLAN) if went_live else ():
            required, _, _ = self.policy(gate)
            check = by_gate.get(gate)
            if required and (check is None or check.state is not GateState.APPROVED):
                state = check.state.value if check else "missing"
                self.findings.append(
                    f"gate {gate} is {state}, but the train {self.ev.outcome or 'went live'} "
                    f"and the catalog requires {required} approval(s) there."
                )

    def actions(self) -> None:
        """Operator actions on the train: signed for it, by someone holding the role for one of
        its components."""
        for record in self.ev.actions:
            action = record.action
            what = f"{action.action} by {action.by}"
            self.proof(action, action.by, what)
            role = OPERATOR_ROLE[action.action]
            if not any(action.by in t.members(role) for t in self.trusts.values()):
                self.findings.append(
                    f"{what}: {action.by} is not one of the {role.value.replace('_', ' ')} "
                    f"of any component of the train."
                )

    def component(self, c: ComponentEvidence) -> int:
        """Check one component's part as a release's; returns its valid signatures."""
        component = next(x for x in self.ev.request.components if x.service == c.service)
        if c.package is not None and (c.package.service, c.package.version) != (c.service, component.version):
            self.findings.append(
                f"component {c.service}: its package is {c.package.service} {c.package.version}, "
                f"not {c.service} {component.version}."
            )
        request = self.ev.request.component_request(c.service)
        part = ReleaseEvidence(
            release_id=c.release_id,
            service=c.service,
            version=component.version,
            change_type=request.change_type,
            outcome=self.ev.outcome,
            close_code=self.ev.close_code,
            request=request,
            request_hash=request.content_hash(),
            plan=c.plan,
            plan_hash=c.plan_hash,
            package=c.package,
            tests=c.tests,
            stages=c.stages,
            window_waits=c.window_waits,
            actions=c.actions,
            deploys=c.deploys,
            amendments=c.amendments,
        )
        check = _Verifier(self.trusts[c.service], part)
        check.plan()
        check.stages()
        check.amendments()
        check.actions()
        self.findings += [f"component {c.service}: {f}" for f in check.findings]
        return len(check.valid)


def verify_train_statement(
    statement: Mapping[str, Any], trusts: Mapping[str, Trust], key: str | None, findings: list[str]
) -> EvidenceReport:
    """The train part of `verify_evidence`: `key` is the evidence key the envelope verified
    with (None: it did not), `findings` what the envelope's checks found so far."""

    def report(**fields: Any) -> EvidenceReport:
        return EvidenceReport(ok=not findings, findings=findings, **fields)

    try:
        ev = TrainEvidence.model_validate(statement.get("predicate"))
    except ValidationError as exc:
        findings.append(f"the predicate is not relman train evidence ({one_line(exc)}).")
        return report()
    signatures = 1 if key else 0
    head = dict(
        release_id=ev.release_id,
        service=ev.train,
        outcome=ev.outcome,
        close_code=ev.close_code,
        key_id=key_id(key) if key else None,
    )
    listed = sorted(
        (str(s.get("name")), str(s.get("digest", {}).get("sha256")))
        for s in statement.get("subject") or []
        if isinstance(s, dict)
    )
    if listed != sorted((s["name"], s["digest"]["sha256"]) for s in _subject(ev)):
        findings.append("the statement's subject is not the components' artifacts.")
    unknown = [s for s in ev.request.services if s not in trusts]
    if unknown:
        findings.append(
            f"component(s) {', '.join(unknown)} not in the catalog, so no signature inside can be checked."
        )
        return report(signatures=signatures, **head)
    outside = sorted({c.service for c in ev.components} - set(ev.request.services))
    if outside:
        findings.append(f"the evidence has components the request does not name: {', '.join(outside)}.")
        return report(signatures=signatures, **head)
    check = _TrainVerifier(ev, trusts)
    check.request()
    gates = [check.gate(g) for g in ev.gates]
    check.gates_required(gates)
    check.actions()
    parts = sum(check.component(c) for c in ev.components)
    findings += list(dict.fromkeys(check.findings))
    return report(signatures=signatures + len(check.valid) + parts, gates=gates, **head)
