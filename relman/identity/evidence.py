"""Release evidence: an in-toto Statement v1 in a DSSE envelope, and its offline verification.

DSSE is implemented here rather than through securesystemslib's `dsse` module: the protocol is
one encoding (PAE) and base64, while securesystemslib would bring its own signer and key
abstractions and key-id scheme beside ours (`relman.identity.keys`), and its `Envelope.verify`
selects keys by key id, which the DSSE spec says must never decide anything. Tests check this
code against the spec's published vector and against securesystemslib.

`verify_evidence` trusts nothing in the payload about who may do what: roles and quorums come
from the catalog given to it, and every signed message inside is verified again with the same
rule the workflow used (`proof_problem`, without the clock checks, which only make sense when
the message arrives).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from relman.contracts import (
    OPERATOR_ROLE,
    ActionRecord,
    AmendmentRecord,
    Approval,
    AuditAnchor,
    ChangeType,
    CloseCode,
    Decision,
    DeployRecord,
    Environment,
    Gate,
    GateState,
    GateStatus,
    Model,
    OperatorAction,
    OperatorVerb,
    Outcome,
    PhaseTransition,
    ReleaseId,
    ReleasePackage,
    ReleasePlan,
    ReleaseRequest,
    ReleaseStatus,
    Risk,
    Role,
    ServiceName,
    Sha256,
    StageStatus,
    TestReport,
    Trust,
    Verdict,
    Version,
    Vote,
    WindowWait,
)
from relman.errors import one_line
from relman.identity.keys import Signer, key_id, verify_signature
from relman.identity.roles import gate_policy
from relman.identity.signing import Signable
from relman.identity.verify import proof_problem

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://relman.dev/release-evidence/v1"
TRAIN_PREDICATE_TYPE = "https://relman.dev/train-evidence/v1"
"""A release train's evidence: relman.identity.evidence_train."""
DEPLOYED = frozenset({Outcome.COMPLETED, Outcome.COMPLETED_WITH_ISSUES})
ACCEPTED_BY_A_HUMAN = frozenset({Verdict.MARGINAL, Verdict.NO_DATA})
"""Stage verdicts the workflow only passes on a human's decision at the marginal gate."""

# --- DSSE v1 -------------------------------------------------------------------------


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a signature covers (never the JSON around it)."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(body), body)


