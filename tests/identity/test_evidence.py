"""Release evidence: DSSE against the spec's vector, and offline verification that names what broke.

Real Ed25519 keys and signatures throughout; every tampering is done the way an attacker
holding the file (or the worker's key) would do it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from relman.contracts import AuditAnchor, CloseCode, Decision, Gate, Role
from relman.identity.evidence import (
    PAYLOAD_TYPE,
    b64decode,
    build_statement,
    pae,
    sign_envelope,
    stage_subject,
    verify_evidence,
)
from relman.identity.keys import Signer
from relman.workflows.policy import stage_hash
from tests.identity.evidence_support import ARTIFACT, Cast, closed_release

# --- DSSE ------------------------------------------------------------------------------

# The test vector of DSSE's protocol.md (secure-systems-lab/dsse, "Test Vectors"): an ECDSA
# P-256 signature over PAE("http://example.com/HelloWorld", "hello world").
VECTOR_TYPE = "http://example.com/HelloWorld"
VECTOR_BODY = b"hello world"
VECTOR_PAE = b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
VECTOR_X = 46950820868899156662930047687818585632848591499744589407958293238635476079160
VECTOR_Y = 5640078356564379163099075877009565129882514886557779369047442380624545832820
VECTOR_ENVELOPE = {
    "payload": "aGVsbG8gd29ybGQ=",
    "payloadType": "http://example.com/HelloWorld",
    "signatures": [
        {"sig": "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA=="}
    ],
}


def test_pae_matches_the_spec_vector() -> None:
    assert pae(VECTOR_TYPE, VECTOR_BODY) == VECTOR_PAE
    assert b64decode(VECTOR_ENVELOPE["payload"]) == VECTOR_BODY  # type: ignore[arg-type]


def test_the_spec_vectors_signature_verifies_over_our_pae() -> None:
    # The vector's signature was made by the reference implementation; it verifies only if
    # our PAE is byte for byte the one it signed.
    public = ec.EllipticCurvePublicNumbers(VECTOR_X, VECTOR_Y, ec.SECP256R1()).public_key()
    raw = b64decode(VECTOR_ENVELOPE["signatures"][0]["sig"])  # type: ignore[index]
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    body = b64decode(VECTOR_ENVELOPE["payload"])  # type: ignore[arg-type]
    public.verify(der, pae(str(VECTOR_ENVELOPE["payloadType"]), body), ec.ECDSA(hashes.SHA256()))


def test_url_safe_and_unpadded_base64_are_accepted() -> None:
    data = bytes(range(256))
    url_safe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert b64decode(url_safe) == data


def test_envelopes_interoperate_with_securesystemslib() -> None:
    sslib_dsse = pytest.importorskip("securesystemslib.dsse")
    from securesystemslib.signer import CryptoSigner, SSlibKey

    ours = Signer.generate("worker")
    key = SSlibKey.from_crypto(ours.private.public_key(), keyid=ours.key_id)
    envelope = sign_envelope({"_type": "x"}, ours)
    # securesystemslib's from_dict rewrites the signatures it is given: hand it a copy.
    accepted = sslib_dsse.Envelope.from_dict(json.loads(json.dumps(envelope))).verify([key], 1)
    assert list(accepted) == [ours.key_id]

    theirs = sslib_dsse.Envelope(b'{"a":1}', PAYLOAD_TYPE, {})
    theirs.sign(CryptoSigner(ours.private, key))
    signed = theirs.to_dict()
    body = b64decode(signed["payload"])
    assert (
        ours.private.public_key().verify(b64decode(signed["signatures"][0]["sig"]), pae(PAYLOAD_TYPE, body))
        is None
    )


# --- evidence --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cast() -> Cast:
    return Cast()


@pytest.fixture(scope="module")
def envelope(cast: Cast) -> dict[str, Any]:
    return sign_envelope(build_statement(closed_release(cast), CloseCode.SUCCESSFUL), cast.worker)


def check(cast: Cast, envelope: Any, **kw: Any) -> list[str]:
    trust = kw.pop("trust", None) or cast.trust()
    keys = kw.pop("keys", None) or [cast.worker.public]
    report = verify_evidence(envelope, {"greeter": trust}, keys, **kw)
    assert report.ok is (not report.findings)
    return report.findings


def payload(envelope: dict[str, Any]) -> dict[str, Any]:
    return json.loads(b64decode(envelope["payload"]))


def resigned(statement: dict[str, Any], cast: Cast) -> dict[str, Any]:
    """What a holder of the worker's key could produce: only the checks inside can catch it."""
    return sign_envelope(statement, cast.worker)


