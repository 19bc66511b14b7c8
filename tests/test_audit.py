"""The audit trail from the CMDB's records and its cross-check against Temporal: pure.

The release is the evidence tests' one (real keys, real signatures); the CMDB's change record
and audit rows are built by hand as the store returns them (tests/audit_support.py).
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest

from relman.audit import AuditTrail, cross_check, read_evidence, trail_from_cmdb
from relman.cmdb.records import ApprovalRecord, AuditEntry, ChangeDetail
from relman.contracts import (
    CloseCode,
    Decision,
    DeployRecord,
    Environment,
    Gate,
    Outcome,
    Phase,
    ReleaseStatus,
    Verdict,
)
from relman.identity.evidence import sign_envelope, verify_evidence
from tests.audit_support import CLOSED_AT, envelope_of, records, reviewed_release
from tests.identity.evidence_support import RELEASE_ID, T0, Cast


@pytest.fixture(scope="module")
def cast() -> Cast:
    return Cast()


@pytest.fixture(scope="module")
def status(cast: Cast) -> ReleaseStatus:
    return reviewed_release(cast)


@pytest.fixture(scope="module")
def envelope(status: ReleaseStatus, cast: Cast) -> dict[str, Any]:
    return envelope_of(status, cast)


@pytest.fixture
def cmdb(status: ReleaseStatus, envelope: dict[str, Any]) -> tuple[ChangeDetail, list[AuditEntry]]:
    return records(status, envelope)


@pytest.fixture
def trail(cmdb: tuple[ChangeDetail, list[AuditEntry]], envelope: dict[str, Any]) -> AuditTrail:
    change, rows = cmdb
    return trail_from_cmdb(change, rows, envelope)


def findings(change: ChangeDetail, rows: list[AuditEntry], envelope: dict[str, Any] | None) -> list[str]:
    return trail_from_cmdb(change, rows, envelope).findings


def payload(envelope: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(envelope["payload"]))


# --- the trail ---------------------------------------------------------------------------


def test_the_trail_of_a_closed_release(trail: AuditTrail, status: ReleaseStatus, cast: Cast) -> None:
    assert trail.findings == [] and trail.ok
    r = trail.request
    assert (r.requested_by, r.service, r.version, r.change_type) == ("rita", "greeter", "1.1.0", "normal")
    assert r.key_id == cast.signers["rita"].key_id and r.request_hash == status.request.content_hash()
    assert r.signed_at == T0

    assert [g.gate for g in trail.gates] == [Gate.REQUEST, Gate.PLAN, Gate.MARGINAL]
    plan = trail.gates[1]
    assert (plan.state, plan.required, plan.subject_hash) == ("approved", 2, status.plan_hash)
    alice, dave = plan.votes
    assert (alice.approver, alice.decision, alice.key_id) == (
        "alice",
        Decision.APPROVE,
        cast.signers["alice"].key_id,
    )
    assert alice.at == T0 + timedelta(hours=3) and alice.subject_hash == status.plan_hash
    assert (dave.approver, dave.on_behalf_of, dave.member) == ("dave", "bob", "dave for bob")
    assert dave.key_id == cast.signers["dave"].key_id
    assert dave.delegation_key_id == cast.signers["bob"].key_id
    assert all(v.recorded_in == ["evidence", "change record"] for g in trail.gates for v in g.votes)

    [amendment] = trail.amendments
    assert (amendment.by, amendment.revision, amendment.key_id) == ("max", 2, cast.signers["max"].key_id)
    assert amendment.changes == ["stage canary: bake 60s -> 120s"]
    assert amendment.recorded_in == ["evidence", "audit log"]
    assert (trail.plan_revision, trail.plan_hash) == (2, status.plan_hash)

    assert status.package is not None and trail.package is not None
    assert trail.package.digest == status.package.digest
    assert [(a.name, a.sha256) for a in trail.package.artifacts] == [
        (a.name, a.sha256) for a in status.package.artifacts
    ]
    assert trail.package.recorded_in == ["evidence", "change record"]
    assert trail.tests is not None and trail.tests.accepted and trail.tests.suites[0].passed == 12

    canary, half = trail.stages
    assert (canary.name, canary.verdict, half.verdict) == ("canary", Verdict.MARGINAL, Verdict.PASS)
    assert canary.health is not None and canary.health.error_rate == 0.012
    assert [(d.approver, d.key_id) for d in canary.decisions] == [("carol", cast.signers["carol"].key_id)]

    [wait] = trail.window_waits
    assert (wait.window, wait.step, wait.overridden_by) == ("friday-blackout", "go-live", "cora")
    [override] = trail.overrides
    assert (override.by, override.key_id) == ("cora", cast.signers["cora"].key_id)
    assert override.reason == "the fix must ship before the freeze"
    assert override.recorded_in == ["evidence", "audit log"]
    assert [(a.action, a.by) for a in trail.actions] == [("pause", "oscar")]

    assert [(d.environment, d.version) for d in trail.deploys] == [
        ("staging", "1.1.0"),
        ("production", "1.1.0"),
    ]
    assert trail.review is not None and trail.review.kpis["error_rate"] == 0.004
    [feedback] = trail.review.feedback
    assert (feedback.by, feedback.rating, feedback.key_id) == ("oscar", 4, cast.signers["oscar"].key_id)
    c = trail.close
    assert (c.outcome, c.close_code, c.deployed_version, c.previous_version) == (
        "completed",
        CloseCode.SUCCESSFUL,
        "1.1.0",
        "1.0.0",
    )
    assert trail.evidence.present and trail.evidence.key_id == cast.worker.key_id
    assert [row.action for row in trail.log] == [
        "change.open",
        "plan.amended",
        "window.overridden",
        "change.close",
        "evidence.write",
    ]


def test_the_trail_is_json(trail: AuditTrail) -> None:
    data = json.loads(trail.model_dump_json())
    assert list(data)[:4] == ["release_id", "request", "gates", "plan_hash"]
    assert data["gates"][1]["votes"][1]["on_behalf_of"] == "bob"
    assert AuditTrail.model_validate(data) == trail


def test_verification_findings_join_the_trail(
    cmdb: tuple[ChangeDetail, list[AuditEntry]], envelope: dict[str, Any], cast: Cast
) -> None:
    change, rows = cmdb
    good = verify_evidence(envelope, {"greeter": cast.trust()}, [cast.worker.public])
    trail = trail_from_cmdb(change, rows, envelope, report=good)
    assert trail.findings == [] and trail.evidence.verified is True and trail.evidence.signatures == 11
    # A catalog in which bob is no longer on the CAB: his request vote no longer counts.
    later = verify_evidence(envelope, {"greeter": cast.trust(cab=["alice", "carol"])}, [cast.worker.public])
    trail = trail_from_cmdb(change, rows, envelope, report=later)
    assert trail.evidence.verified is False
    assert (
        "evidence: gate request is recorded approved with 1 valid approval(s) of the 2 the catalog requires."
        in trail.findings
    )


# --- findings: the CMDB against itself ---------------------------------------------------


def test_an_approval_in_the_change_record_but_not_in_the_evidence(
    cmdb: tuple[ChangeDetail, list[AuditEntry]], envelope: dict[str, Any], status: ReleaseStatus
) -> None:
    change, rows = cmdb
    forged = ApprovalRecord(
        gate="plan",
        approver="mallory",
        on_behalf_of=None,
        decision="approve",
        comment="",
        approved_hash=status.plan_hash,
        at=T0 + timedelta(hours=4),
    )
    change = change.model_copy(update={"approvals": [*change.approvals, forged]})
    trail = trail_from_cmdb(change, rows, envelope)
    assert trail.findings == [
        f"gate plan: mallory's approve of {status.plan_hash[:16]} (2025-06-02 13:00:00Z) is in the change "
        "record but not in the evidence."
    ]
    mallory = trail.gates[1].votes[-1]
    assert (mallory.approver, mallory.recorded_in, mallory.key_id) == ("mallory", ["change record"], None)


def test_an_approval_in_the_evidence_but_not_in_the_change_record(
    cmdb: tuple[ChangeDetail, list[AuditEntry]], envelope: dict[str, Any], status: ReleaseStatus
) -> None:
    change, rows = cmdb
    change = change.model_copy(update={"approvals": [a for a in change.approvals if a.approver != "dave"]})
    assert findings(change, rows, envelope) == [
        f"gate plan: dave for bob's approve of {status.plan_hash[:16]} (2025-06-02 12:00:00Z) is in the "
        "evidence but not in the change record."
    ]


def test_an_approval_recorded_differently(
    cmdb: tuple[ChangeDetail, list[AuditEntry]], envelope: dict[str, Any], status: ReleaseStatus
) -> None:
    change, rows = cmdb
    changed = [
        a.model_copy(update={"decision": "reject", "at": a.at + timedelta(minutes=5)})
        if a.approver == "alice" and a.gate == "plan"
        else a
        for a in change.approvals
    ]
    what = f"gate plan: alice's reject of {status.plan_hash[:16]}"
    assert findings(change.model_copy(update={"approvals": changed}), rows, envelope) == [
        f"{what} is recorded as approve in the evidence.",
        f"{what} is counted at 2025-06-02 12:05:00Z in the change record, "
        "2025-06-02 12:00:00Z in the evidence.",
    ]


def test_an_amendment_or_override_missing_from_one_side(
    cmdb: tuple[ChangeDetail, list[AuditEntry]], envelope: dict[str, Any]
) -> None:
    change, rows = cmdb
    without = [r for r in rows if r.action not in ("plan.amended", "window.overridden")]
    assert findings(change, without, envelope) == [
        "the amendment to revision 2 by max is in the evidence but not in the audit log.",
        "cora's override of window 'friday-blackout' before go-live is in the evidence "
        "but not in the audit log.",
    ]
    extra = rows[1].model_copy(
        update={"actor": "zoe", "detail": {**rows[1].detail, "revision": 3}, "idempotency_key": "x/amend-3"}
    )
    sneaky = rows[2].model_copy(update={"actor": "mallory", "detail": {**rows[2].detail, "window": "freeze"}})
    trail = trail_from_cmdb(change, [*rows, extra, sneaky], envelope)
    assert trail.findings == [
        "the amendment to revision 3 by zoe (2025-06-02 11:00:00Z) is in the audit log "
        "but not in the evidence.",
        "mallory's override of window 'freeze' before go-live (2025-06-02 11:00:00Z) is in the audit log but "
        "not in the evidence.",
    ]
    assert [a.by for a in trail.amendments] == ["max", "zoe"]
    assert [o.by for o in trail.overrides] == ["mallory", "cora"]


def test_close_code_digest_and_version_disagree(
    cmdb: tuple[ChangeDetail, list[AuditEntry]], envelope: dict[str, Any], status: ReleaseStatus
) -> None:
    change, rows = cmdb
    assert status.package is not None
    change = change.model_copy(
        update={"close_code": CloseCode.SUCCESSFUL_WITH_ISSUES, "artifact_digest": "f" * 64}
    )
    rows = [
        r.model_copy(update={"detail": {**r.detail, "deployed_version": "1.1.1"}})
        if r.action == "change.close"
        else r
        for r in rows
    ]
    assert findings(change, rows, envelope) == [
        "the change record's close code is successful_with_issues, the evidence's successful.",
        f"the change record's artifact digest is {'f' * 64}, the evidence's package digest "
        f"{status.package.digest}.",
        "the change record's close code is successful_with_issues, the audit log's change.close row says "
        "successful.",
        "the CMDB records version 1.1.1 as deployed, the evidence's last production deploy is 1.1.0.",
    ]


def test_the_request_disagrees(cmdb: tuple[ChangeDetail, list[AuditEntry]], envelope: dict[str, Any]) -> None:
    change, rows = cmdb
    change = change.model_copy(update={"requested_by": "zoe", "version": "1.1.1"})
    assert findings(change, rows, envelope) == [
        "the change record's version is '1.1.1', the evidence's '1.1.0'.",
        "the change record's requester is 'zoe', the evidence's 'rita'.",
    ]


def test_evidence_missing_unreadable_or_swapped(
    cmdb: tuple[ChangeDetail, list[AuditEntry]], envelope: dict[str, Any], cast: Cast
) -> None:
    change, rows = cmdb
    trail = trail_from_cmdb(change, rows, None)
    assert trail.findings == ["the change is closed, but the CMDB holds no release evidence for it."]
    assert not trail.evidence.present
    # Not closed yet: no evidence is expected.
    assert (
        findings(change.model_copy(update={"closed_at": None, "status": "in_progress"}), rows[:1], None) == []
    )

    garbage = {**envelope, "payload": base64.b64encode(b"not json").decode()}
    got = findings(change, rows, garbage)
    assert got[0].startswith("the stored evidence has sha256 ")
    assert (
        got[1] == "the stored evidence cannot be read: it is not a DSSE envelope of JSON (JSONDecodeError)."
    )

    statement = payload(envelope)
    statement["predicate"]["gates"][0]["votes"].pop()
    resigned = sign_envelope(statement, cast.worker)
    assert findings(change, rows, resigned)[0].endswith(" when it was written.")


def test_read_evidence_names_the_problem(envelope: dict[str, Any]) -> None:
    assert read_evidence(envelope).release_id == RELEASE_ID
    statement = payload(envelope)
    statement["predicateType"] = "https://example.com/other"
    other = {**envelope, "payload": base64.b64encode(json.dumps(statement).encode()).decode()}
    with pytest.raises(ValueError, match="not relman release evidence"):
        read_evidence(other)


def test_cmdb_only_without_evidence(
    cmdb: tuple[ChangeDetail, list[AuditEntry]], status: ReleaseStatus
) -> None:
    change, rows = cmdb
    trail = trail_from_cmdb(change, [r for r in rows if r.action != "evidence.write"], None)
    # Votes, amendments, overrides, package digest and close come from the change record and log.
    assert [(v.approver, v.key_id, v.recorded_in) for v in trail.gates[0].votes] == [
        ("alice", None, ["change record"]),
        ("bob", None, ["change record"]),
    ]
    assert trail.gates[1].state is None
    assert [(a.by, a.revision, a.recorded_in) for a in trail.amendments] == [("max", 2, ["audit log"])]
    assert trail.plan_hash == status.plan_hash
    assert [(o.by, o.window) for o in trail.overrides] == [("cora", "friday-blackout")]
    assert trail.package is not None and trail.package.artifacts == []
    assert trail.tests is None and trail.stages == [] and trail.deploys == []
    assert trail.close.deployed_version == "1.1.0"
    # Nothing for Temporal to disagree with: what the CMDB has matches the status.
    assert cross_check(trail, status) == []


# --- against Temporal ------------------------------------------------------------------


def test_cross_check_of_a_matching_release(trail: AuditTrail, status: ReleaseStatus) -> None:
    assert cross_check(trail, status) == []


def test_cross_check_names_every_mismatch(trail: AuditTrail, status: ReleaseStatus) -> None:
    plan = status.gates[Gate.PLAN]
    assert status.package is not None
    other = status.model_copy(
        update={
            "outcome": Outcome.ROLLED_BACK,
            "plan_hash": "e" * 64,
            "gates": {**status.gates, Gate.PLAN: plan.model_copy(update={"votes": plan.votes[:1]})},
            "package": status.package.model_copy(update={"digest": "d" * 64}),
            "deploys": [
                *status.deploys,
                DeployRecord(environment=Environment.PRODUCTION, version="1.0.0", at=CLOSED_AT),
            ],
            "stages": [status.stages[0].model_copy(update={"verdict": Verdict.FAIL})],
            "amendments": [],
            "actions": status.actions[:1],
            "kpis": {"error_rate": 0.5},
        }
    )
    assert status.package is not None
    assert cross_check(trail, other) == [
        "outcome: the CMDB says completed, Temporal rolled_back.",
        "close code: the CMDB says successful, but Temporal's outcome rolled_back closes as rolled_back.",
        f"plan hash: the CMDB has {status.plan_hash[:16]}, Temporal {'e' * 16}.",
        "gate plan: the CMDB counts 2 approval(s) (alice, dave for bob), Temporal 1 (alice).",
        f"artifact digest: the CMDB has {status.package.digest}, Temporal {'d' * 64}.",
        "deployed version: the CMDB has 1.1.0, Temporal 1.0.0.",
        "stages: the CMDB's evidence has canary marginal, half pass, Temporal canary fail.",
        "amendments: the CMDB records revision(s) 2, Temporal none.",
        "window overrides: the CMDB records cora on 'friday-blackout' before go-live, Temporal none.",
        "KPIs: the CMDB's review has error_rate=0.004, lead_time_hours=30, Temporal error_rate=0.5.",
    ]


def test_cross_check_while_one_side_is_still_open(trail: AuditTrail, status: ReleaseStatus) -> None:
    running = status.model_copy(update={"outcome": None, "phase": Phase.REVIEWING})
    assert cross_check(trail, running)[0] == (
        "outcome: the CMDB closed the change as completed, but in Temporal the release is still reviewing."
    )
    open_trail = trail.model_copy(
        update={
            "close": trail.close.model_copy(
                update={"closed_at": None, "outcome": None, "status": "in_progress"}
            )
        }
    )
    # Votes, digest and version reach the change record at close: not compared before.
    assert cross_check(open_trail, status) == [
        "outcome: Temporal says the release ended completed, but the CMDB change is still in_progress."
    ]


def test_close_code_of_a_release_that_needs_an_operator(trail: AuditTrail, status: ReleaseStatus) -> None:
    unsuccessful = trail.model_copy(
        update={"close": trail.close.model_copy(update={"close_code": CloseCode.UNSUCCESSFUL})}
    )
    assert cross_check(unsuccessful, status.model_copy(update={"needs_operator": True})) == []
    assert cross_check(unsuccessful, status) == [
        "close code: the CMDB says unsuccessful, but Temporal's outcome completed closes as successful."
    ]


def test_a_rejection_is_counted_too(trail: AuditTrail, status: ReleaseStatus) -> None:
    gate = status.gates[Gate.REQUEST]
    vote = gate.votes[0].vote.model_copy(update={"approver": "carol", "decision": Decision.REJECT})
    extra = gate.votes[0].model_copy(update={"vote": vote})
    other = status.model_copy(
        update={
            "gates": {**status.gates, Gate.REQUEST: gate.model_copy(update={"votes": [*gate.votes, extra]})}
        }
    )
    assert cross_check(trail, other) == ["gate request: the CMDB counts 0 rejection(s), Temporal 1 (carol)."]
