"""ReleaseComponent: one component of a release train, as a child workflow of the train.

The train starts one child per component and mode, with everything it needs in the start
input (no signal from the parent: a signal has no sender):

- PREPARE: build, deploy to staging, test against the component's acceptance;
- LAUNCH: dark launch through the component's stages (window checks, bakes, health, the
  marginal gate on this child), then go-live;
- BACKOUT: undo what a prepared or launched component did, with the same compensation
  activities, the component's release id and the original deploy steps.

The rest of a release stays with the train: no request or plan gate of its own, no lease (the
train holds them), no CMDB change record, evidence or retrospective. A failed PREPARE or
LAUNCH undoes its own steps and fails its run with the status in the failure's details.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import pydantic

    from relman.contracts import Environment, ErrorType, Outcome, Phase, ReleaseStatus
    from relman.contracts.train_run import COMPONENT_WORKFLOW, Backout, ComponentInput, ComponentMode
    from relman.workflows.release import ReleaseWorkflow, _error_text, _failure_reason, _Run, _Stop


def component_release_id(train_id: str, service: str) -> str:
    """The release id a component's activities are keyed by, the same for all its children,
    so a backout finds the records of that component's deploys."""
    return f"{train_id}.{service}"


def component_child_id(train_id: str, service: str, mode: ComponentMode) -> str:
    return f"{component_release_id(train_id, service)}.{mode.value}"


@workflow.defn(name=COMPONENT_WORKFLOW, failure_exception_types=[pydantic.ValidationError])
class ReleaseComponent(ReleaseWorkflow):
    """A component's release in one mode, run by its train; vote and operator handlers are
    the release's own (a marginal stage is decided on this child)."""

    @workflow.init
    def __init__(self, inp: ComponentInput) -> None:
        self._s = ReleaseStatus(
            release_id=component_release_id(inp.train_id, inp.request.service), request=inp.request
        )
        self._profile = None
        self._run = _Run()
        self._input = inp

    @workflow.run
    async def run(self, inp: ComponentInput) -> ReleaseStatus:  # type: ignore[override]
        parent = workflow.info().parent
        if parent is None or parent.workflow_id != inp.train_id:
            # Started by a client, it would deploy without any gate: only its train may.
            raise ApplicationError(
                f"{workflow.info().workflow_id}: a ReleaseComponent runs only as a child of its train "
                f"{inp.train_id}; start the train instead",
                type=ErrorType.INVALID_REQUEST,
                non_retryable=True,
            )
        self._profile = inp.profile
        self._s.risk = inp.risk
        self._s.plan, self._s.plan_hash = inp.plan, inp.plan.content_hash()
        self._s.package = inp.package
        outcome, reason = Outcome.COMPLETED, ""
        try:
            if inp.mode is ComponentMode.PREPARE:
                await self._building()
                await self._testing()
            elif inp.mode is ComponentMode.LAUNCH:
                await self._dark_launch()
                await self._deploying()
            else:
                await self._back_out(inp.backout)
        except _Stop as stop:
            outcome, reason = stop.outcome, stop.reason
            await self._compensate(reason)
        except (ActivityError, ApplicationError) as err:
            outcome, reason = Outcome.ROLLED_BACK, _failure_reason(err)
            await self._compensate(reason)
        except asyncio.CancelledError:
            # The train cancelled it (an abort, another component's failure): the train backs
            # this component out itself, once, in its backout order.
            raise
        except workflow.NondeterminismError:
            raise
        except Exception as err:
            outcome, reason = Outcome.ROLLED_BACK, f"error in the component workflow: {_error_text(err)}"
            workflow.logger.exception("component workflow error")
            await self._compensate(reason)
        self._s.outcome, self._s.reason = outcome, reason[:1000]
        self._enter(Phase.CLOSED, note=str(outcome))
        self._flush()
        await workflow.wait_condition(workflow.all_handlers_finished)
        if outcome is not Outcome.COMPLETED:
            raise ApplicationError(
                f"{workflow.info().workflow_id} {outcome}: {reason}"[:1000],
                self._s,
                type=ErrorType.RELEASE_FAILED,
                non_retryable=True,
            )
        return self._s

    async def _back_out(self, undo: Backout) -> None:
        """The train's backout of this component: exposure off, production, then staging, each
        once; `_compensate` runs them in reverse of registration and flags a failing one."""
        staging, production = Environment.STAGING, Environment.PRODUCTION
        if undo.staging:
            self._register("roll back staging", lambda: self._rollback(staging, undo.staging_restore))
        if undo.production:
            restore = undo.production_restore
            self._register("roll back production", lambda: self._rollback(production, restore))
        if undo.exposure:
            self._register("exposure to 0%", self._exposure_off)
        await self._compensate("backed out by its train")

    # The train holds every component's lease, taken in one global order.
    async def _take_lease(self) -> None:
        return None

    async def _give_back_lease(self) -> None:
        return None