def test_statement_is_in_toto_v1_over_the_artifacts(envelope: dict[str, Any]) -> None:
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement = payload(envelope)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://relman.dev/release-evidence/v1"
    assert statement["subject"] == [
        {"name": "greeter-1.1.0.whl", "digest": {"sha256": hashlib.sha256(ARTIFACT).hexdigest()}}
    ]
    predicate = statement["predicate"]
    assert predicate["release_id"] == "release-greeter-1.1.0"
    assert predicate["close_code"] == "successful"
    assert [g["gate"] for g in predicate["gates"]] == ["request", "plan", "marginal"]
    delegated = predicate["gates"][1]["votes"][1]["vote"]
    assert delegated["on_behalf_of"] == "bob" and delegated["delegation"]["proof"]["signature"]
    assert predicate["stages"][0]["decisions"][0]["vote"]["approver"] == "carol"
    assert predicate["window_waits"][0]["override"]["by"] == "cora"


def test_good_evidence_verifies(cast: Cast, envelope: dict[str, Any]) -> None:
    report = verify_evidence(
        json.dumps(envelope),
        {"greeter": cast.trust()},
        [cast.worker.public],
        {"greeter-1.1.0.whl": hashlib.sha256(ARTIFACT).hexdigest()},
    )
    assert report.findings == []
    assert report.ok and report.outcome == "completed" and report.key_id == cast.worker.key_id
    # envelope + request + 2 request votes + 2 plan votes + 1 delegation + marginal
    # + amendment + pause + override
    assert report.signatures == 11
    assert [(g.gate, g.approvals, g.required) for g in report.gates] == [
        (Gate.REQUEST, 2, 2),
        (Gate.PLAN, 2, 2),
        (Gate.MARGINAL, 1, 1),
    ]
    assert report.gates[1].approvers == ["alice", "bob"]


def test_evidence_with_an_audit_anchor_verifies(cast: Cast, envelope: dict[str, Any]) -> None:
    """The anchor is optional: evidence from before anchoring has no such field and verifies."""
    assert "audit_anchor" not in payload(envelope)["predicate"]
    anchor = AuditAnchor(id=42, row_hash="ab" * 32)
    anchored = sign_envelope(build_statement(closed_release(cast), CloseCode.SUCCESSFUL, anchor), cast.worker)
    assert payload(anchored)["predicate"]["audit_anchor"] == {"id": 42, "row_hash": "ab" * 32}
    assert check(cast, anchored) == []
    # Moving the anchor (to hide a rewritten log) breaks the envelope's signature.
    statement = payload(anchored)
    statement["predicate"]["audit_anchor"]["id"] = 41
    moved = {**anchored, "payload": base64.b64encode(json.dumps(statement).encode()).decode()}
    assert any("signature does not verify" in f for f in check(cast, moved))
    statement["predicate"]["audit_anchor"] = {"id": 0, "row_hash": "not a hash"}
    findings = check(cast, resigned(statement, cast))
    assert len(findings) == 1 and "predicate is not relman release evidence (audit_anchor." in findings[0]


def test_stage_subject_is_the_workflows_stage_hash() -> None:
    assert stage_subject("a" * 64, "canary") == stage_hash("a" * 64, "canary")


def test_one_byte_of_the_payload_changed(cast: Cast, envelope: dict[str, Any]) -> None:
    body = bytearray(b64decode(envelope["payload"]))
    at = body.index(b"friendlier")
    body[at] ^= 0x20  # "Friendlier": still valid JSON, still a valid title
    tampered = {**envelope, "payload": base64.b64encode(bytes(body)).decode()}
    findings = check(cast, tampered)
    assert any("envelope's signature does not verify with any evidence key" in f for f in findings)
    # The title is signed by the requester too: the inside check catches it on its own.
    assert any(f.startswith("the request by rita: the signature by rita does not match") for f in findings)


