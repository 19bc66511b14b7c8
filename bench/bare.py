"""The bare-Temporal reference: a workflow that waits for signals, then runs trivial activities.

It has as many regular and local activities as a real normal release (the benchmark counts
them from a release's history and passes the counts in), the same sandbox and the same
pydantic data converter, and an update with a validator for the round-trip comparison.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError

BARE_WORKFLOW = "BareWorkflow"


class BareInput(BaseModel):
    signals: int = 4
    """Signals to wait for before the steps run (a normal release takes 2 + 2 approvals)."""
    regular: int = 18
    local: int = 9


@activity.defn(name="bare_step")
async def bare_step(i: int) -> int:
    return i


@workflow.defn(name=BARE_WORKFLOW)
class BareWorkflow:
    def __init__(self) -> None:
        self._signals = 0

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