def b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not: DSSE verifiers must accept either."""
    standard = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_envelope(statement: dict[str, Any], signer: Signer) -> dict[str, Any]:
    """A DSSE envelope of `statement` signed by `signer` (the worker's evidence key)."""
    body = canonical_json(statement)
    return {
        "payload": base64.b64encode(body).decode(),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": signer.key_id, "sig": signer.sign(pae(PAYLOAD_TYPE, body))}],
    }


class DsseSignature(BaseModel):
    model_config = ConfigDict(extra="ignore")

    keyid: str = ""
    """A hint only: never used to decide which key must have signed."""
    sig: str


class DsseEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    payload: str
    payload_type: str = Field(alias="payloadType")
    signatures: list[DsseSignature] = Field(min_length=1)


def envelope_digest(envelope: Mapping[str, Any]) -> str:
    """Sha256 of the envelope in canonical JSON: what the CMDB records beside it."""
    return hashlib.sha256(canonical_json(dict(envelope))).hexdigest()


# --- the statement -------------------------------------------------------------------


def stage_subject(plan_hash: str, stage: str) -> str:
    """What a marginal-health decision approves: this plan's stage, as the workflow binds it
    (`relman.workflows.policy.stage_hash`; a test keeps the two equal)."""
    return hashlib.sha256(f"{plan_hash}:{stage}".encode()).hexdigest()


class ReleaseEvidence(Model):
    """The predicate of relman's release evidence (`PREDICATE_TYPE`)."""

    release_id: ReleaseId
    """Signed statements are bound to it: verification rebuilds them with it."""
    service: ServiceName
    version: Version
    change_type: ChangeType
    risk: Risk | None = None
    outcome: Outcome | None = None
    close_code: CloseCode
    reason: str = ""
    request: ReleaseRequest
    """With the requester's proof."""
    request_hash: Sha256
    plan: ReleasePlan | None = None
    plan_hash: str = ""
    package: ReleasePackage | None = None
    gates: list[GateStatus] = Field(default_factory=list)
    """Each with required, eligible and every vote (proof, key id, delegation) as recorded."""
    amendments: list[AmendmentRecord] = Field(default_factory=list)
    tests: TestReport | None = None
    stages: list[StageStatus] = Field(default_factory=list)
    """Verdicts, the health they were judged on and who accepted marginal ones (`decisions`)."""
    window_waits: list[WindowWait] = Field(default_factory=list)
    actions: list[ActionRecord] = Field(default_factory=list)
    """Operator actions, signed; window overrides among them."""
    deploys: list[DeployRecord] = Field(default_factory=list)
    issues: list[str] = Field(default_factory=list)
    compensations: list[str] = Field(default_factory=list)
    history: list[PhaseTransition] = Field(default_factory=list)
    audit_anchor: AuditAnchor | None = None
    """The CMDB audit log's newest row when the worker signed this (absent in evidence from
    before anchoring): `relman cmdb verify-audit` checks the log still holds it, so a log
    rewritten or cut short up to it shows, because this envelope is signed."""


def _subject(status: ReleaseStatus) -> list[dict[str, Any]]:
    if status.package is not None:
        return [{"name": a.name, "digest": {"sha256": a.sha256}} for a in status.package.artifacts]
    # A release closed before its build (rejected, expired) has no artifact; in-toto requires
    # a digest on every subject, so the evidence is about the change request itself.
    return [{"name": f"request:{status.release_id}", "digest": {"sha256": status.request.content_hash()}}]


def build_statement(
    status: ReleaseStatus, close_code: CloseCode, audit_anchor: AuditAnchor | None = None
) -> dict[str, Any]:
    """The in-toto Statement v1 of a closing release: its artifacts, and what led to them;
    with `audit_anchor`, the audit log's newest row as the worker read it before signing."""
    gate_order = list(Gate)
    predicate = ReleaseEvidence(
        release_id=status.release_id,
        service=status.request.service,
        version=status.request.version,
        change_type=status.request.change_type,
        risk=status.risk,
        outcome=status.outcome,
        close_code=close_code,
        reason=status.reason,
        request=status.request,
        request_hash=status.request.content_hash(),
        plan=status.plan,
        plan_hash=status.plan_hash,
        package=status.package,
        gates=sorted(status.gates.values(), key=lambda g: gate_order.index(g.gate)),
        amendments=status.amendments,
        tests=status.tests,
        stages=status.stages,
        window_waits=status.window_waits,
        actions=status.actions,
        deploys=status.deploys,
        issues=status.issues,
        compensations=status.compensations,
        history=status.history,
        audit_anchor=audit_anchor,
    )
    body = predicate.model_dump(mode="json")
    if audit_anchor is None:
        del body["audit_anchor"]  # evidence without an anchor reads as it did before anchoring
    return {
        "_type": STATEMENT_TYPE,
        "subject": _subject(status),
        "predicateType": PREDICATE_TYPE,
        "predicate": body,
    }


# --- verification ------------------------------------------------------------------


class GateCheck(Model):
    """One gate as the catalog judges it: the approvals that hold up, of those required."""

    gate: Gate
    state: GateState
    required: int
    """From the catalog's policy, not from the evidence."""
    approvals: int
    """Distinct eligible members with a valid approval of the gate's subject."""
    approvers: list[str] = Field(default_factory=list)


class EvidenceReport(Model):
    """What `relman verify` found: ok only when there is no finding."""

    ok: bool
    release_id: str | None = None
    service: str | None = None
    version: str | None = None
    outcome: Outcome | None = None
    close_code: CloseCode | None = None
    key_id: str | None = None
    """The evidence key whose signature on the envelope verified."""
    signatures: int = 0
    """Valid signatures checked: the envelope's and every signed message inside."""
    gates: list[GateCheck] = Field(default_factory=list)
    findings: list[str] = Field(default_factory=list)
    """One sentence each, naming what failed."""


def _who(vote: Vote) -> str:
    return f"{vote.approver} for {vote.on_behalf_of}" if vote.on_behalf_of else vote.approver


class _Signatures:
    """The signed messages of one release (or train), checked against the catalog's trust."""

    def __init__(self, trust: Trust, release_id: str, requester: str, services: Sequence[str]) -> None:
        self.trust = trust
        self.release_id = release_id
        """What every signed message inside must be bound to."""
        self.requester = requester
        self.services = list(services)
        """A delegation must cover one of them."""
        self.findings: list[str] = []
        self.valid: set[str] = set()
        self._nonces: dict[str, str] = {}

    def proof(self, message: Signable, actor: str, what: str, release_id: str | None = None) -> bool:
        """Verify one signed message; a finding names `what` when it fails."""
        problem = proof_problem(
            message,
            actor=actor,
            release_id=self.release_id if release_id is None else release_id,
            trust=self.trust,
            now=None,
        )
        if problem:
            self.findings.append(f"{what}: {problem}.")
            return False
        proof = message.proof
        if proof is not None:
            # The same message may appear twice (an override in actions and in its wait); a
            # nonce on two different signatures is a replay the workflow should have refused.
            seen = self._nonces.setdefault(proof.nonce, proof.signature)
            if seen != proof.signature:
                self.findings.append(f"{what}: its nonce {proof.nonce} was already used by another message.")
                return False
            self.valid.add(proof.signature)
        return True

    def vote(self, approval: Approval, gate: Gate, subject: str, eligible: list[str]) -> str | None:
        """The member a vote validly counts for, or None (with a finding when it is bad)."""
        vote = approval.vote
        what = f"gate {gate}: {_who(vote)}'s {vote.decision.value}"
        if vote.gate is not gate:
            self.findings.append(f"{what} is a vote for gate {vote.gate}, recorded at gate {gate}.")
            return None
        if not self.proof(vote, vote.approver, what):
            return None
        member = vote.on_behalf_of or vote.approver
        if self.requester in (vote.approver, member):
            self.findings.append(f"{what} is by {self.requester}, who requested this release.")
            return None
        if vote.on_behalf_of is not None and not self.delegation(approval, what):
            return None
        if member not in eligible:
            self.findings.append(
                f"{what} counts for {member}, who is not among the approvers of gate {gate} in the catalog."
            )
            return None
        if vote.approved_hash != subject:
            # Not a finding: a vote may be for what the gate was bound to earlier; it just
            # does not count for what it is bound to now.
            return None
        return member

    def delegation(self, approval: Approval, what: str) -> bool:
        vote, d = approval.vote, approval.vote.delegation
        if d is None:
            self.findings.append(
                f"{what} is cast for {vote.on_behalf_of} without a delegation signed by them."
            )
            return False
        if (d.delegator, d.delegate) != (vote.on_behalf_of, vote.approver):
            self.findings.append(
                f"{what} carries a delegation from {d.delegator} to {d.delegate}, "
                f"not from {vote.on_behalf_of} to {vote.approver}."
            )
            return False
        if not set(self.services) & set(d.services) or vote.gate not in d.gates:
            self.findings.append(
                f"{what} relies on {d.delegator}'s delegation, which does not cover "
                f"service {', '.join(self.services)} at gate {vote.gate}."
            )
            return False
        if approval.at > d.not_after:
            self.findings.append(
                f"{what} was counted at {_at(approval.at)}, after {d.delegator}'s delegation "
                f"ended ({_at(d.not_after)})."
            )
            return False
        return self.proof(d, d.delegator, f"{what}: the delegation by {d.delegator}", release_id="*")


class _Verifier(_Signatures):
    def __init__(self, trust: Trust, evidence: ReleaseEvidence) -> None:
        super().__init__(trust, evidence.release_id, evidence.request.requested_by, [evidence.service])
        self.ev = evidence

    # --- the request and change type -----------------------------------------------

    def request(self) -> None:
        request = self.ev.request
        if self.ev.request_hash != request.content_hash():
            self.findings.append("the request hash in the evidence is not the hash of its request.")
        self.proof(request, request.requested_by, f"the request by {request.requested_by}")
        if request.change_type is ChangeType.STANDARD:
            model = self.trust.change_model(request.change_model)
            if model is None:
                self.findings.append(
                    f"the standard change names change model {request.change_model!r}, "
                    f"which the catalog does not declare for {self.ev.service}."
                )
            elif request.requested_by not in model.requesters:
                self.findings.append(
                    f"{request.requested_by} may not request change model {model.name} in the catalog."
                )

    # --- gates -----------------------------------------------------------------------

    def gate(self, status: GateStatus) -> GateCheck:
        required, eligible = gate_policy(status.gate, self.ev.change_type, self.trust)
        expected = self.subjects(status.gate)
        if expected is not None and status.subject_hash not in expected:
            self.findings.append(
                f"gate {status.gate} is bound to {status.subject_hash[:12] or 'nothing'}, "
                f"not to the hash of what it approves."
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
            # Votes for a plan since amended count for nothing, but they are still someone's
            # signed word: a forged one in the record is a finding too.
            vote = approval.vote
            self.proof(
                vote, vote.approver, f"gate {status.gate}: {_who(vote)}'s voided {vote.decision.value}"
            )
        if status.state is GateState.APPROVED and vetoes:
            self.findings.append(
                f"gate {status.gate} is recorded approved although {', '.join(vetoes)} rejected it."
            )
        if status.state is GateState.APPROVED and len(members) < required:
            self.findings.append(
                f"gate {status.gate} is recorded approved with {len(members)} valid approval(s) "
                f"of the {required} the catalog requires."
            )
        if status.state is GateState.SKIPPED and required:
            self.findings.append(
                f"gate {status.gate} was skipped, but the catalog requires {required} approval(s) "
                f"for a {self.ev.change_type} change."
            )
        return GateCheck(
            gate=status.gate, state=status.state, required=required, approvals=len(members), approvers=members
        )

    def subjects(self, gate: Gate) -> set[str] | None:
        """The hashes a gate may be bound to; None when the evidence cannot say."""
        if gate in (Gate.REQUEST, Gate.RETRO):
            return {self.ev.request_hash}
        if gate is Gate.PLAN:
            return {self.ev.plan_hash} if self.ev.plan_hash else None
        return {stage_subject(self.ev.plan_hash, s.name) for s in self.ev.stages}

    def plan(self) -> None:
        if self.ev.plan is not None and self.ev.plan.content_hash() != self.ev.plan_hash:
            self.findings.append("the plan hash in the evidence is not the hash of its plan.")

    def gates_required(self, checks: Sequence[GateCheck]) -> None:
        """A release that reached production passed every gate its change type has."""
        went_live = self.ev.outcome in DEPLOYED or any(
            d.environment is Environment.PRODUCTION for d in self.ev.deploys
        )
        needed = [Gate.REQUEST, Gate.PLAN] if went_live else []
        if self.ev.outcome is Outcome.COMPLETED and self.ev.change_type is ChangeType.EMERGENCY:
            needed.append(Gate.RETRO)
        by_gate = {c.gate: c for c in checks}
        for gate in needed:
            required, _ = gate_policy(gate, self.ev.change_type, self.trust)
            check = by_gate.get(gate)
            if required and (check is None or check.state is not GateState.APPROVED):
                state = check.state.value if check else "missing"
                self.findings.append(
                    f"gate {gate} is {state}, but the release {self.ev.outcome or 'went live'} "
                    f"and the catalog requires {required} approval(s) there."
                )

    def stages(self) -> None:
        """Every stage passed on marginal or missing health was accepted by an eligible member."""
        _, eligible = gate_policy(Gate.MARGINAL, self.ev.change_type, self.trust)
        for stage in self.ev.stages:
            subject = stage_subject(self.ev.plan_hash, stage.name)
            accepted = {
                m
                for a in stage.decisions
                if (m := self.vote(a, Gate.MARGINAL, subject, eligible))
                and a.vote.decision is Decision.APPROVE
            }
            if stage.verdict in ACCEPTED_BY_A_HUMAN and not accepted:
                self.findings.append(
                    f"stage {stage.name} passed on {stage.verdict} health without a valid approval "
                    "by an eligible member."
                )

    # --- amendments and operator actions ------------------------------------------------

    def amendments(self) -> None:
        managers = self.trust.members(Role.RELEASE_MANAGERS)
        previous: str | None = None
        for i, record in enumerate(self.ev.amendments, start=1):
            amendment = record.amendment
            what = f"amendment {i} by {amendment.by}"
            self.proof(amendment, amendment.by, what)
            if amendment.by not in managers:
                self.findings.append(f"{what}: {amendment.by} is not a release manager of {self.ev.service}.")
            if record.plan_hash != amendment.plan.content_hash():
                self.findings.append(f"{what}: the recorded plan hash is not the hash of the amended plan.")
            if previous is not None and record.previous_hash != previous:
                self.findings.append(f"{what} does not follow the plan the previous amendment made.")
            previous = record.plan_hash
        if previous is not None and self.ev.plan_hash and previous != self.ev.plan_hash:
            self.findings.append("the release's plan is not the plan its last amendment made.")

    def action(self, action: OperatorAction, what: str) -> None:
        self.proof(action, action.by, what)
        role = OPERATOR_ROLE[action.action]
        if action.by not in self.trust.members(role):
            self.findings.append(
                f"{what}: {action.by} is not one of the {role.value.replace('_', ' ')} of {self.ev.service}."
            )
        if action.action is OperatorVerb.OVERRIDE_WINDOW and action.by == self.requester:
            self.findings.append(
                f"{what}: {action.by} requested this release and cannot override its windows."
            )

    def actions(self) -> None:
        for record in self.ev.actions:
            self.action(record.action, f"{record.action.action} by {record.action.by}")
        for wait in self.ev.window_waits:
            override = wait.override
            if override is None:
                continue
            what = f"the override of window {wait.window!r} before {wait.step} by {override.by}"
            # An accepted override is also among the actions: judge who sent it once, and here
            # only whether it let through the wait it is recorded on.
            if override not in (r.action for r in self.ev.actions):
                self.action(override, what)
            if (override.window, override.step) != (wait.window, wait.step):
                self.findings.append(
                    f"{what} names window {override.window!r} and step {override.step}, "
                    "not the ones it let through."
                )


def _at(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%SZ")


def _parse_envelope(envelope: Mapping[str, Any] | str | bytes) -> DsseEnvelope:
    data = envelope if isinstance(envelope, Mapping) else json.loads(envelope)
    return DsseEnvelope.model_validate(data)


def _envelope_key(env: DsseEnvelope, body: bytes, evidence_keys: Iterable[str]) -> str | None:
    """The evidence key that signed the envelope, trying every key (key ids are only hints)."""
    message = pae(env.payload_type, body)
    for signature in env.signatures:
        try:
            sig = base64.b64encode(b64decode(signature.sig)).decode()
        except (binascii.Error, ValueError):
            continue
        for key in evidence_keys:
            if verify_signature(key, sig, message):
                return key
    return None


def _subject_findings(subject: Any, artifacts: Mapping[str, str]) -> list[str]:
    listed: list[tuple[str, str]] = []
    for item in subject if isinstance(subject, list) else []:
        if isinstance(item, dict) and isinstance(item.get("digest"), dict):
            listed.append((str(item.get("name", "")), str(item["digest"].get("sha256", ""))))
    findings = []
    for name, sha in artifacts.items():
        if any(sha == digest for _, digest in listed):
            continue
        base = name.rsplit("/", 1)[-1]
        same = [d for n, d in listed if n.rsplit("/", 1)[-1] == base]
        said = f"the evidence says {same[0][:16]}…" if same else "the evidence lists no artifact of that name"
        findings.append(
            f"artifact {name} has sha256 {sha[:16]}…, which is not a subject of the evidence ({said})."
        )
    return findings


def verify_evidence(
    envelope: Mapping[str, Any] | str | bytes,
    trusts: Mapping[str, Trust],
    evidence_keys: Sequence[str],
    artifacts: Mapping[str, str] | None = None,
) -> EvidenceReport:
    """Check release evidence offline against the catalog (`trusts` per service, `evidence_keys`
    the public keys the catalog declares for the workers) and, when given, artifact sha256
    digests by name. Every problem found is a finding; ok means none.
    """
    findings: list[str] = []

    def report(**fields: Any) -> EvidenceReport:
        return EvidenceReport(ok=not findings, findings=findings, **fields)

    try:
        env = _parse_envelope(envelope)
    except (ValueError, ValidationError) as exc:
        detail = one_line(exc) if isinstance(exc, ValidationError) else str(exc)
        findings.append(f"the file is not a DSSE envelope ({detail}).")
        return report()
    try:
        body = b64decode(env.payload)
    except (binascii.Error, ValueError):
        findings.append("the envelope's payload is not base64.")
        return report()

    key = _envelope_key(env, body, evidence_keys)
    if not evidence_keys:
        findings.append(
            "the catalog declares no evidence key, so the envelope's signature cannot be checked."
        )
    elif key is None:
        findings.append(
            "the envelope's signature does not verify with any evidence key of the catalog "
            "(the payload or signature was altered, or another key signed it)."
        )
    if env.payload_type != PAYLOAD_TYPE:
        findings.append(f"the payload type is {env.payload_type!r}, not {PAYLOAD_TYPE}.")
    try:
        statement = json.loads(body)
    except ValueError:
        findings.append("the envelope's payload is not JSON.")
        return report()
    if not isinstance(statement, dict):
        findings.append("the envelope's payload is not an in-toto statement.")
        return report()
    if statement.get("_type") != STATEMENT_TYPE:
        findings.append(f"the statement's _type is {statement.get('_type')!r}, not {STATEMENT_TYPE}.")
    if statement.get("predicateType") == TRAIN_PREDICATE_TYPE:
        # Imported here: the train's verification builds on this module's.
        from relman.identity.evidence_train import verify_train_statement

        findings += _subject_findings(statement.get("subject"), artifacts or {})
        return verify_train_statement(statement, trusts, key, findings)
    if statement.get("predicateType") != PREDICATE_TYPE:
        findings.append(f"the predicate type is {statement.get('predicateType')!r}, not {PREDICATE_TYPE}.")
    findings += _subject_findings(statement.get("subject"), artifacts or {})
    try:
        ev = ReleaseEvidence.model_validate(statement.get("predicate"))
    except ValidationError as exc:
        findings.append(f"the predicate is not relman release evidence ({one_line(exc)}).")
        return report()

    signatures = 1 if key else 0
    head = dict(
        release_id=ev.release_id,
        service=ev.service,
        version=ev.version,
        outcome=ev.outcome,
        close_code=ev.close_code,
        key_id=key_id(key) if key else None,
    )
    if ev.package is not None:
        expected = sorted((a.name, a.sha256) for a in ev.package.artifacts)
        listed = sorted(
            (str(s.get("name")), str(s.get("digest", {}).get("sha256")))
            for s in statement.get("subject") or []
            if isinstance(s, dict)
        )
        if listed != expected:
            findings.append("the statement's subject is not the package's artifacts.")
    trust = trusts.get(ev.service)
    if trust is None:
        findings.append(f"service {ev.service} is not in the catalog, so no signature inside can be checked.")
        return report(signatures=signatures, **head)

    check = _Verifier(trust, ev)
    check.request()
    check.plan()
    gates = [check.gate(g) for g in ev.gates]
    check.gates_required(gates)
    check.stages()
    check.amendments()
    check.actions()
    findings += list(dict.fromkeys(check.findings))
    return report(signatures=signatures + len(check.valid), gates=gates, **head)
