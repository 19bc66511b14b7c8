"""A release's final status, whether its run completed or ended failed as a failed change.

A rolled-back release, or one needing an operator, ends its Temporal run as FAILED (so the UI's
failure views find it) with the final ReleaseStatus in the failure's details; every other outcome
completes with it as the result. Callers read both the same way through `final_status`.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from relman.contracts import ErrorType, ReleaseStatus


def failed_status(exc: BaseException) -> ReleaseStatus | None:
    """The final status a failed change's run carries, or None for any other failure."""
    cause = exc.cause if isinstance(exc, WorkflowFailureError) else exc
    if isinstance(cause, ApplicationError) and cause.type == ErrorType.RELEASE_FAILED and cause.details:
        return ReleaseStatus.model_validate(cause.details[0])
    return None


async def final_status(handle: WorkflowHandle[Any, Any], **result_options: Any) -> ReleaseStatus:
    """Wait for the run to end and return the release's final status."""
    try:
        return ReleaseStatus.model_validate(await handle.result(**result_options))
    except WorkflowFailureError as exc:
        if (status := failed_status(exc)) is None:
            raise
        return status
