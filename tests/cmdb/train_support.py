"""A release train built by hand for the CMDB and evidence tests: db-migration, api (depends on
db-migration) and worker (depends on api), as issue 13's three-component train.

Signed with real keys as the train workflow would have accepted it: rita requests; the train's
request and plan gates take alice (the CAB of db-migration and api) and bob (worker's CAB);
carol accepts api's marginal canary on the api component.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from relman.contracts import (
    Approval,
    Artifact,
    CloseCode,
    Component,
    Decision,
    DeployRecord,
    Environment,
    Gate,
    GateState,
    GateStatus,
    HealthReport,
    OperatorAction,
    OperatorVerb,
    Outcome,
    PersonTrust,
    ReleasePackage,
    ReleasePlan,
    Risk,
    Role,
    RolloutStage,
    StageStatus,
    Trust,
    Verdict,
    Vote,
)
from relman.contracts.release import ActionRecord
from relman.contracts.train import (
    ComponentEvidence,
    ComponentRecord,
    TrainCloseInput,
    TrainComponent,
    TrainEvidenceInput,
    TrainRequest,
)
from relman.identity.evidence import stage_subject
from relman.identity.evidence_train import plan_digest
from relman.identity.keys import Signer
from relman.identity.signing import Signable, seal

TRAIN_ID = "train-checkout-2026-12"
T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
SERVICES = ["db-migration", "api", "worker"]
VERSIONS = {"db-migration": "3.0.0", "api": "2.1.0", "worker": "1.4.0"}
PEOPLE = ["rita", "alice", "bob", "carol", "oscar", "mallory"]


def artifact_bytes(service: str) -> bytes:
    return f"{service} {VERSIONS[service]} wheel\n".encode()


def artifact_name(service: str) -> str:
    return f"{service}-{VERSIONS[service]}.whl"


def train_request(**kw: Any) -> TrainRequest:
    return TrainRequest(
        train="checkout-2026-12",
        components=[
            TrainComponent(service="db-migration", version=VERSIONS["db-migration"], commit="aaaaaaa"),
            TrainComponent(service="api", version=VERSIONS["api"], commit="bbbbbbb"),
            TrainComponent(service="worker", version=VERSIONS["worker"], commit="ccccccc"),
        ],
        requested_by="rita",
        title="checkout of December",
        **kw,
    )


def component_id(service: str) -> str:
    return f"{TRAIN_ID}.{service}"


@dataclass
class TrainCast:
    signers: dict[str, Signer] = field(default_factory=lambda: {n: Signer.generate(n) for n in PEOPLE})
    worker: Signer = field(default_factory=lambda: Signer.generate("worker"))

    def trust(self, service: str, *, cab: list[str] | None = None, quorum: int = 1) -> Trust:
        default = ["bob"] if service == "worker" else ["alice", "carol"]
        return Trust(
            people=[PersonTrust(name=n, keys=[s.public]) for n, s in self.signers.items()],
            roles={Role.CAB: cab if cab is not None else default, Role.OPERATORS: ["oscar"]},
            quorum=quorum,
        )

    def trusts(self, **override: Trust) -> dict[str, Trust]:
        return {s: override.get(s.replace("-", "_")) or self.trust(s) for s in SERVICES}

    def sign(self, message: Signable, who: str, release_id: str = TRAIN_ID) -> Any:
        return seal(message, release_id, self.signers[who], now=T0)

    def vote(self, who: str, gate: Gate, subject: str, release_id: str = TRAIN_ID) -> Approval:
        vote = Vote(gate=gate, approver=who, decision=Decision.APPROVE, approved_hash=subject)
        return Approval(vote=self.sign(vote, who, release_id), at=T0 + timedelta(hours=1))


def package(service: str) -> ReleasePackage:
    digest = hashlib.sha256(artifact_bytes(service)).hexdigest()
    return ReleasePackage(
        service=service,
        version=VERSIONS[service],
        path=f"/srv/packages/{service}",
        artifacts=[Artifact(name=artifact_name(service), sha256=digest, size=len(artifact_bytes(service)))],
        digest=hashlib.sha256(digest.encode()).hexdigest(),
    )


def component_plan(service: str) -> ReleasePlan:
    return ReleasePlan(
        components=[Component(name=service, version=VERSIONS[service])],
        stages=[RolloutStage(name="canary", percent=10, bake_seconds=60)],
    )


def train_evidence_input(cast: TrainCast, **kw: Any) -> TrainEvidenceInput:
    """The train completed: every gate passed, api's marginal canary accepted by carol."""
    request = cast.sign(train_request(), "rita")
    plan = {"components": {s: component_plan(s).model_dump(mode="json") for s in SERVICES}}
    plan_hash = plan_digest(plan)
    request_hash = request.content_hash()
    gates = [
        GateStatus(
            gate=gate,
            state=GateState.APPROVED,
            required=1,
            eligible=["alice", "bob", "carol"],
            subject_hash=subject,
            votes=[cast.vote("alice", gate, subject), cast.vote("bob", gate, subject)],
        )
        for gate, subject in ((Gate.REQUEST, request_hash), (Gate.PLAN, plan_hash))
    ]
    components = []
    for service in SERVICES:
        plan_s = component_plan(service)
        decisions = []
        verdict = Verdict.PASS
        if service == "api":
            subject = stage_subject(plan_s.content_hash(), "canary")
            decisions = [cast.vote("carol", Gate.MARGINAL, subject, component_id(service))]
            verdict = Verdict.MARGINAL
        components.append(
            ComponentEvidence(
                service=service,
                release_id=component_id(service),
                plan=plan_s,
                plan_hash=plan_s.content_hash(),
                package=package(service),
                stages=[
                    StageStatus(
                        name="canary",
                        percent=10,
                        verdict=verdict,
                        health=HealthReport(verdict=verdict, error_rate=0.01, samples=40),
                        decisions=decisions,
                    )
                ],
                deploys=[
                    DeployRecord(environment=Environment.STAGING, version=VERSIONS[service], at=T0),
                    DeployRecord(environment=Environment.PRODUCTION, version=VERSIONS[service], at=T0),
                ],
            )
        )
    fields: dict[str, Any] = dict(
        release_id=TRAIN_ID,
        step="evidence",
        request=request,
        risk=Risk.MEDIUM,
        outcome=Outcome.COMPLETED,
        close_code=CloseCode.SUCCESSFUL,
        plan=plan,
        plan_hash=plan_hash,
        gates=gates,
        components=components,
    )
    fields.update(kw)
    return TrainEvidenceInput.model_validate(fields)


def abort_action(cast: TrainCast, who: str = "oscar") -> ActionRecord:
    action = cast.sign(OperatorAction(action=OperatorVerb.ABORT, by=who, reason="worker errors"), who)
    return ActionRecord(action=action, at=T0 + timedelta(hours=2))


def close_input(step: str = "close", **kw: Any) -> TrainCloseInput:
    """The train completed: every component live, one hour apart."""
    fields: dict[str, Any] = dict(
        release_id=TRAIN_ID,
        step=step,
        request=train_request(),
        risk=Risk.MEDIUM,
        outcome=Outcome.COMPLETED,
        close_code=CloseCode.SUCCESSFUL,
        components=[
            ComponentRecord(
                service=s,
                version=VERSIONS[s],
                previous_version="0.9.0",
                artifact_digest=package(s).digest,
                deployed=True,
                outcome=Outcome.COMPLETED,
                production_at=T0 + timedelta(hours=i + 1),
            )
            for i, s in enumerate(SERVICES)
        ],
        production_at=T0 + timedelta(hours=3),
    )
    fields.update(kw)
    return TrainCloseInput.model_validate(fields)
