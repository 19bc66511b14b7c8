"""A train's evidence: one signed statement over every component's artifacts, verified offline
against the catalog (the train's gates by the union of the components' approvers with one
approval from each component's; each component's stages as a release's). Real keys; every
tampering is one an attacker holding the file, or the worker's key, could do."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from relman.contracts import Gate
from relman.identity.evidence import b64decode, sign_envelope, verify_evidence
from relman.identity.evidence_train import TRAIN_PREDICATE_TYPE, build_train_statement
from tests.cmdb.train_support import (
    SERVICES,
    TRAIN_ID,
    TrainCast,
    abort_action,
    artifact_bytes,
    artifact_name,
    component_id,
    train_evidence_input,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cast() -> TrainCast:
    return TrainCast()


@pytest.fixture(scope="module")
def envelope(cast: TrainCast) -> dict[str, Any]:
    return sign_envelope(build_train_statement(train_evidence_input(cast)), cast.worker)


def check(cast: TrainCast, envelope: Any, **kw: Any) -> list[str]:
    trusts = kw.pop("trusts", None) or cast.trusts()
    report = verify_evidence(envelope, trusts, [cast.worker.public], **kw)
    assert report.ok is (not report.findings)
    return report.findings


def payload(envelope: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(b64decode(envelope["payload"])))


def signed(cast: TrainCast, **kw: Any) -> dict[str, Any]:
    return sign_envelope(build_train_statement(train_evidence_input(cast, **kw)), cast.worker)


def test_statement_lists_every_components_artifacts(envelope: dict[str, Any]) -> None:
    statement = payload(envelope)
    assert statement["predicateType"] == TRAIN_PREDICATE_TYPE
    assert statement["subject"] == [
        {
            "name": f"{s}/{artifact_name(s)}",
            "digest": {"sha256": hashlib.sha256(artifact_bytes(s)).hexdigest()},
        }
        for s in SERVICES
    ]
    predicate = statement["predicate"]
    assert predicate["release_id"] == TRAIN_ID and predicate["train"] == "checkout-2026-12"
    assert [c["service"] for c in predicate["components"]] == SERVICES
    assert predicate["components"][1]["stages"][0]["decisions"][0]["vote"]["approver"] == "carol"


def test_good_train_evidence_verifies(cast: TrainCast, envelope: dict[str, Any]) -> None:
    artifacts = {artifact_name(s): hashlib.sha256(artifact_bytes(s)).hexdigest() for s in SERVICES}
    report = verify_evidence(json.dumps(envelope), cast.trusts(), [cast.worker.public], artifacts)
    assert report.findings == []
    assert report.ok and report.release_id == TRAIN_ID and report.service == "checkout-2026-12"
    assert report.outcome == "completed" and report.key_id == cast.worker.key_id
    # envelope + request + 2 request votes + 2 plan votes + carol's marginal decision on api
    assert report.signatures == 7
    assert [(g.gate, g.approvals, g.required, g.approvers) for g in report.gates] == [
        (Gate.REQUEST, 2, 1, ["alice", "bob"]),
        (Gate.PLAN, 2, 1, ["alice", "bob"]),
    ]


def test_components_in_any_order_give_one_statement(cast: TrainCast) -> None:
    inp = train_evidence_input(cast)
    shuffled = inp.model_copy(update={"components": list(reversed(inp.components))})
    assert build_train_statement(shuffled) == build_train_statement(inp)


def test_every_components_approvers_must_approve(cast: TrainCast) -> None:
    inp = train_evidence_input(cast)
    # bob (worker's only approver) taken out of both gates: alice alone meets the quorum of 1
    gates = [
        g.model_copy(update={"votes": [v for v in g.votes if v.vote.approver != "bob"]}) for g in inp.gates
    ]
    findings = check(cast, signed(cast, gates=gates))
    assert findings == [
        "gate request is recorded approved without an approval by one of worker's approvers.",
        "gate plan is recorded approved without an approval by one of worker's approvers.",
    ]


def test_the_largest_quorum_of_the_components_holds(cast: TrainCast, envelope: dict[str, Any]) -> None:
    findings = check(cast, envelope, trusts=cast.trusts(api=cast.trust("api", quorum=3)))
    assert findings == [
        "gate request is recorded approved with 2 valid approval(s) of the 3 the catalog requires.",
        "gate plan is recorded approved with 2 valid approval(s) of the 3 the catalog requires.",
    ]


def test_the_requester_cannot_approve_her_own_train(cast: TrainCast) -> None:
    inp = train_evidence_input(cast)
    trusts = cast.trusts(worker=cast.trust("worker", cab=["bob", "rita"]))
    subject = inp.gates[0].subject_hash
    gates = [
        inp.gates[0].model_copy(
            update={"votes": [*inp.gates[0].votes, cast.vote("rita", Gate.REQUEST, subject)]}
        )
    ]
    findings = check(cast, signed(cast, gates=[*gates, inp.gates[1]]), trusts=trusts)
    assert findings == ["gate request: rita's approve is by rita, who requested this release."]


def test_a_vote_signed_for_another_train_does_not_count(cast: TrainCast) -> None:
    inp = train_evidence_input(cast)
    subject = inp.gates[0].subject_hash
    elsewhere = cast.vote("bob", Gate.REQUEST, subject, release_id="train-another-one")
    gate = inp.gates[0].model_copy(update={"votes": [inp.gates[0].votes[0], elsewhere]})
    findings = check(cast, signed(cast, gates=[gate, inp.gates[1]]))
    assert any("gate request: bob's approve: the signature by bob does not match" in f for f in findings)
    assert "gate request is recorded approved without an approval by one of worker's approvers." in findings


def test_a_component_marginal_accepted_by_no_approver(cast: TrainCast) -> None:
    inp = train_evidence_input(cast)
    api = inp.components[1]
    subject = api.stages[0].decisions[0].vote.approved_hash
    stage = api.stages[0].model_copy(
        update={"decisions": [cast.vote("mallory", Gate.MARGINAL, subject, component_id("api"))]}
    )
    components = [inp.components[0], api.model_copy(update={"stages": [stage]}), inp.components[2]]
    findings = check(cast, signed(cast, components=components))
    assert findings == [
        "component api: gate marginal: mallory's approve counts for mallory, who is not among the "
        "approvers of gate marginal in the catalog.",
        "component api: stage canary passed on marginal health without a valid approval by an "
        "eligible member.",
    ]


def test_an_artifact_swapped_in_a_component(cast: TrainCast, envelope: dict[str, Any]) -> None:
    statement = payload(envelope)
    statement["subject"][2]["digest"]["sha256"] = "0" * 64  # worker's artifact, re-signed
    findings = check(cast, sign_envelope(statement, cast.worker))
    assert findings == ["the statement's subject is not the components' artifacts."]
    wrong = {artifact_name("worker"): hashlib.sha256(b"another build").hexdigest()}
    assert check(cast, envelope, artifacts=wrong)[0].startswith(
        f"artifact {artifact_name('worker')} has sha256"
    )


def test_the_payload_altered_breaks_the_envelope(cast: TrainCast, envelope: dict[str, Any]) -> None:
    statement = payload(envelope)
    statement["predicate"]["components"][0]["package"]["version"] = "3.0.1"
    altered = dict(envelope, payload=sign_envelope(statement, cast.worker)["payload"])
    findings = check(cast, altered)
    assert findings[0].startswith("the envelope's signature does not verify")
    assert "component db-migration: its package is db-migration 3.0.1, not db-migration 3.0.0." in findings


def test_the_request_altered_inside(cast: TrainCast, envelope: dict[str, Any]) -> None:
    statement = payload(envelope)
    statement["predicate"]["request"]["components"][1]["version"] = "2.2.0"
    findings = check(cast, sign_envelope(statement, cast.worker))
    assert "the request hash in the evidence is not the hash of its request." in findings
    assert any(
        f.startswith("the train request by rita: the signature by rita does not match") for f in findings
    )


def test_a_component_the_catalog_does_not_know(cast: TrainCast, envelope: dict[str, Any]) -> None:
    trusts = {s: t for s, t in cast.trusts().items() if s != "worker"}
    assert check(cast, envelope, trusts=trusts) == [
        "component(s) worker not in the catalog, so no signature inside can be checked."
    ]


def test_an_abort_needs_an_operator_of_a_component(cast: TrainCast) -> None:
    assert check(cast, signed(cast, actions=[abort_action(cast)])) == []
    findings = check(cast, signed(cast, actions=[abort_action(cast, "mallory")]))
    assert findings == [
        "abort by mallory: mallory is not one of the operators of any component of the train."
    ]


def test_a_train_that_went_live_without_its_plan_gate(cast: TrainCast) -> None:
    inp = train_evidence_input(cast)
    findings = check(cast, signed(cast, gates=inp.gates[:1]))
    assert findings == [
        "gate plan is missing, but the train completed and the catalog requires 1 approval(s) there."
    ]


def test_relman_verify_checks_a_train(cast: TrainCast, envelope: dict[str, Any], tmp_path: Path) -> None:
    services = {
        s: {
            "stages": [{"name": "canary", "percent": 10, "bake_seconds": 60}],
            "cab": {"members": ["bob"] if s == "worker" else ["alice", "carol"], "quorum": 1},
            "operators": ["oscar"],
            "workdir": f"/nonexistent/{s}",
        }
        for s in SERVICES
    }
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        yaml.safe_dump(
            {
                "people": {name: {"keys": [s.public]} for name, s in cast.signers.items()},
                "evidence": {"keys": [cast.worker.public]},
                "services": services,
            }
        )
    )
    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps(envelope))
    artifact = tmp_path / artifact_name("api")
    artifact.write_bytes(artifact_bytes("api"))

    def verify(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "relman.starter", "verify", *map(str, args), "--catalog", str(catalog)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )

    done = verify(evidence, "--artifact", artifact)
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip()
        == f"evidence verified: {TRAIN_ID} completed, 7 signatures, gates request 2/1, plan 2/1"
    )
    artifact.write_bytes(b"another build")
    refused = verify(evidence, "--artifact", artifact)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"error: artifact {artifact_name('api')} has sha256")
