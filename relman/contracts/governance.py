"""Contracts of governance: roles, signed statements and their proofs, delegations, change models.

A name in a message proves nothing (Temporal does not say who sent it), so every vote,
delegation, amendment and operator action carries a `Proof`: an Ed25519 signature over one
canonical `Statement`. The statement of a message is derived from the message itself plus
the proof's `issued_at` and `nonce`; signing (`relman.identity`) and verifying (the workflow,
`relman verify`) therefore agree byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from relman.contracts.base import (
    Gate,
    Model,
    Risk,
    ServiceName,
    Sha256,
    ShortText,
    Slug,
    UserName,
)

STATEMENT_DOMAIN = b"relman-statement/v1\n"
"""Prefix of every signed encoding: a relman signature can never be taken for another kind."""
SIGNATURE_SKEW = timedelta(minutes=5)
"""A signed message counts only if issued within this much of the workflow's clock."""
REQUEST_MAX_AGE = timedelta(days=1)
"""A signed request may wait this long for its first workflow task (a worker outage)."""

KeyId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
"""First 16 hex digits of the sha256 of a raw Ed25519 public key."""
PublicKeyText = Annotated[str, StringConstraints(pattern=r"^ed25519:[A-Za-z0-9+/]{43}=$")]
"""An Ed25519 public key as the catalog holds it: `ed25519:<base64 of the 32 raw bytes>`."""
SignatureText = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{86}==$")]
"""Base64 of a 64-byte Ed25519 signature."""
Nonce = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
"""128 random bits as hex: a statement is accepted once per release."""


class Role(StrEnum):
    """Roles per service, from the catalog only: a request never names who may approve."""

    CAB = "cab"
    """Votes at the request, plan and retro gates (quorum) and the marginal gate."""
    ECAB = "ecab"
    """Emergency CAB: one member approves an emergency change now."""
    OPERATORS = "operators"
    """Pause, resume, promote, abort."""
    CHANGE_MANAGERS = "change_managers"
    """Let one exposure step through one closed window (override)."""
    RELEASE_MANAGERS = "release_managers"
    """Amend the plan while the plan gate is open."""


class StatementKind(StrEnum):
    REQUEST = "request"
    VOTE = "vote"
    DELEGATION = "delegation"
    AMENDMENT = "amendment"
    OPERATOR = "operator"
    FEEDBACK = "feedback"


class OperatorVerb(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    ABORT = "abort"
    OVERRIDE_WINDOW = "override_window"


OPERATOR_ROLE = {
    OperatorVerb.PAUSE: Role.OPERATORS,
    OperatorVerb.RESUME: Role.OPERATORS,
    OperatorVerb.PROMOTE: Role.OPERATORS,
    OperatorVerb.ABORT: Role.OPERATORS,
    OperatorVerb.OVERRIDE_WINDOW: Role.CHANGE_MANAGERS,
}
"""The role each operator action needs."""


def utc_seconds(at: datetime) -> datetime:
    """`at` in UTC to the second: the one form a signed time takes in every encoding."""
    if at.tzinfo is None:
        raise ValueError("must carry a time zone")
    return at.astimezone(UTC).replace(microsecond=0)


def digest(text: str) -> str:
    """Sha256 of UTF-8 text: statements carry the digest of a comment, not the comment."""
    return hashlib.sha256(text.encode()).hexdigest()


def canonical_digest(value: object) -> str:
    """Sha256 of a JSON value in canonical form (sorted keys, no spaces)."""
    return digest(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str))


UtcSeconds = Annotated[datetime, AfterValidator(utc_seconds)]


class Statement(Model):
    """What a person signs. One canonical encoding for every message kind."""

    kind: StatementKind
    release_id: Annotated[str, StringConstraints(max_length=128)]
    """The release this counts for; `*` for a delegation (bound to services instead)."""
    subject: Annotated[str, StringConstraints(max_length=128)]
    """The gate (votes) or action (operator actions), `plan`, `request`, `feedback` or the
    delegated gates."""
    subject_hash: Sha256
    """Hash of exactly what is decided: request, plan, stage, override scope, delegation."""
    decision: Annotated[str, StringConstraints(max_length=32)] = ""
    actor: UserName
    on_behalf_of: UserName | None = None
    """Votes: the member a delegate acts for. Delegations: the delegate."""
    comment_digest: Sha256
    issued_at: UtcSeconds
    nonce: Nonce

    def canonical(self) -> bytes:
        """The bytes that are signed: a domain tag and sorted-key JSON, times in UTC seconds."""
        body = self.model_dump(mode="json")
        body["issued_at"] = self.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return STATEMENT_DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


