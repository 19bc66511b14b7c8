"""The vote handlers a release and a release train share: approve, reject, decide.

A mixin, not a workflow: the workflow that uses it says how a message is checked (`_ctx`, its
trust and clock), when it is ready to judge one (`_ready`), and how the awaited people and
the UI details are shown. Every vote goes through `policy.refusal` and `policy.record_vote`.
"""

from __future__ import annotations

from typing import Any, Protocol

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from relman.contracts import Decision, ErrorType, Gate, GateStatus, Message, Refusal, Vote
    from relman.workflows import details, policy

MAX_REFUSALS = 50
"""Refused messages kept in the status (the latest); `refused` counts them all."""


class GatedStatus(Protocol):
    """What the handlers read and write of a workflow's status."""

    gates: dict[Gate, GateStatus]
    refusals: list[Refusal]
    refused: int


class VoteHandlers:
    """approve/reject signals and the decide update, checked for who sent them."""

    _s: GatedStatus

    # --- what the workflow provides ---------------------------------------------------

    def _ctx(self) -> policy.Context:
        raise NotImplementedError

    def _ready(self) -> bool:
        """Whether the trust that messages are judged by is known (or the workflow ended)."""
        raise NotImplementedError

    def _not_ready(self) -> str | None:
        raise NotImplementedError

    def _remember(self, nonce: str) -> None:
        """Keep a used nonce: every signed message is accepted once."""
        raise NotImplementedError

    def _set_awaiting(self, who: list[str]) -> None:
        raise NotImplementedError

    def _details(self, text: str) -> None:
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------

    def _refuse(self, actor: str, action: str, reason: str) -> None:
        """A refused message counts for nothing; the status keeps the latest ones."""
        workflow.logger.warning("%s by %s refused: %s", action, actor, reason)
        self._s.refused += 1
        refusal = Refusal(actor=actor, action=action[:64], reason=reason[:300], at=workflow.now())
        self._s.refusals = [*self._s.refusals, refusal][-MAX_REFUSALS:]

    def _accept(self, message: Any) -> None:
        proof = getattr(message, "proof", None)
        if proof is not None:
            self._remember(proof.nonce)

    async def _catalog_read(self) -> None:
        """Signals wait for the catalog's trust: one sent with the start (or in the first
        workflow task) would otherwise be judged against nobody's keys and lost."""
        await workflow.wait_condition(self._ready)

    @workflow.signal(name=Message.APPROVE.value)
    async def approve(self, vote: Vote) -> None:
        """Fire-and-forget approval; a refused vote is kept in the status's refusals."""
        await self._catalog_read()
        self._take_vote(vote, Decision.APPROVE)

    @workflow.signal(name=Message.REJECT.value)
    async def reject(self, vote: Vote) -> None:
        """Fire-and-forget rejection (any rejection vetoes the gate)."""
        await self._catalog_read()
        self._take_vote(vote, Decision.REJECT)

    @workflow.update(name=Message.DECIDE.value)
    def decide(self, vote: Vote) -> GateStatus:
        """Approve or reject with an immediate answer; refusals leave no history."""
        if reason := self._take_vote(vote):
            raise ApplicationError(reason, type=ErrorType.REFUSED, non_retryable=True)
        return self._s.gates[vote.gate]

    @decide.validator
    def _validate_decide(self, vote: Vote) -> None:
        if reason := self._not_ready() or policy.refusal(self._s.gates.get(vote.gate), vote, self._ctx()):
            raise ApplicationError(reason, type=ErrorType.REFUSED, non_retryable=True)

    def _take_vote(self, vote: Vote, expected: Decision | None = None) -> str | None:
        gate = self._s.gates.get(vote.gate)
        reason = policy.refusal(gate, vote, self._ctx())
        if expected is not None and vote.decision is not expected:
            reason = f"the {expected} signal carries a vote to {vote.decision}"
        if reason or gate is None:
            reason = reason or f"gate {vote.gate} is not open yet"
            self._refuse(vote.approver, f"{vote.decision} at {vote.gate}", reason)
            return reason
        self._accept(vote)
        self._s.gates[vote.gate] = updated = policy.record_vote(gate, vote, workflow.now())
        self._set_awaiting(policy.waiting_for(updated))
        self._details(details.gate(updated))
        return None
