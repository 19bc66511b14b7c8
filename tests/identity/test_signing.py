"""Signed statements: seal and verify round trip, one canonical encoding, every field signed.

Real Ed25519 keys (tests.people), no mocks of the crypto: the bytes verified here are the bytes
the workflow and `relman verify` check.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from relman.contracts import (
    STATEMENT_DOMAIN,
    ChangeType,
    Component,
    Decision,
    Delegation,
    Feedback,
    Gate,
    OperatorAction,
    OperatorVerb,
    PlanAmendment,
    ReleasePlan,
    ReleaseRequest,
    RolloutStage,
    Statement,
    StatementKind,
    TimeWindow,
    Vote,
    digest,
)
from relman.identity.keys import verify_signature
from relman.identity.signing import Signable, seal
from relman.identity.verify import proof_problem
from tests import people
from tests.people import PEOPLE

NOW = datetime(2026, 11, 27, 9, 0, 7, 654321, tzinfo=UTC)
RELEASE = "release-checkout-2.4.1"
TRUST = people.trust()
HASH = "a" * 64

VOTE = Vote(
    gate=Gate.PLAN, approver="alice", decision=Decision.APPROVE, approved_hash=HASH, comment="looks good"
)
DELEGATION = Delegation(
    delegator="alice",
    delegate="zoe",
    services=["checkout"],
    gates=[Gate.REQUEST, Gate.PLAN],
    not_after=NOW + timedelta(days=7),
)
DELEGATED_VOTE = VOTE.model_copy(update={"approver": "zoe", "on_behalf_of": "alice"})
PAUSE = OperatorAction(action=OperatorVerb.PAUSE, by="oli", reason="investigating")
OVERRIDE = OperatorAction(
    action=OperatorVerb.OVERRIDE_WINDOW, by="carol", reason="hotfix", window="test-blackout", step="one"
)
PLAN = ReleasePlan(
    components=[Component(name="checkout", version="2.4.1")],
    stages=[
        RolloutStage(name="one", percent=1, bake_seconds=60),
        RolloutStage(name="five", percent=5, bake_seconds=60, allow_list=["tester"]),
    ],
    revision=2,
)
AMENDMENT = PlanAmendment(by="rex", plan=PLAN, reason="slower rollout")
FEEDBACK = Feedback(by="pat", rating=4, comment="fast")
REQUEST = ReleaseRequest(
    service="checkout",
    version="2.4.1",
    change_type=ChangeType.NORMAL,
    requested_by="rita",
    title="Faster checkout",
    description="Cache the basket.\nMeasured in staging.",
    commit="0a1b2c3d4e5f",
    committed_at=NOW - timedelta(days=1),
    target_window=TimeWindow(start=NOW, end=NOW + timedelta(hours=2)),
)

MESSAGES: dict[str, tuple[Signable, str]] = {
    "vote": (VOTE, "alice"),
    "delegated vote": (DELEGATED_VOTE, "zoe"),
    "delegation": (DELEGATION, "alice"),
    "operator action": (PAUSE, "oli"),
    "override": (OVERRIDE, "carol"),
    "amendment": (AMENDMENT, "rex"),
    "feedback": (FEEDBACK, "pat"),
    "request": (REQUEST, "rita"),
}
"""Every kind of signed message, with who signs it."""


def problem(message: Signable, actor: str, release_id: str = RELEASE, **kw: Any) -> str | None:
    return proof_problem(message, actor=actor, release_id=release_id, trust=TRUST, now=NOW, **kw)


def sealed(message: Signable, who: str, release_id: str = RELEASE) -> Any:
    return seal(message, "*" if isinstance(message, Delegation) else release_id, PEOPLE[who], now=NOW)


def release_of(message: Signable) -> str:
    return "*" if isinstance(message, Delegation) else RELEASE


# --- round trip ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MESSAGES))
def test_seal_then_verify_round_trip(kind: str) -> None:
    message, who = MESSAGES[kind]
    signed = sealed(message, who)
    assert message.proof is None  # sealing returns a copy
    proof = signed.proof
    assert proof.issued_at == NOW.replace(microsecond=0)
    assert proof.key_id == PEOPLE[who].key_id
    assert re.fullmatch(r"[0-9a-f]{32}", proof.nonce)
    assert proof.provider is None
    assert problem(signed, who, release_of(message)) is None
    # Offline (`relman verify`): no clock.
    assert proof_problem(signed, actor=who, release_id=release_of(message), trust=TRUST, now=None) is None
    # The message survives the wire (JSON through Temporal's pydantic converter) unchanged.
    again = type(signed).model_validate_json(signed.model_dump_json())
    assert problem(again, who, release_of(message)) is None


def test_each_seal_has_its_own_nonce_and_signature() -> None:
    first, second = sealed(VOTE, "alice"), sealed(VOTE, "alice")
    assert first.proof.nonce != second.proof.nonce
    assert first.proof.signature != second.proof.signature
    assert problem(first, "alice") is None and problem(second, "alice") is None
    assert problem(first, "alice", seen_nonces={first.proof.nonce}) == (
        "this signed message was already used (its nonce was seen before)"
    )


def test_an_identity_provider_signs_for_the_person_it_vouches_for() -> None:
    vouched = seal(VOTE, RELEASE, people.CONSOLE, now=NOW)
    assert (vouched.proof.provider, vouched.proof.key_id) == ("console", people.CONSOLE.key_id)
    assert problem(vouched, "alice") is None
    carol = seal(VOTE.model_copy(update={"approver": "carol"}), RELEASE, people.CONSOLE, now=NOW)
    assert problem(carol, "carol") == "identity provider console may not vouch for carol"
    # The provider field is part of what decides the key: dropping it makes it alice's own claim.
    assert problem(
        vouched.model_copy(update={"proof": vouched.proof.model_copy(update={"provider": None})}), "alice"
    ) == (f"key {people.CONSOLE.key_id} is not a key of alice in the catalog")


def test_a_key_the_catalog_lists_among_several_verifies() -> None:
    old, new = PEOPLE["alice"], PEOPLE["bob"]  # bob's key stands in for alice's new key
    rotating = TRUST.model_copy(
        update={
            "people": [
                p.model_copy(update={"keys": [old.public, new.public]}) if p.name == "alice" else p
                for p in TRUST.people
            ]
        }
    )
    signed_with_new = seal(VOTE, RELEASE, new, now=NOW)
    assert proof_problem(signed_with_new, actor="alice", release_id=RELEASE, trust=rotating, now=NOW) is None
    assert problem(signed_with_new, "alice") == f"key {new.key_id} is not a key of alice in the catalog"


def test_the_clock_window() -> None:
    signed = sealed(VOTE, "alice")
    issued = signed.proof.issued_at  # NOW to the second
    later = issued + timedelta(minutes=5)
    assert proof_problem(signed, actor="alice", release_id=RELEASE, trust=TRUST, now=later) is None
    too_late = proof_problem(
        signed, actor="alice", release_id=RELEASE, trust=TRUST, now=later + timedelta(seconds=1)
    )
    assert too_late is not None and "more than 0:05:00 before now" in too_late
    assert (
        proof_problem(
            signed, actor="alice", release_id=RELEASE, trust=TRUST, now=issued - timedelta(minutes=5)
        )
        is None
    )
    early = issued - timedelta(minutes=5, seconds=1)
    too_early = proof_problem(signed, actor="alice", release_id=RELEASE, trust=TRUST, now=early)
    assert too_early is not None and "later than now" in too_early
    # A delegation is checked without a maximum age (it lasts until not_after).
    old = sealed(DELEGATION, "alice")
    assert (
        proof_problem(
            old, actor="alice", release_id="*", trust=TRUST, now=NOW + timedelta(days=6), max_age=None
        )
        is None
    )


# --- one canonical encoding ----------------------------------------------------------------


def statement(**changes: Any) -> Statement:
    fields: dict[str, Any] = {
        "kind": StatementKind.VOTE,
        "release_id": RELEASE,
        "subject": "plan",
        "subject_hash": HASH,
        "decision": "approve",
        "actor": "zoe",
        "on_behalf_of": "alice",
        "comment_digest": digest("looks good"),
        "issued_at": NOW,
        "nonce": "0123456789abcdef0123456789abcdef",
    }
    fields.update(changes)
    return Statement.model_validate(fields)


def test_the_canonical_encoding_is_pinned() -> None:
    """The exact bytes: evidence signed today must verify with tomorrow's code."""
    assert statement().canonical() == (
        b"relman-statement/v1\n"
        b'{"actor":"zoe","comment_digest":"' + digest("looks good").encode() + b'",'
        b'"decision":"approve","issued_at":"2026-11-27T09:00:07Z","kind":"vote",'
        b'"nonce":"0123456789abcdef0123456789abcdef","on_behalf_of":"alice",'
        b'"release_id":"release-checkout-2.4.1","subject":"plan","subject_hash":"' + HASH.encode() + b'"}'
    )


