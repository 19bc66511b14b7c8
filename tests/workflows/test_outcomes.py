"""How a release's run ends in Temporal, and that no error in workflow code hangs a release.

A failed change (rolled back, or its undo failed) ends FAILED, with the final status in the
failure's details, so the UI's failure views find it; decisions (rejected, expired, aborted)
end COMPLETED. Time-skipping server, test activities under the real names.
"""

from __future__ import annotations

from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from relman import visibility
from relman.contracts import (
    Activity,
    ChangeType,
    CloseCode,
    Conflict,
    ErrorType,
    Gate,
    Outcome,
    RolloutStage,
    ServiceProfile,
    Verdict,
    WindowQuery,
)
from relman.results import final_status
from relman.workflows.release import FAILED_RUN, ReleaseWorkflow
from tests.helpers import new_worker
from tests.workflows.fakes import FakeActivities, make_request, profile_for
from tests.workflows.test_release import at_gate, record_history, start, until


async def test_a_rolled_back_release_ends_its_run_failed_with_its_status(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities(fail_steps={"deploy-production"})
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        try:
            await handle.result()
            raise AssertionError("a rolled-back release completed its run")
        except WorkflowFailureError as exc:
            cause = exc.cause
        final = await final_status(handle)
        desc = await handle.describe()
        history = await handle.fetch_history()
    assert isinstance(cause, ApplicationError) and cause.type == ErrorType.RELEASE_FAILED
    assert cause.non_retryable and "rolled_back" in cause.message and "injected failure" in cause.message
    assert desc.status is WorkflowExecutionStatus.FAILED
    assert desc.typed_search_attributes.get(visibility.RELEASE_OUTCOME) == Outcome.ROLLED_BACK
    assert final.outcome is Outcome.ROLLED_BACK and final.release_id == handle.id
    # The CMDB record and the compensations come first: failing the run changes nothing else.
    assert fake.closes[-1].close_code is CloseCode.ROLLED_BACK
    markers = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert sum(FAILED_RUN.encode() in m.SerializeToString() for m in markers) == 1
    record_history("standard_rolled_back_failed_run", history)


async def test_a_rejected_release_completes_its_run(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities()
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(service="unknown"))
        final = await final_status(handle)
        desc = await handle.describe()
    assert final.outcome is Outcome.REJECTED
    assert desc.status is WorkflowExecutionStatus.COMPLETED
    assert desc.typed_search_attributes.get(visibility.RELEASE_OUTCOME) == Outcome.REJECTED


def full_stage_profile(service: str) -> ServiceProfile:
    """Injected fault: a catalog that slipped a 100% stage past its check (the catalog now
    refuses one at load), so the workflow's own planning raises a plain ValueError."""
    profile = profile_for(service)
    return profile.model_copy(
        update={"stages": [*profile.stages, RolloutStage(name="full", percent=100, bake_seconds=0)]}
    )


async def test_an_error_in_workflow_code_ends_the_release_instead_of_hanging(
    ts_env: WorkflowEnvironment,
) -> None:
    fake = FakeActivities(profile=full_stage_profile)
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        final = await final_status(handle, rpc_timeout=None)
        desc = await handle.describe()
        history = await handle.fetch_history()
        meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert final.outcome is Outcome.ROLLED_BACK
    assert "error in the release workflow: ValueError" in final.reason
    assert "full is at 100%" in final.reason
    assert final.needs_operator and final.awaiting == ["operator"]
    assert "\n\n**closed: rolled_back** — error in the release workflow: ValueError" in meta.current_details
    assert "operator action required" in meta.current_details
    # Ended, undone and recorded: the change record carries the reason.
    assert desc.status is WorkflowExecutionStatus.FAILED
    assert fake.closes[-1].close_code is CloseCode.UNSUCCESSFUL
    assert "full is at 100%" in fake.closes[-1].reason
    record_history("standard_workflow_error_ended", history)


async def test_a_rollback_at_the_allow_list_is_no_failed_deployment(ts_env: WorkflowEnvironment) -> None:
    fake = FakeActivities(verdicts={"health-allow-list-0": Verdict.FAIL})
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        final = await final_status(handle)
    assert final.outcome is Outcome.ROLLED_BACK
    assert [s.percent for s in final.stages] == [0]  # only named internal people saw it
    assert fake.closes[-1].close_code is CloseCode.ROLLED_BACK
    assert fake.closes[-1].failed_at is None


async def test_an_activity_result_that_breaks_its_contract_ends_the_release(
    ts_env: WorkflowEnvironment,
) -> None:
    """Injected fault: a window check answering out of contract (a CMDB adapter bug). The
    release ends undone and recorded, instead of the run failing with nothing compensated."""
    fake = FakeActivities()

    @activity.defn(name=Activity.CHECK_WINDOW)
    async def broken_window_check(q: WindowQuery) -> dict[str, Any]:
        if q.step == "request":
            return {"open": True}
        return {"open": "perhaps", "window": 42}

    activities = [broken_window_check if a == fake.check_window else a for a in fake.all()]
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=activities) as worker:
        handle = await start(ts_env, worker, make_request(ChangeType.STANDARD))
        final = await final_status(handle)
    assert final.outcome is Outcome.ROLLED_BACK
    assert "error in the release workflow: ValidationError" in final.reason
    assert "WindowDecision" in final.reason and "open" in final.reason
    assert final.needs_operator
    assert final.compensations == ["exposure to 0%", "roll back staging"]
    assert fake.closes[-1].close_code is CloseCode.UNSUCCESSFUL


async def test_conflicts_are_shown_to_the_cab_and_in_the_status(ts_env: WorkflowEnvironment) -> None:
    other = Conflict(ci="payments-db", via="depends_on payments-db", release_id="release-db-7")
    fake = FakeActivities(conflicts=[other])
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=fake.all()) as worker:
        handle = await start(ts_env, worker, make_request())
        waiting = await until(ts_env, handle, at_gate(Gate.REQUEST))
        meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        asked = [n for n in fake.notifications if n.event == "gate.request"]
        # Left waiting at its gate, a release would hold the shared test server's clock.
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert waiting.conflicts == [other]
    said = "**conflicts**: release release-db-7 on payments-db (depends_on payments-db)"
    assert said in meta.current_details
    assert len(asked) == 1 and said in asked[0].message
    assert ("check_window", "conflicts-request") in fake.calls
