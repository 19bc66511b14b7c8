"""Sign a message: derive its statement, sign the canonical bytes, attach the proof."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from relman.contracts import Proof, Statement
from relman.identity.keys import Signer


class Signable(Protocol):
    proof: Proof | None

    def statement(self, release_id: str, issued_at: datetime, nonce: str) -> Statement: ...

    def model_copy(self, *, update: dict[str, object] | None = None, deep: bool = False) -> Signable: ...


S = TypeVar("S", bound=Signable)


def seal(message: S, release_id: str, signer: Signer, *, now: datetime | None = None) -> S:
    """`message` with a fresh proof by `signer` for `release_id` (issued now, random nonce)."""
    issued_at = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    nonce = secrets.token_hex(16)
    statement = message.statement(release_id, issued_at, nonce)
    proof = Proof(
        issued_at=issued_at,
        nonce=nonce,
        key_id=signer.key_id,
        signature=signer.sign(statement.canonical()),
        provider=signer.provider,
    )
    return message.model_copy(update={"proof": proof})  # type: ignore[return-value]
