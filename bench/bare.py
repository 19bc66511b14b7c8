"""The bare-Temporal reference: a workflow that waits for signals, then runs trivial activities.

It has as many regular and local activities as a real normal release (the benchmark counts
them from a release's history and passes the counts in), the same sandbox and the same
pydantic data converter, and an update with a validator for the round-trip comparison.
`decide_signed` is that update with the cryptography relman's `decide` does: its validator
and its handler each check an Ed25519 signature over the message (the public key comes with
the workflow's input, as a release's keys come with its catalog profile), with
`cryptography` directly and nothing else, so the benchmark can tell the cost of the crypto
from the cost of relman's checking around it.
"""

from __future__ import annotations

import base64
from datetime import timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError

BARE_WORKFLOW = "BareWorkflow"


class BareInput(BaseModel):
    signals: int = 4
    """Signals to wait for before the steps run (a normal release takes 2 + 2 approvals)."""
    regular: int = 18
    local: int = 9
    public_key: str = ""
    """Base64 of the raw Ed25519 public key `decide_signed` checks signatures with."""


class BareSignedVote(BaseModel):
    """A vote with a raw Ed25519 signature over `message` (base64 both)."""

    approver: str
    message: str
    signature: str


@activity.defn(name="bare_step")
async def bare_step(i: int) -> int:
    return i


@workflow.defn(name=BARE_WORKFLOW)
class BareWorkflow:
    @workflow.init
    def __init__(self, inp: BareInput) -> None:
        self._signals = 0
        self._public_key = inp.public_key

    @workflow.run
    async def run(self, inp: BareInput) -> int:
        await workflow.wait_condition(lambda: self._signals >= inp.signals)
        total = 0
        # Local activities spread over the regular ones, as in a release.
        for i in range(max(inp.regular, inp.local)):
            if i < inp.local:
                total += await workflow.execute_local_activity(
                    bare_step, i, start_to_close_timeout=timedelta(seconds=30)
                )
            if i < inp.regular:
                total += await workflow.execute_activity(
                    bare_step, i, start_to_close_timeout=timedelta(seconds=30)
                )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return total

    @workflow.signal
    def approve(self, approver: str) -> None:
        self._signals += 1

    @workflow.update
    def decide(self, approver: str) -> int:
        self._signals += 1
        return self._signals

    @decide.validator
    def _validate_decide(self, approver: str) -> None:
        if not approver:
            raise ApplicationError("an approver is required", type="VoteRefused")

    @workflow.update
    def decide_signed(self, vote: BareSignedVote) -> int:
        self._check(vote)  # relman's handler checks the vote again too
        self._signals += 1
        return self._signals

    @decide_signed.validator
    def _validate_decide_signed(self, vote: BareSignedVote) -> None:
        self._check(vote)

    def _check(self, vote: BareSignedVote) -> None:
        if not vote.approver:
            raise ApplicationError("an approver is required", type="VoteRefused")
        try:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(self._public_key))
            key.verify(base64.b64decode(vote.signature), base64.b64decode(vote.message))
        except (InvalidSignature, ValueError):
            raise ApplicationError("bad signature", type="VoteRefused") from None