def test_the_same_statement_gives_the_same_bytes() -> None:
    first = statement()
    assert first.canonical() == statement().canonical() == first.canonical()
    # Key order of the input does not matter.
    reordered = dict(reversed(list(first.model_dump().items())))
    assert list(reordered) != list(first.model_dump())
    assert Statement.model_validate(reordered).canonical() == first.canonical()
    # Nor does a JSON round trip, the time zone of issued_at, or its microseconds.
    assert Statement.model_validate_json(first.model_dump_json()).canonical() == first.canonical()
    eastern = NOW.astimezone(timezone(timedelta(hours=-5)))
    assert statement(issued_at=eastern).canonical() == first.canonical()
    assert statement(issued_at=NOW.replace(microsecond=0)).canonical() == first.canonical()
    # A message gives the same statement however often it is derived.
    signed = sealed(VOTE, "alice")
    again = Vote.model_validate(json.loads(signed.model_dump_json()))
    proof = signed.proof
    assert (
        signed.statement(RELEASE, proof.issued_at, proof.nonce).canonical()
        == again.statement(RELEASE, proof.issued_at, proof.nonce).canonical()
    )


def test_the_encoding_starts_with_the_domain_tag() -> None:
    encoded = statement().canonical()
    assert encoded.startswith(STATEMENT_DOMAIN)
    body = json.loads(encoded.removeprefix(STATEMENT_DOMAIN))
    assert list(body) == sorted(body)
    assert set(body) == set(Statement.model_fields)


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        statement(issued_at=NOW.replace(tzinfo=None))


