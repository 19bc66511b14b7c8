"""Verify a signed message against the catalog's trust: pure, deterministic, no I/O.

The workflow calls this in its update validators and signal handlers, `relman verify`
calls it again offline on the evidence. Every refusal is one sentence.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from relman.contracts import SIGNATURE_SKEW, Trust
from relman.identity.keys import key_id, verify_signature
from relman.identity.signing import Signable


def _at(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%SZ")


def proof_problem(
    message: Signable,
    *,
    actor: str,
    release_id: str,
    trust: Trust,
    now: datetime | None,
    seen_nonces: Collection[str] = (),
    max_age: timedelta | None = SIGNATURE_SKEW,
) -> str | None:
    """Why `message` does not prove that `actor` sent it for `release_id`, or None.

    `now=None` skips the clock checks (offline verification of evidence: the times were
    checked when the workflow accepted the message, and the evidence records them).
    """
    proof = message.proof
    if proof is None:
        if trust.signatures == "off":
            return None
        return f"{actor}'s message is not signed, and this service requires signatures"
    if proof.nonce in seen_nonces:
        return "this signed message was already used (its nonce was seen before)"
    if now is not None:
        if proof.issued_at > now + SIGNATURE_SKEW:
            return f"signed for {_at(proof.issued_at)}, later than now ({_at(now)}) plus {SIGNATURE_SKEW}"
        if max_age is not None and proof.issued_at < now - max_age:
            return (
                f"signed at {_at(proof.issued_at)}, more than {max_age} before now ({_at(now)}); "
                "sign it again"
            )
    if proof.provider is not None:
        provider = next((p for p in trust.providers if p.name == proof.provider), None)
        if provider is None:
            return f"identity provider {proof.provider} is not trusted by the catalog"
        if actor not in provider.vouches_for:
            return f"identity provider {proof.provider} may not vouch for {actor}"
        keys, owner = provider.keys, f"identity provider {proof.provider}"
    else:
        keys, owner = trust.keys_of(actor), actor
        if not keys:
            return f"{actor} has no public key in the catalog"
    key = next((k for k in keys if key_id(k) == proof.key_id), None)
    if key is None:
        return f"key {proof.key_id} is not a key of {owner} in the catalog"
    statement = message.statement(release_id, proof.issued_at, proof.nonce)
    if not verify_signature(key, proof.signature, statement.canonical()):
        return (
            f"the signature by {owner} does not match this message "
            "(forged, altered, or signed for another release, gate or hash)"
        )
    return None
