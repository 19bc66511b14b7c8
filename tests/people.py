"""The people of the tests, with real Ed25519 keys, and the trust a test catalog gives them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeVar

from temporalio.testing import WorkflowEnvironment

from relman.contracts import ChangeModel, PersonTrust, ProviderTrust, Role, Trust
from relman.identity.keys import Signer
from relman.identity.signing import Signable, seal

CAB = ["alice", "bob", "carol", "dave"]
ECAB = ["erin"]
OPERATORS = ["oli", "alice"]
CHANGE_MANAGERS = ["carol", "cm"]
RELEASE_MANAGERS = ["rex"]
OTHERS = ["rita", "pat", "tester", "zoe", "mallory"]
"""rita and pat request releases; zoe and mallory hold no role."""

PEOPLE: dict[str, Signer] = {
    name: Signer.generate(name)
    for name in dict.fromkeys(CAB + ECAB + OPERATORS + CHANGE_MANAGERS + RELEASE_MANAGERS + OTHERS)
}
CONSOLE = Signer.generate("console", provider="console")
"""An identity provider (the web console) that vouches for alice and bob."""

S = TypeVar("S", bound=Signable)

CLOCK: WorkflowEnvironment | None = None
"""The time-skipping server whose clock signatures follow (its time runs ahead of ours)."""


async def now() -> datetime:
    return await CLOCK.get_current_time() if CLOCK is not None else datetime.now(UTC)


def trust(*, signatures: str = "required", quorum: int = 2) -> Trust:
    return Trust(
        signatures=signatures,  # type: ignore[arg-type]
        people=[PersonTrust(name=name, keys=[s.public]) for name, s in PEOPLE.items()],
        providers=[ProviderTrust(name="console", keys=[CONSOLE.public], vouches_for=["alice", "bob"])],
        roles={
            Role.CAB: CAB,
            Role.ECAB: ECAB,
            Role.OPERATORS: OPERATORS,
            Role.CHANGE_MANAGERS: CHANGE_MANAGERS,
            Role.RELEASE_MANAGERS: RELEASE_MANAGERS,
        },
        quorum=quorum,
        change_models=[
            ChangeModel(
                name="config-tweak", description="A configuration change", requesters=["rita", "pat"]
            ),
        ],
    )


def signed(message: S, release_id: str, who: str | None = None, *, at: datetime | None = None) -> S:
    """`message` signed for `release_id` by `who` (default: the name it carries), now."""
    name = (
        who
        or getattr(message, "approver", None)
        or getattr(message, "by", None)
        or getattr(message, "delegator", None)
        or getattr(message, "requested_by", None)
    )
    assert name is not None, "whose message is this?"
    return seal(message, release_id, PEOPLE[name], now=at)


async def sign(message: S, release_id: str, who: str | None = None) -> S:
    """`signed` on the test server's clock."""
    return signed(message, release_id, who, at=await now())