# --- every field is signed ---------------------------------------------------------------------

STATEMENT_CHANGES: dict[str, Any] = {
    "kind": StatementKind.DELEGATION,
    "release_id": "release-checkout-2.4.2",
    "subject": "request",
    "subject_hash": "b" * 64,
    "decision": "reject",
    "actor": "bob",
    "on_behalf_of": None,
    "comment_digest": digest("looks bad"),
    "issued_at": NOW + timedelta(seconds=1),
    "nonce": "f" * 32,
}


def test_every_statement_field_has_a_change() -> None:
    assert set(STATEMENT_CHANGES) == set(Statement.model_fields)


@pytest.mark.parametrize("field", list(STATEMENT_CHANGES))
def test_changing_any_statement_field_breaks_the_signature(field: str) -> None:
    signer = PEOPLE["zoe"]
    original = statement()
    signature = signer.sign(original.canonical())
    assert verify_signature(signer.public, signature, original.canonical())
    changed = statement(**{field: STATEMENT_CHANGES[field]})
    assert changed.canonical() != original.canonical()
    assert not verify_signature(signer.public, signature, changed.canonical())


MESSAGE_CHANGES: dict[str, dict[str, Any]] = {
    "vote": {
        "gate": Gate.REQUEST,
        "approver": "bob",
        "decision": Decision.REJECT,
        "approved_hash": "b" * 64,
        "on_behalf_of": "carol",
        "comment": "looks good!",
    },
    "delegation": {
        "delegator": "bob",
        "delegate": "mallory",
        "services": ["checkout", "payments"],
        "gates": [Gate.REQUEST],
        "not_after": NOW + timedelta(days=8),
    },
    "operator action": {"action": OperatorVerb.RESUME, "by": "alice", "reason": "investigating!"},
    "override": {"by": "cm", "reason": "hotfix!", "window": "other-window", "step": "five"},
    "amendment": {
        "by": "bob",
        "plan": PLAN.model_copy(update={"backout_plan": "Roll back."}),
        "reason": "faster rollout",
    },
    "feedback": {"by": "rita", "rating": 5, "comment": "slow"},
    "request": {
        "service": "payments",
        "version": "2.4.2",
        "change_type": ChangeType.EMERGENCY,
        "requested_by": "pat",
        "title": "Slower checkout",
        "description": "",
        "commit": "0a1b2c3d4e5e",
        "committed_at": NOW,
        "target_window": None,
        "change_model": "config-tweak",
        # Unset it stays out of the hash (old requests keep theirs); set, the signature covers it.
        "allow_downgrade": True,
    },
}
UNSIGNED_FIELDS = {
    "proof": "the signature itself",
    "delegation": "a vote's delegation carries its own signature, by the delegator",
    "at": "feedback time is set by the workflow when the feedback arrives",
}