class Proof(Model):
    """Who signed a message, when, and the signature over its statement."""

    issued_at: UtcSeconds
    nonce: Nonce
    key_id: KeyId
    signature: SignatureText
    provider: Slug | None = None
    """Set when an identity provider the catalog trusts signed for the actor (the console)."""


class Signed(Model):
    """Base of every message that may carry a proof of who sent it."""

    proof: Proof | None = None
    """Required unless the catalog turns signatures off."""


class Delegation(Signed):
    """A member lets a delegate vote for them, on some services and gates, until `not_after`."""

    delegator: UserName
    delegate: UserName
    services: list[ServiceName] = Field(min_length=1, max_length=50)
    gates: list[Gate] = Field(min_length=1, max_length=4)
    not_after: UtcSeconds

    @model_validator(mode="after")
    def _not_self(self) -> Delegation:
        if self.delegator == self.delegate:
            raise ValueError("a delegation names two different people")
        return self

    def scope_hash(self) -> str:
        return canonical_digest(
            {
                "delegate": self.delegate,
                "services": sorted(self.services),
                "gates": sorted(g.value for g in self.gates),
                "not_after": self.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )

    def statement(self, release_id: str, issued_at: datetime, nonce: str) -> Statement:
        del release_id  # a delegation is not bound to one release
        return Statement(
            kind=StatementKind.DELEGATION,
            release_id="*",
            subject=",".join(sorted(g.value for g in self.gates)),
            subject_hash=self.scope_hash(),
            decision="delegate",
            actor=self.delegator,
            on_behalf_of=self.delegate,
            comment_digest=digest(""),
            issued_at=issued_at,
            nonce=nonce,
        )


class PersonTrust(Model):
    """A person the catalog declares, with every public key that speaks for them."""

    name: UserName
    keys: list[PublicKeyText] = Field(default_factory=list, max_length=10)
    """More than one during a key rotation; removing a key revokes it (see the README)."""


class ProviderTrust(Model):
    """An identity provider (the web console) trusted to vouch for the people it lists."""

    name: Slug
    keys: list[PublicKeyText] = Field(min_length=1, max_length=10)
    vouches_for: list[UserName] = Field(default_factory=list)


class ChangeModel(Model):
    """A pre-approved (standard) change the catalog declares for a service."""

    name: Slug
    description: ShortText
    stages: list[Slug] = Field(default_factory=list)
    """Rollout stages (names from the service) a change of this model runs; empty: all."""
    max_risk: Risk = Risk.LOW
    requesters: list[UserName] = Field(min_length=1)
    """Who may request a change of this model."""


class Trust(Model):
    """Who may do what for one service, and with which keys: from the worker's catalog."""

    signatures: Literal["required", "off"] = "required"
    people: list[PersonTrust] = Field(default_factory=list)
    providers: list[ProviderTrust] = Field(default_factory=list)
    roles: dict[Role, list[UserName]] = Field(default_factory=dict)
    quorum: int = Field(default=1, ge=1)
    """CAB approvals a normal change needs at each gate (the retro gate of an emergency too)."""
    change_models: list[ChangeModel] = Field(default_factory=list)

    def members(self, role: Role) -> list[str]:
        return list(self.roles.get(role, []))

    def keys_of(self, name: str) -> list[str]:
        return [k for p in self.people if p.name == name for k in p.keys]

    def change_model(self, name: str | None) -> ChangeModel | None:
        return next((m for m in self.change_models if m.name == name), None)


class Refusal(Model):
    """A message the workflow refused: who claimed to send it, what, why, when."""

    actor: str
    action: Annotated[str, StringConstraints(max_length=64)]
    reason: Annotated[str, StringConstraints(max_length=300)]
    at: datetime