def test_one_byte_of_the_signature_changed(cast: Cast, envelope: dict[str, Any]) -> None:
    sig = bytearray(b64decode(envelope["signatures"][0]["sig"]))
    sig[10] ^= 0x01
    tampered = {
        **envelope,
        "signatures": [{"keyid": cast.worker.key_id, "sig": base64.b64encode(sig).decode()}],
    }
    assert check(cast, tampered) == [
        "the envelope's signature does not verify with any evidence key of the catalog "
        "(the payload or signature was altered, or another key signed it)."
    ]


def test_envelope_signed_by_an_undeclared_key(cast: Cast, envelope: dict[str, Any]) -> None:
    other = Signer.generate("worker")
    findings = check(cast, envelope, keys=[other.public])
    assert findings == [
        "the envelope's signature does not verify with any evidence key of the catalog "
        "(the payload or signature was altered, or another key signed it)."
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [("comment", "alice looked at it closely"), ("approved_hash", "0" * 64)],
)
def test_a_vote_changed_inside_resigned_envelope(
    cast: Cast, envelope: dict[str, Any], field: str, value: str
) -> None:
    statement = payload(envelope)
    statement["predicate"]["gates"][1]["votes"][0]["vote"][field] = value
    findings = check(cast, resigned(statement, cast))
    assert not any("envelope" in f for f in findings)
    assert (
        "gate plan: alice's approve: the signature by alice does not match this message "
        "(forged, altered, or signed for another release, gate or hash)."
    ) in findings
    assert (
        "gate plan is recorded approved with 1 valid approval(s) of the 2 the catalog requires." in findings
    )


def test_a_delegation_widened_inside(cast: Cast, envelope: dict[str, Any]) -> None:
    statement = payload(envelope)
    delegation = statement["predicate"]["gates"][1]["votes"][1]["vote"]["delegation"]
    delegation["not_after"] = "2030-01-01T00:00:00Z"
    findings = check(cast, resigned(statement, cast))
    assert any(
        f.startswith("gate plan: dave for bob's approve: the delegation by bob: the signature by bob")
        for f in findings
    )


def test_approver_removed_from_the_catalogs_role(cast: Cast, envelope: dict[str, Any]) -> None:
    findings = check(cast, envelope, trust=cast.trust(cab=["alice", "carol"]))
    assert (
        "gate request: bob's approve counts for bob, "
        "who is not among the approvers of gate request in the catalog."
    ) in findings
    assert (
        "gate request is recorded approved with 1 valid approval(s) of the 2 the catalog requires."
        in findings
    )
    assert (
        "gate plan is recorded approved with 1 valid approval(s) of the 2 the catalog requires." in findings
    )


def test_quorum_short_by_one(cast: Cast) -> None:
    status = closed_release(cast)
    plan = status.gates[Gate.PLAN]
    status.gates[Gate.PLAN] = plan.model_copy(update={"votes": plan.votes[:1]})
    envelope = sign_envelope(build_statement(status, CloseCode.SUCCESSFUL), cast.worker)
    assert check(cast, envelope) == [
        "gate plan is recorded approved with 1 valid approval(s) of the 2 the catalog requires."
    ]


def test_voided_votes_are_kept_and_checked_but_not_counted(cast: Cast) -> None:
    status = closed_release(cast)
    plan = status.gates[Gate.PLAN]
    old = cast.vote("carol", Gate.PLAN, "e" * 64, plan.closed_at or status.history[0].at)  # an older plan
    status.gates[Gate.PLAN] = plan.model_copy(update={"voided": [old]})
    good = sign_envelope(build_statement(status, CloseCode.SUCCESSFUL), cast.worker)
    assert check(cast, good) == []
    assert payload(good)["predicate"]["gates"][1]["voided"][0]["vote"]["approver"] == "carol"
    forged = old.model_copy(update={"vote": old.vote.model_copy(update={"comment": "rewritten"})})
    status.gates[Gate.PLAN] = plan.model_copy(update={"voided": [forged]})
    bad = sign_envelope(build_statement(status, CloseCode.SUCCESSFUL), cast.worker)
    (finding,) = check(cast, bad)
    assert finding.startswith("gate plan: carol's voided approve: the signature by carol does not match")