def test_every_message_field_has_a_change() -> None:
    changed: dict[type, set[str]] = {}
    for kind, changes in MESSAGE_CHANGES.items():
        changed.setdefault(type(MESSAGES[kind][0]), set()).update(changes)
    for cls, fields in changed.items():
        assert set(cls.model_fields) - UNSIGNED_FIELDS.keys() == fields, cls.__name__


@pytest.mark.parametrize("kind", list(MESSAGE_CHANGES))
def test_every_message_field_is_covered_by_its_signature(kind: str) -> None:
    message, who = MESSAGES[kind]
    changes = MESSAGE_CHANGES[kind]
    signed = sealed(message, who)
    for field, value in changes.items():
        assert getattr(signed, field) != value, field
        altered = signed.model_copy(update={field: value})
        found = problem(altered, who, release_of(message), max_age=None)
        assert found is not None and "does not match this message" in found, (field, found)


def test_nested_plan_fields_are_covered() -> None:
    signed = sealed(AMENDMENT, "rex")
    stage = PLAN.stages[1]
    for plan in (
        PLAN.model_copy(update={"stages": [PLAN.stages[0], stage.model_copy(update={"bake_seconds": 0})]}),
        PLAN.model_copy(update={"stages": [PLAN.stages[0], stage.model_copy(update={"allow_list": []})]}),
        PLAN.model_copy(update={"acceptance": PLAN.acceptance.model_copy(update={"max_error_rate": 0.9})}),
        PLAN.model_copy(update={"revision": 3}),
    ):
        found = problem(signed.model_copy(update={"plan": plan}), "rex")
        assert found is not None and "does not match" in found


@pytest.mark.parametrize("kind", list(MESSAGES))
def test_the_proof_and_the_release_are_covered(kind: str) -> None:
    message, who = MESSAGES[kind]
    signed = sealed(message, who)
    release_id = release_of(message)
    proof = signed.proof
    for change in ({"issued_at": proof.issued_at + timedelta(seconds=1)}, {"nonce": "f" * 32}):
        moved = signed.model_copy(update={"proof": proof.model_copy(update=change)})
        found = problem(moved, who, release_id)
        assert found is not None and "does not match" in found, change
    if release_id != "*":  # a delegation is bound to services, not to one release
        found = problem(signed, who, "release-checkout-2.4.2")
        assert found is not None and "another release" in found
