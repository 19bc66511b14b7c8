"""A closed release built by hand with real keys and real signatures, for the evidence tests.

Everything is signed as the workflow would have accepted it: the requester signs the request,
CAB members their votes (one through a delegation), a release manager an amendment, an
operator and a change manager their actions. `Cast.trust()` is the catalog's view.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from relman.contracts import (
    GO_LIVE,
    ActionRecord,
    AmendmentRecord,
    Approval,
    Artifact,
    ChangeType,
    Component,
    Decision,
    Delegation,
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
    Phase,
    PhaseTransition,
    PlanAmendment,
    ReleasePackage,
    ReleasePlan,
    ReleaseRequest,
    ReleaseStatus,
    Risk,
    Role,
    RolloutStage,
    StageStatus,
    SuiteResult,
    TestReport,
    Trust,
    Verdict,
    Vote,
    WindowWait,
)
from relman.identity.evidence import stage_subject
from relman.identity.keys import Signer
from relman.identity.signing import seal

M = TypeVar("M", Vote, ReleaseRequest, PlanAmendment, OperatorAction)

RELEASE_ID = "release-greeter-1.1.0"
T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
ARTIFACT = b"greeter 1.1.0 wheel bytes\n"
PEOPLE = ["rita", "alice", "bob", "carol", "dave", "max", "oscar", "cora"]
"""rita requests; alice, bob, carol are the CAB; dave votes for bob; max amends;
oscar operates; cora manages changes (window overrides)."""


@dataclass
class Cast:
    signers: dict[str, Signer] = field(default_factory=lambda: {n: Signer.generate(n) for n in PEOPLE})
    worker: Signer = field(default_factory=lambda: Signer.generate("worker"))

    def trust(self, *, cab: list[str] | None = None, quorum: int = 2) -> Trust:
        return Trust(
            people=[PersonTrust(name=n, keys=[s.public]) for n, s in self.signers.items()],
            roles={
                Role.CAB: cab if cab is not None else ["alice", "bob", "carol"],
                Role.RELEASE_MANAGERS: ["max"],
                Role.OPERATORS: ["oscar"],
                Role.CHANGE_MANAGERS: ["cora"],
            },
            quorum=quorum,
        )

    def sign(self, message: M, who: str, at: datetime) -> M:
        return seal(message, RELEASE_ID, self.signers[who], now=at)

    def vote(
        self, who: str, gate: Gate, subject: str, at: datetime, *, on_behalf_of: str | None = None
    ) -> Approval:
        delegation = None
        if on_behalf_of is not None:
            delegation = seal(
                Delegation(
                    delegator=on_behalf_of,
                    delegate=who,
                    services=["greeter"],
                    gates=[Gate.PLAN],
                    not_after=T0 + timedelta(days=7),
                ),
                "*",
                self.signers[on_behalf_of],
                now=T0 - timedelta(days=1),
            )
        vote = Vote(
            gate=gate,
            approver=who,
            decision=Decision.APPROVE,
            approved_hash=subject,
            on_behalf_of=on_behalf_of,
            delegation=delegation,
            comment=f"{who} looked at it",
        )
        return Approval(vote=self.sign(vote, who, at), at=at)


def artifact_file(directory: Path) -> Path:
    path = directory / "greeter-1.1.0.whl"
    path.write_bytes(ARTIFACT)
    return path


def closed_release(cast: Cast) -> ReleaseStatus:
    """A normal change of greeter 1.1.0 that went through every gate and completed."""
    request = cast.sign(
        ReleaseRequest(
            service="greeter",
            version="1.1.0",
            change_type=ChangeType.NORMAL,
            requested_by="rita",
            title="greeter 1.1.0: friendlier greetings",
            commit="0123456789abcdef0123456789abcdef01234567",
        ),
        "rita",
        T0,
    )
    stages = [
        RolloutStage(name="canary", percent=5, bake_seconds=60),
        RolloutStage(name="half", percent=50, bake_seconds=60),
    ]
    plan1 = ReleasePlan(components=[Component(name="greeter", version="1.1.0")], stages=stages)
    plan2 = plan1.model_copy(
        update={"revision": 2, "stages": [stages[0].model_copy(update={"bake_seconds": 120}), stages[1]]}
    )
    amendment = cast.sign(
        PlanAmendment(by="max", plan=plan2, reason="bake the canary longer"), "max", T0 + timedelta(hours=2)
    )
    request_hash, plan_hash = request.content_hash(), plan2.content_hash()
    at = T0 + timedelta(hours=1)
    request_gate = GateStatus(
        gate=Gate.REQUEST,
        state=GateState.APPROVED,
        required=2,
        eligible=["alice", "bob", "carol"],
        subject_hash=request_hash,
        votes=[
            cast.vote("alice", Gate.REQUEST, request_hash, at),
            cast.vote("bob", Gate.REQUEST, request_hash, at),
        ],
        closed_at=at,
    )
    at = T0 + timedelta(hours=3)
    plan_gate = request_gate.model_copy(
        update={
            "gate": Gate.PLAN,
            "subject_hash": plan_hash,
            "votes": [
                cast.vote("alice", Gate.PLAN, plan_hash, at),
                cast.vote("dave", Gate.PLAN, plan_hash, at, on_behalf_of="bob"),
            ],
            "closed_at": at,
        }
    )
    at = T0 + timedelta(hours=5)
    canary = stage_subject(plan_hash, "canary")
    marginal = cast.vote("carol", Gate.MARGINAL, canary, at)
    marginal_gate = GateStatus(
        gate=Gate.MARGINAL,
        state=GateState.APPROVED,
        required=1,
        eligible=["alice", "bob", "carol"],
        subject_hash=canary,
        votes=[marginal],
        closed_at=at,
    )
    pause = cast.sign(
        OperatorAction(action=OperatorVerb.PAUSE, by="oscar", reason="watch the canary"),
        "oscar",
        T0 + timedelta(hours=4),
    )
    override = cast.sign(
        OperatorAction(
            action=OperatorVerb.OVERRIDE_WINDOW,
            by="cora",
            reason="the fix must ship before the freeze",
            window="friday-blackout",
            step=GO_LIVE,
        ),
        "cora",
        T0 + timedelta(hours=6),
    )
    digest = hashlib.sha256(ARTIFACT).hexdigest()
    return ReleaseStatus(
        release_id=RELEASE_ID,
        request=request,
        phase=Phase.CLOSED,
        outcome=Outcome.COMPLETED,
        risk=Risk.MEDIUM,
        gates={Gate.REQUEST: request_gate, Gate.PLAN: plan_gate, Gate.MARGINAL: marginal_gate},
        plan=plan2,
        plan_hash=plan_hash,
        package=ReleasePackage(
            service="greeter",
            version="1.1.0",
            path="/srv/packages/greeter/1.1.0",
            artifacts=[Artifact(name="greeter-1.1.0.whl", sha256=digest, size=len(ARTIFACT))],
            digest=hashlib.sha256(digest.encode()).hexdigest(),
        ),
        stages=[
            StageStatus(
                name="canary",
                percent=5,
                verdict=Verdict.MARGINAL,
                health=HealthReport(verdict=Verdict.MARGINAL, error_rate=0.012, samples=40),
                decisions=[marginal],
            ),
            StageStatus(name="half", percent=50, verdict=Verdict.PASS),
        ],
        history=[PhaseTransition(phase=Phase.REQUESTED, at=T0), PhaseTransition(phase=Phase.CLOSED, at=at)],
        tests=TestReport(suites=[SuiteResult(name="unit", passed=12)], accepted=True),
        deploys=[
            DeployRecord(environment=Environment.STAGING, version="1.1.0", at=T0 + timedelta(hours=3)),
            DeployRecord(
                environment=Environment.PRODUCTION,
                version="1.1.0",
                previous_version="1.0.0",
                at=T0 + timedelta(hours=6),
            ),
        ],
        amendments=[
            AmendmentRecord(
                amendment=amendment,
                at=T0 + timedelta(hours=2),
                previous_hash=plan1.content_hash(),
                plan_hash=plan_hash,
                changes=["stage canary: bake 60s -> 120s"],
            )
        ],
        actions=[
            ActionRecord(action=pause, at=T0 + timedelta(hours=4)),
            ActionRecord(action=override, at=T0 + timedelta(hours=6)),
        ],
        window_waits=[
            WindowWait(
                step=GO_LIVE,
                window="friday-blackout",
                reason="blackout until Monday",
                since=T0 + timedelta(hours=5, minutes=30),
                until=T0 + timedelta(hours=6),
                override=override,
            )
        ],
    )