def test_an_approved_gate_with_a_veto(cast: Cast) -> None:
    status = closed_release(cast)
    gate = status.gates[Gate.REQUEST]
    veto = cast.vote("carol", Gate.REQUEST, gate.subject_hash, gate.closed_at or status.history[0].at)
    veto.vote = cast.sign(
        veto.vote.model_copy(update={"decision": Decision.REJECT, "comment": "not now", "proof": None}),
        "carol",
        veto.at,
    )
    status.gates[Gate.REQUEST] = gate.model_copy(update={"votes": [*gate.votes, veto]})
    envelope = sign_envelope(build_statement(status, CloseCode.SUCCESSFUL), cast.worker)
    assert check(cast, envelope) == ["gate request is recorded approved although carol rejected it."]


def test_catalog_quorum_raised_above_the_votes(cast: Cast, envelope: dict[str, Any]) -> None:
    findings = check(cast, envelope, trust=cast.trust(quorum=3))
    assert (
        "gate request is recorded approved with 2 valid approval(s) of the 3 the catalog requires."
        in findings
    )


def test_wrong_artifact(cast: Cast, envelope: dict[str, Any]) -> None:
    wrong = hashlib.sha256(ARTIFACT + b"!").hexdigest()
    findings = check(cast, envelope, artifacts={"greeter-1.1.0.whl": wrong})
    assert findings == [
        f"artifact greeter-1.1.0.whl has sha256 {wrong[:16]}…, which is not a subject of the evidence "
        f"(the evidence says {hashlib.sha256(ARTIFACT).hexdigest()[:16]}…)."
    ]


def test_unsigned_marginal_acceptance(cast: Cast) -> None:
    status = closed_release(cast)
    status.stages[0].decisions = []
    status.gates.pop(Gate.MARGINAL)
    envelope = sign_envelope(build_statement(status, CloseCode.SUCCESSFUL), cast.worker)
    assert check(cast, envelope) == [
        "stage canary passed on marginal health without a valid approval by an eligible member."
    ]


def test_an_operator_without_the_role(cast: Cast, envelope: dict[str, Any]) -> None:
    trust = cast.trust()
    del trust.roles[Role.OPERATORS]
    assert check(cast, envelope, trust=trust) == [
        "pause by oscar: oscar is not one of the operators of greeter."
    ]


def test_an_override_by_the_requester(cast: Cast) -> None:
    status = closed_release(cast)
    wait = status.window_waits[0]
    assert wait.override is not None
    override = cast.sign(wait.override.model_copy(update={"by": "rita", "proof": None}), "rita", wait.since)
    wait.override = override
    status.actions[1].action = override
    envelope = sign_envelope(build_statement(status, CloseCode.SUCCESSFUL), cast.worker)
    trust = cast.trust()
    trust.roles[Role.CHANGE_MANAGERS].append("rita")
    findings = check(cast, envelope, trust=trust)
    assert findings == [
        "override_window by rita: rita requested this release and cannot override its windows."
    ]


def test_an_override_recorded_on_another_wait(cast: Cast, envelope: dict[str, Any]) -> None:
    statement = payload(envelope)
    statement["predicate"]["window_waits"][0]["step"] = "canary"
    assert check(cast, resigned(statement, cast)) == [
        "the override of window 'friday-blackout' before canary by cora names window 'friday-blackout' "
        "and step go-live, not the ones it let through."
    ]


def test_a_dropped_gate_is_found(cast: Cast, envelope: dict[str, Any]) -> None:
    statement = payload(envelope)
    statement["predicate"]["gates"] = [g for g in statement["predicate"]["gates"] if g["gate"] != "plan"]
    findings = check(cast, resigned(statement, cast))
    assert findings == [
        "gate plan is missing, but the release completed and the catalog requires 2 approval(s) there."
    ]


def test_not_an_envelope(cast: Cast) -> None:
    assert check(cast, "[1, 2")[0].startswith("the file is not a DSSE envelope")
    assert check(cast, {"payload": "x"})[0].startswith("the file is not a DSSE envelope (payloadType")


def test_unknown_service(cast: Cast, envelope: dict[str, Any]) -> None:
    report = verify_evidence(envelope, {}, [cast.worker.public])
    assert report.findings == [
        "service greeter is not in the catalog, so no signature inside can be checked."
    ]
