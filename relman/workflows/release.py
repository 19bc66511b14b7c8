"""ReleaseWorkflow: one durable workflow per release, read top to bottom as the ITIL process.

requested → awaiting_cab → planning → awaiting_plan_approval → building → testing →
dark_launch → deploying → reviewing → closing. Decisions come from `policy`; side effects
run in activities, each with its compensation registered before it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import pydantic

    from relman import visibility
    from relman.contracts import (
        GO_LIVE,
        WORKFLOW_NAME,
        ActionRecord,
        ActionResult,
        Activity,
        AmendmentRecord,
        BuildInput,
        ChangeRecordInput,
        CloseChangeInput,
        ConflictMode,
        DeployInput,
        DeployRecord,
        DeployResult,
        Environment,
        ErrorType,
        EventInput,
        EvidenceInput,
        EvidenceRecord,
        ExposureInput,
        ExposureResult,
        Feedback,
        Gate,
        GateState,
        GateStatus,
        HealthInput,
        HealthReport,
        LeaseDecision,
        LeaseInput,
        Message,
        Notification,
        OperatorAction,
        OperatorVerb,
        Outcome,
        Phase,
        PhaseTransition,
        PlanAmendment,
        ReleasePackage,
        ReleasePlan,
        ReleaseRequest,
        ReleaseStatus,
        Risk,
        RollbackInput,
        RolloutStage,
        ServiceProfile,
        StageStatus,
        TestInput,
        TestReport,
        Trust,
        Verdict,
        WindowDecision,
        WindowQuery,
        WindowWait,
        release_id_problem,
    )
    from relman.errors import one_line
    from relman.workflows import details, policy
    from relman.workflows.messages import MAX_REFUSALS as MAX_REFUSALS
    from relman.workflows.messages import VoteHandlers

T = TypeVar("T")

# Bounded retries everywhere: the default policy retries forever.
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=5,
    non_retryable_error_types=[e.value for e in ErrorType],
)
# CMDB writes must land even through a database outage of minutes.
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=60,
    non_retryable_error_types=[ErrorType.INVALID_REQUEST.value],
)
COMPENSATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
)
PAUSE_LIMIT = timedelta(days=14)
CONFLICTS_AT_REQUEST = "conflicts-at-request"
"""Patch: a request is checked for conflicts before the CAB gate (one local activity more)."""
EXACT_WINDOW_WAIT = "exact-window-wait"
"""Patch: a closed window with a known reopening is waited for with one timer, not hourly."""
FAILED_RUN = "failed-change-fails-run"
"""Patch: runs recorded before it end COMPLETED whatever the outcome; newer failed changes FAILED."""
HEALTH_RECHECKS = 2


@dataclass
class _Run:
    """What the workflow keeps beside its status: steering flags, facts for the CMDB, nonces."""

    abort: OperatorAction | None = None
    promote: bool = False
    deployed: DeployResult | None = None
    production_at: datetime | None = None
    failed_at: datetime | None = None
    lease_held: bool = False
    waiting: WindowWait | None = None
    """The closed window the release waits on now: the only one an override may name."""
    nonces: set[str] = field(default_factory=set)
    """Every signed message is accepted once."""
    events: list[EventInput] = field(default_factory=list)
    """Audit rows (amendments, overrides) not yet written to the CMDB."""
    compensations: list[tuple[str, Callable[[], Awaitable[Any]]]] = field(default_factory=list)
    pending: dict[str, SearchAttributeUpdate[Any]] = field(default_factory=dict)


class _Stop(Exception):
    """Ends the release early with an outcome (rejected, expired, rolled back, aborted)."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


# A request that fails its contract (sent by any Temporal client) fails the workflow with the
# field named, instead of failing its workflow task forever.
@workflow.defn(name=WORKFLOW_NAME, failure_exception_types=[pydantic.ValidationError])
class ReleaseWorkflow(VoteHandlers):
    _s: ReleaseStatus

    @workflow.init
    def __init__(self, request: ReleaseRequest) -> None:
        self._s = ReleaseStatus(release_id=workflow.info().workflow_id, request=request)
        self._profile: ServiceProfile | None = None
        self._run = _Run()

    # --- the process ----------------------------------------------------------

    @workflow.run
    async def run(self, request: ReleaseRequest) -> ReleaseStatus:
        if problem := release_id_problem(self._s.release_id):
            raise ApplicationError(problem, type=ErrorType.INVALID_REQUEST, non_retryable=True)
        outcome, reason = Outcome.COMPLETED, ""
        try:
            await self._requested()
            await self._gate(Gate.REQUEST, Phase.AWAITING_CAB, request.content_hash())
            self._planning()
            await self._gate(Gate.PLAN, Phase.AWAITING_PLAN_APPROVAL, self._s.plan_hash)
            await self._record("authorized", "authorized", Activity.UPDATE_CHANGE)
            await self._building()
            await self._testing()
            await self._dark_launch()
            await self._deploying()
            outcome, findings = await self._reviewing()
            reason = "; ".join(findings)
        except _Stop as stop:
            outcome, reason = stop.outcome, stop.reason
            self._note_failure(outcome)
            await self._compensate(reason)
        except (ActivityError, ApplicationError) as err:
            outcome, reason = Outcome.ROLLED_BACK, _failure_reason(err)
            self._note_failure(outcome)
            await self._compensate(reason)
        except asyncio.CancelledError:
            # Cancellation of the workflow still undoes everything and records the change.
            self._note_failure(Outcome.ABORTED)
            await self._compensate("workflow cancelled")
            await self._close(Outcome.ABORTED, "workflow cancelled")
            raise
        except workflow.NondeterminismError:
            raise  # the right code, deployed, fixes it: the workflow task retries until then
        except Exception as err:
            # A bug no retry fixes would fail the workflow task forever and hang the release:
            # end it instead, undone and recorded, and flag it for an operator.
            outcome, reason = Outcome.ROLLED_BACK, f"error in the release workflow: {_error_text(err)}"
            workflow.logger.exception("release workflow error")
            self._s.needs_operator = True
            self._s.issues.append(reason[:1000])
            self._note_failure(outcome)
            await self._compensate(reason)
            self._set_awaiting(["operator"])
        await self._close(outcome, reason)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if policy.failed_change(policy.close_code(outcome, self._s.needs_operator)) and workflow.patched(
            FAILED_RUN
        ):
            raise ApplicationError(
                f"{self._s.release_id} {self._s.outcome}: {self._s.reason}"[:1000],
                self._s,
                type=ErrorType.RELEASE_FAILED,
                non_retryable=True,
            )
        return self._s

    async def _requested(self) -> None:
        request = self._s.request
        self._enter(Phase.REQUESTED)
        try:
            self._profile = await self._read_profile()
        except (ActivityError, ApplicationError) as err:  # local activities raise the failure itself
            raise _Stop(Outcome.REJECTED, f"invalid request: {_failure_reason(err)}") from err
        self._s.risk = policy.risk_for(request.change_type, self._profile.criticality)
        await self._record("open", "requested", Activity.OPEN_CHANGE)
        # Who asked, and whether a standard change is really one the catalog pre-approved.
        if refused := policy.request_refusal(request, self._s.risk, self._ctx()):
            raise _Stop(Outcome.REJECTED, f"request refused: {refused}")
        if request.proof is not None:
            self._run.nonces.add(request.proof.nonce)
        if workflow.patched(CONFLICTS_AT_REQUEST):
            # What the CAB should know before it decides; only window checks ever block.
            await self._check_window("request")

    async def _read_profile(self) -> ServiceProfile:
        request = self._s.request
        return await self._activity(
            Activity.VALIDATE_REQUEST,
            request,
            ServiceProfile,
            f"validate {request.service} {request.version} against the catalog",
            local=True,
        )

    async def _refresh_trust(self) -> None:
        """Each gate reads the catalog's keys and roles again: a key or a member removed from
        the worker's catalog stops counting from the next gate of a running release."""
        try:
            fresh = await self._read_profile()
        except (ActivityError, ApplicationError) as err:
            workflow.logger.warning("catalog not re-read, keeping the trust it gave: %s", err)
            return
        self._profile = self.profile.model_copy(update={"trust": fresh.trust})

    async def _gate(self, gate: Gate, phase: Phase, subject_hash: str, evidence: str = "") -> None:
        """Open a gate and wait for its decision; a rejection or expiry ends the release.
        `evidence` is what the approvers decide on, told to them and shown in the UI."""
        status = await self._open_gate(gate, phase, subject_hash, evidence)
        if status.state is GateState.SKIPPED:
            return
        decided = await self._wait(
            lambda: self._s.gates[gate].state is not GateState.OPEN, status.deadline, f"gate {gate} deadline"
        )
        self._s.gates[gate], ended, why = policy.gate_end(self._s.gates[gate], decided, workflow.now())
        if ended is not None:
            raise _Stop(ended, why)

    async def _open_gate(self, gate: Gate, phase: Phase, subject_hash: str, evidence: str = "") -> GateStatus:
        """Every gate opens here: fresh trust, a deadline, the people told, the UI current."""

        def opened() -> GateStatus:
            request = self._s.request
            return policy.open_gate(
                gate, request.change_type, self.profile, subject_hash, workflow.now(), request.requested_by
            )

        status = opened()
        # A gate that opens reads the catalog again (the request gate uses the trust just read).
        if status.state is not GateState.SKIPPED and gate is not Gate.REQUEST:
            await self._refresh_trust()
            status = opened()
        self._s.gates[gate] = status
        if status.state is GateState.SKIPPED:
            return status
        if self._s.phase is phase:
            self._set_awaiting(policy.waiting_for(status))
            self._details("\n\n".join(filter(None, [details.gate(status), evidence])))
        else:
            self._enter(phase)
        # What they decide on, and what else touches this CI (the conflicts seen last).
        asked = f"approval needed at gate {gate}" + (f": {evidence}" if evidence else "")
        asked = "; ".join(filter(None, [asked, details.conflicts(self._s.conflicts)]))
        await self._notify(f"gate.{gate}", asked, status.eligible)
        return status

    def _planning(self) -> None:
        self._enter(Phase.PLANNING)
        self._s.plan = policy.build_plan(self._s.request, self.profile)
        self._s.plan_hash = self._s.plan.content_hash()

    async def _building(self) -> None:
        await self._checkpoint()
        self._enter(Phase.BUILDING)
        request = self._s.request
        self._s.package = await self._activity(
            Activity.BUILD_PACKAGE,
            BuildInput(
                **self._key("build"), service=request.service, version=request.version, commit=request.commit
            ),
            ReleasePackage,
            f"build {request.service} {request.version} @ {request.commit[:12]}",
            timeout=timedelta(minutes=30),
            heartbeat=timedelta(seconds=30),
        )

    async def _testing(self) -> None:
        await self._checkpoint()
        self._enter(Phase.TESTING)
        await self._take_lease()
        await self._deploy(Environment.STAGING)
        request = self._s.request
        report: TestReport = await self._activity(
            Activity.RUN_TESTS,
            TestInput(
                **self._key("tests"),
                service=request.service,
                version=request.version,
                package=self.package,
                acceptance=self.plan.acceptance,
            ),
            TestReport,
            f"test {request.service} {request.version} in staging",
            timeout=timedelta(hours=2),
            heartbeat=timedelta(seconds=30),
        )
        self._s.tests = report
        if not report.accepted:
            raise _Stop(Outcome.ROLLED_BACK, "tests did not meet the acceptance criteria")

    async def _dark_launch(self) -> None:
        self._enter(Phase.DARK_LAUNCH)
        self._register("exposure to 0%", self._exposure_off)
        for stage in self.plan.stages:
            await self._stage(stage)

    async def _stage(self, stage: RolloutStage) -> None:
        await self._checkpoint()
        await self._await_window(stage.name)
        status = StageStatus(name=stage.name, percent=stage.percent, started_at=workflow.now())
        self._s.stages.append(status)
        self._details(f"stage {stage.name}: {stage.percent}% exposed, baking {stage.bake_seconds}s")
        await self._expose(f"expose-stage-{stage.name}", stage.percent, stage.allow_list, stage=stage.name)
        self._run.promote = False
        bake_ends = workflow.now() + timedelta(seconds=stage.bake_seconds)
        await self._wait(lambda: self._run.promote, bake_ends, f"bake of stage {stage.name}")
        try:
            status.verdict = await self._judge_stage(stage, status)
        except Exception:
            # A stage whose health could not be read ends too, unjudged (verdict None). Not a
            # `finally`: an evicted workflow closes this coroutine outside the workflow's loop.
            status.ended_at = status.ended_at or workflow.now()
            raise
        status.ended_at = workflow.now()

    async def _judge_stage(self, stage: RolloutStage, status: StageStatus) -> Verdict:
        """Health of a stage; only a pass promotes, a fail rolls back, anything else asks a human."""
        for attempt in range(HEALTH_RECHECKS + 1):
            report = await self._health(
                Environment.PRODUCTION, f"health-{stage.name}-{attempt}", stage=stage.name
            )
            status.health = report
            action = policy.stage_action(report.verdict)
            if action is policy.StageAction.PROMOTE:
                return report.verdict
            if action is policy.StageAction.ROLL_BACK:
                status.verdict, status.ended_at = report.verdict, workflow.now()
                raise _Stop(Outcome.ROLLED_BACK, f"stage {stage.name} health failed: {report.detail}")
            if report.verdict is Verdict.MARGINAL:
                break
            # No data yet: give the metrics one more bake interval before asking a human.
            recheck = workflow.now() + timedelta(seconds=max(stage.bake_seconds, 30))
            await self._wait(lambda: self._run.promote, recheck, f"stage {stage.name}: health data")
        await self._marginal_decision(stage, status, report)
        self._s.issues.append(f"stage {stage.name}: {report.verdict} health accepted by a human")
        return report.verdict

    async def _marginal_decision(
        self, stage: RolloutStage, status: StageStatus, report: HealthReport
    ) -> None:
        subject = policy.stage_hash(self._s.plan_hash, stage.name)
        self._s.gates.pop(Gate.MARGINAL, None)
        try:
            evidence = f"stage {stage.name} at {stage.percent:g}%: {details.health(report)}"
            await self._gate(Gate.MARGINAL, Phase.DARK_LAUNCH, subject, evidence)
        except _Stop as stop:
            status.verdict, status.ended_at = report.verdict, workflow.now()
            raise _Stop(
                Outcome.ROLLED_BACK, f"stage {stage.name} health {report.verdict}: {stop.reason}"
            ) from None
        finally:
            # The gate is reopened for the next marginal stage; each stage keeps its decisions.
            status.decisions = list(self._s.gates[Gate.MARGINAL].votes)

    async def _deploying(self) -> None:
        await self._checkpoint()
        self._enter(Phase.DEPLOYING)
        await self._await_window(GO_LIVE)
        self._run.deployed = await self._deploy(Environment.PRODUCTION)
        self._run.production_at = workflow.now()
        # Full exposure and verification together: one workflow task fewer per release.
        report, _ = await asyncio.gather(
            self._health(Environment.PRODUCTION, "verify-production"),
            self._expose("expose-go-live", 100.0, [], stage=GO_LIVE),
        )
        if report.verdict is Verdict.FAIL:
            raise _Stop(Outcome.ROLLED_BACK, f"production verification failed: {report.detail}")
        if report.verdict is not Verdict.PASS:
            self._s.issues.append(f"production verification: {report.verdict}")
        await self._give_back_lease()

    async def _reviewing(self) -> tuple[Outcome, list[str]]:
        self._enter(Phase.REVIEWING)
        self._run.promote = False
        # Past go-live the change stays; later failures are findings, not rollbacks.
        self._run.compensations.clear()
        review_ends = workflow.now() + self.profile.review_period
        retro = await self._open_gate(Gate.RETRO, Phase.REVIEWING, self._s.request.content_hash())
        review = f"review until {details.when(review_ends)}; feedback welcome"
        self._details(f"{review}\n\n{details.gate(retro)}" if retro.state is GateState.OPEN else review)
        await self._wait(
            lambda: self._run.promote and self._retro_done(), review_ends, "review period", honour_pause=False
        )
        if retro.state is GateState.OPEN:
            await self._wait(self._retro_done, retro.deadline, "gate retro deadline", honour_pause=False)
        findings: list[str] = []
        retro_final = self._s.gates[Gate.RETRO]
        if retro_final.state is GateState.OPEN:
            self._s.gates[Gate.RETRO] = policy.expire(retro_final, workflow.now())
            findings.append("retro-approval expired without a CAB decision")
        elif retro_final.state is GateState.REJECTED:
            findings.append("retro-approval rejected by the CAB")
        health = await self._health(Environment.PRODUCTION, "review-health")
        lead = workflow.now() - (self._s.request.committed_at or self._s.history[0].at)
        self._s.kpis = policy.kpis(health, self._s.feedback, lead)
        outcome, more = policy.review_outcome(health, self._s.feedback, self._s.issues + findings)
        return outcome, more

    def _retro_done(self) -> bool:
        return self._s.gates[Gate.RETRO].state is not GateState.OPEN

    async def _close(self, outcome: Outcome, reason: str) -> None:
        """Record the outcome and the signed evidence: no release ends without its change record."""
        self._enter(Phase.CLOSING)
        await self._give_back_lease()
        await self._record_events()
        overrides = [
            f"window {w.window!r} passed before {w.step} by {w.override.by}: {w.override.reason}"
            for w in self._s.window_waits
            if w.override is not None
        ]
        self._s.outcome = outcome
        self._s.reason = "; ".join([reason, *overrides] if reason else overrides)[:1000]
        for gate, status in self._s.gates.items():
            self._s.gates[gate] = policy.withdraw(status, workflow.now())
        request = self._s.request
        approvals = [a for g in self._s.gates.values() for a in g.votes]
        deployed = outcome in (Outcome.COMPLETED, Outcome.COMPLETED_WITH_ISSUES)
        live = self._run.deployed
        close_code = policy.close_code(outcome, self._s.needs_operator)
        await self._activity(
            Activity.CLOSE_CHANGE,
            CloseChangeInput(
                **self._key("close"),
                request=request,
                risk=self._s.risk or Risk.MEDIUM,
                outcome=outcome,
                close_code=close_code,
                reason=self._s.reason,
                ci_name=self._profile.ci_name if self._profile else request.service,
                deployed_version=live.version if live and deployed else None,
                previous_version=live.previous_version if live else None,
                artifact_digest=self._s.package.digest if self._s.package and deployed else None,
                approvals=approvals,
                kpis=self._s.kpis,
                feedback=self._s.feedback,
                production_at=self._run.production_at,
                failed_at=self._run.failed_at,
                recovered_at=workflow.now() if self._run.failed_at and not self._s.needs_operator else None,
            ),
            None,
            f"close change {self._s.release_id}: {outcome}",
            retry=RECORD_RETRY,
        )
        await self._evidence(close_code)
        await self._notify("release.closed", f"{self._s.release_id} closed: {outcome} {reason}".strip(), [])
        self._enter(Phase.CLOSED, note=f"{outcome}")
        self._details(details.closed(self._s))
        self._flush()

    async def _evidence(self, close_code: Any) -> None:
        """The signed release evidence; a failure to write it is flagged, never hidden."""
        try:
            await self._activity(
                Activity.WRITE_EVIDENCE,
                EvidenceInput(**self._key("evidence"), status=self._s, close_code=close_code),
                EvidenceRecord,
                f"sign the release evidence of {self._s.release_id}",
                retry=RECORD_RETRY,
                # A few milliseconds of signing and one row: a marker instead of an activity's
                # events, and the status it signs is not copied into the history again.
                local=True,
            )
        except (ActivityError, ApplicationError) as err:
            self._s.needs_operator = True
            self._s.issues.append(f"release evidence not written: {_failure_reason(err)}")

    # --- steps with compensations -----------------------------------------------

    async def _deploy(self, env: Environment) -> DeployResult:
        request = self._s.request
        step = f"deploy-{env}"

        async def undo() -> None:
            await self._rollback(env, results[0].previous_version if results else None)

        results: list[DeployResult] = []
        self._register(f"roll back {env}", undo)
        result = await self._activity(
            Activity.DEPLOY,
            DeployInput(
                **self._key(step),
                service=request.service,
                environment=env,
                version=request.version,
                package=self.package,
                allow_downgrade=request.allow_downgrade,
            ),
            DeployResult,
            f"deploy {request.service} {request.version} to {env}",
            timeout=timedelta(minutes=15),
            heartbeat=timedelta(minutes=1),
        )
        results.append(result)
        self._s.deploys.append(
            DeployRecord(
                environment=env,
                version=result.version,
                previous_version=result.previous_version,
                at=workflow.now(),
            )
        )
        return result

    async def _rollback(self, env: Environment, restore_version: str | None) -> DeployResult:
        """Undo the deploy to `env` (its step `deploy-<env>`); without the version to restore,
        the adapter restores what that deploy recorded, and does nothing if it never ran."""
        request = self._s.request
        result: DeployResult = await self._activity(
            Activity.ROLLBACK,
            RollbackInput(
                **self._key(f"rollback-{env}"),
                service=request.service,
                environment=env,
                version=request.version,
                restore_version=restore_version,
                deploy_step=f"deploy-{env}",
            ),
            DeployResult,
            f"roll back {env} from {request.version}",
            # As long as a deploy: an environment of commands runs `current`, `rollback`
            # and `current` again (replay-safe: options are not part of the command).
            timeout=timedelta(minutes=15),
            heartbeat=timedelta(minutes=1),
            retry=COMPENSATION_RETRY,
        )
        return result

    async def _expose(
        self,
        step: str,
        percent: float,
        allow_list: list[str],
        *,
        stage: str,
        summary: str | None = None,
        retry: RetryPolicy = STEP_RETRY,
    ) -> None:
        request = self._s.request
        package = self._s.package
        await self._activity(
            Activity.SET_EXPOSURE,
            ExposureInput(
                **self._key(step),
                service=request.service,
                environment=Environment.PRODUCTION,
                version=request.version,
                percent=percent,
                allow_list=allow_list,
                stage=stage,
                digest=package.digest if package else "",
            ),
            ExposureResult,
            summary
            or f"expose {request.version} to {percent}%"
            + (f" + {len(allow_list)} allow-listed" if allow_list else ""),
            retry=retry,
        )

    async def _exposure_off(self) -> None:
        version = self._s.request.version
        await self._expose(
            "exposure-off",
            0.0,
            [],
            stage="exposure-off",
            summary=f"kill switch: exposure of {version} to 0%",
            retry=COMPENSATION_RETRY,
        )

    async def _health(self, env: Environment, step: str, *, stage: str = "") -> HealthReport:
        request = self._s.request
        return await self._activity(
            Activity.CHECK_HEALTH,
            HealthInput(
                **self._key(step),
                service=request.service,
                environment=env,
                version=request.version,
                acceptance=self.plan.acceptance,
                stage=stage,
            ),
            HealthReport,
            f"health of {request.service} {request.version} in {env}",
            # A Prometheus analysis measures for up to 9 minutes (catalog-bounded), heartbeating.
            timeout=timedelta(minutes=10),
            heartbeat=timedelta(seconds=30),
        )

    def _note_failure(self, outcome: Outcome) -> None:
        """Undone after production users saw the new version: a failed deployment (DORA)."""
        if policy.failed_deployment(outcome, self._s.stages, self._run.deployed is not None):
            self._run.failed_at = workflow.now()

    def _register(self, name: str, undo: Callable[[], Awaitable[Any]]) -> None:
        """Register a compensation before the step it undoes runs."""
        self._run.compensations.append((name, undo))

    async def _compensate(self, reason: str) -> None:
        """Run registered compensations in reverse, each once; a failure flags the operator."""
        if not self._run.compensations:
            return
        self._enter(Phase.COMPENSATING, note=reason[:1000])
        while self._run.compensations:
            name, undo = self._run.compensations.pop()
            try:
                await undo()
                self._s.compensations.append(name)
            except (ActivityError, ApplicationError) as err:
                self._s.needs_operator = True
                self._s.issues.append(f"compensation '{name}' failed: {_failure_reason(err)}")
                workflow.logger.error("compensation %s failed: %s", name, err)
        if self._s.needs_operator:
            self._set_awaiting(["operator"])
            self._details("**operator action required**: " + "; ".join(self._s.issues))

    # --- one release at a time per service -------------------------------------------

    async def _take_lease(self) -> None:
        """Hold the service's deployment path from staging deploy to verified go-live.

        Staging feeds production, so a second release of the same service waits here
        (durably, visible as awaiting `release:<holder>`) until the first is live or
        rolled back; it expires after the window-wait deadline.
        """
        deadline = workflow.now() + self.profile.timeouts.window_wait
        backoff = timedelta(seconds=15)
        while True:
            decision = await self._lease(Activity.ACQUIRE_LEASE, LeaseDecision)
            if decision.granted:
                self._run.lease_held = True
                self._set_awaiting([])
                return
            self._set_awaiting([f"release:{decision.holder}"])
            self._details(f"waiting for {decision.holder} to go live or roll back (one release at a time)")
            await self._wait(
                lambda: False, min(workflow.now() + backoff, deadline), f"{decision.holder} to go live"
            )
            if workflow.now() >= deadline:
                raise _Stop(Outcome.EXPIRED, f"{decision.holder} held {self._s.request.service} too long")
            backoff = min(backoff * 2, timedelta(minutes=5))

    async def _give_back_lease(self) -> None:
        if self._run.lease_held:
            await self._lease(Activity.RELEASE_LEASE, None)
            self._run.lease_held = False

    async def _lease(self, name: Activity, result_type: type[T] | None) -> Any:
        return await self._activity(
            name,
            LeaseInput(
                **self._key(f"{name.value}-{len(self._s.history)}"),
                service=self._s.request.service,
                environment=Environment.PRODUCTION,
            ),
            result_type,
            f"{name.value.replace('_', ' ')} on {self._s.request.service}",
            retry=RECORD_RETRY,
            local=True,
        )

    # --- waiting -------------------------------------------------------------------

    async def _wait(
        self, done: Callable[[], bool], until: datetime | None, what: str, *, honour_pause: bool = True
    ) -> bool:
        """Wait for `done` until a deadline; True if it happened. Abort interrupts any wait.

        `what` names the timer in the UI's timeline (a bake, a gate's deadline, a window), which
        otherwise reads `3 (1s)`. Audit rows of what people did meanwhile (amendments,
        overrides) are written to the CMDB as they come, without ending the wait.
        """
        while True:
            timeout = None if until is None else max((until - workflow.now()).total_seconds(), 0.0)
            self._flush()
            try:
                await workflow.wait_condition(
                    lambda: done() or self._run.abort is not None or bool(self._run.events),
                    timeout=timeout,
                    timeout_summary=what[:200],
                )
            except TimeoutError:
                return False
            await self._record_events()
            if done() or self._run.abort is not None:
                break
        if self._run.abort is not None:
            raise _Stop(Outcome.ABORTED, f"aborted by {self._run.abort.by}: {self._run.abort.reason}")
        if honour_pause and self._s.paused:
            await self._checkpoint()
        return True

    async def _checkpoint(self) -> None:
        """Between steps: stop on abort, hold while paused (for at most PAUSE_LIMIT)."""
        if self._run.abort is None and self._s.paused:
            previous = list(self._s.awaiting)
            self._set_awaiting(["operator"])
            self._details("paused by an operator; `resume` to continue")
            if not await self._wait(
                lambda: not self._s.paused, workflow.now() + PAUSE_LIMIT, "pause limit", honour_pause=False
            ):
                raise _Stop(Outcome.ABORTED, f"paused for longer than {PAUSE_LIMIT}")
            self._set_awaiting(previous)
        if self._run.abort is not None:
            raise _Stop(Outcome.ABORTED, f"aborted by {self._run.abort.by}: {self._run.abort.reason}")

    async def _await_window(self, step: str) -> None:
        """Before each exposure step: wait durably until a deployment window is open, or until
        a change manager lets this one step through the window that holds it."""
        deadline = workflow.now() + self.profile.timeouts.window_wait
        what = _what(step)
        wait: WindowWait | None = None
        while True:
            decision = await self._check_window(step)
            if decision.open:
                if wait is not None:
                    wait.until = workflow.now()
                return
            if wait is None or wait.window != decision.window:
                if wait is not None:
                    wait.until = workflow.now()  # that window opened; another holds the step
                wait = WindowWait(
                    step=step,
                    window=decision.window,
                    kind=decision.kind,
                    reason=decision.reason,
                    since=workflow.now(),
                )
                self._s.window_waits.append(wait)
            wait.reopens = decision.next_open
            # One timer to the exact reopening (a weekend freeze: one wake-up, not sixty); a window
            # that reports no reopening is re-checked hourly (windows can be removed).
            hourly = workflow.now() + timedelta(hours=1)
            if decision.next_open is not None and workflow.patched(EXACT_WINDOW_WAIT):
                until = min(decision.next_open, deadline)
            else:
                until = min(decision.next_open or deadline, deadline, hourly)
            until = max(until, workflow.now() + timedelta(seconds=1))
            previous = list(self._s.awaiting)
            self._run.waiting = wait
            self._set_awaiting(["window"])
            self._details(details.window_wait(wait, until, what))
            await self._wait(self._overridden, until, f"window {decision.window} before {what}")
            self._run.waiting = None
            self._set_awaiting(previous)
            # `until` is set once the wait is over (opened, let through, or given up), not at
            # each re-check of a window still closed.
            if wait.override is not None:
                wait.until = workflow.now()
                return
            if workflow.now() >= deadline:
                wait.until = workflow.now()
                raise _Stop(Outcome.EXPIRED, f"no deployment window opened for {what} before the deadline")

    async def _check_window(self, step: str) -> WindowDecision:
        """The CMDB's windows, and conflicts on related CIs (kept in the status), for one step."""
        mode = self.profile.conflicts
        decision: WindowDecision = await self._activity(
            Activity.CHECK_WINDOW,
            WindowQuery(
                service=self._s.request.service,
                environment=Environment.PRODUCTION,
                at=workflow.now(),
                change_type=self._s.request.change_type,
                release_id=self._s.release_id,
                step=step,
                ci_name=self.profile.ci_name,
                conflicts=ConflictMode.WARN if step == "request" and mode is ConflictMode.BLOCK else mode,
            ),
            WindowDecision,
            "conflicts before the CAB" if step == "request" else f"deployment window for {_what(step)}",
            retry=RECORD_RETRY,
            local=True,
        )
        self._s.conflicts = decision.conflicts
        return decision

    def _overridden(self) -> bool:
        return self._run.waiting is not None and self._run.waiting.override is not None

    # --- messages: every one checked for who sent it --------------------------------------

    def _ctx(self) -> policy.Context:
        """What a message is checked against now (updates refuse before the catalog is read)."""
        request = self._s.request
        return policy.Context(
            release_id=self._s.release_id,
            service=request.service,
            requested_by=request.requested_by,
            trust=self._profile.trust if self._profile else Trust(),
            now=workflow.now(),
            seen_nonces=frozenset(self._run.nonces),
        )

    def _not_ready(self) -> str | None:
        if self._profile is None and self._s.outcome is None:
            return "the release has not read its catalog yet; send it again in a moment"
        return None

    def _ready(self) -> bool:
        return self._profile is not None or self._s.outcome is not None

    def _remember(self, nonce: str) -> None:
        self._run.nonces.add(nonce)

    @workflow.signal(name=Message.AMEND_PLAN.value)
    async def amend_plan(self, amendment: PlanAmendment) -> None:
        """A new plan while the plan gate is open: earlier plan approvals no longer count."""
        await self._catalog_read()
        self._amend(amendment)

    @workflow.update(name=Message.AMEND.value)
    def amend(self, amendment: PlanAmendment) -> ReleasePlan:
        """Amend the plan with an immediate answer: the new plan, whose hash votes now bind to."""
        if reason := self._amend(amendment):
            raise ApplicationError(reason, type=ErrorType.REFUSED, non_retryable=True)
        return self.plan

    @amend.validator
    def _validate_amend(self, amendment: PlanAmendment) -> None:
        if reason := self._amendment_refusal(amendment):
            raise ApplicationError(reason, type=ErrorType.REFUSED, non_retryable=True)

    def _amendment_refusal(self, amendment: PlanAmendment) -> str | None:
        if self._profile is None:
            return self._not_ready()
        floor = self._profile.acceptance
        return policy.amendment_refusal(
            amendment, self._s.gates.get(Gate.PLAN), self._s.plan, floor, self._ctx()
        )

    def _amend(self, amendment: PlanAmendment) -> str | None:
        if reason := self._amendment_refusal(amendment):
            self._refuse(amendment.by, "amend plan", reason)
            return reason
        self._accept(amendment)
        old, plan = self.plan, amendment.plan
        previous_hash = self._s.plan_hash
        self._s.plan, self._s.plan_hash = plan, plan.content_hash()
        changes = policy.plan_changes(old, plan)
        self._s.amendments.append(
            AmendmentRecord(
                amendment=amendment,
                at=workflow.now(),
                previous_hash=previous_hash,
                plan_hash=self._s.plan_hash,
                changes=changes,
            )
        )
        gate = self._s.gates[Gate.PLAN]
        self._s.gates[Gate.PLAN] = updated = policy.void_votes(gate, self._s.plan_hash, gate.deadline)
        summary = "; ".join(changes) or "no visible change"
        self._note(f"plan amended to revision {plan.revision} by {amendment.by}: {summary}")
        self._run.events.append(
            EventInput(
                **self._key(f"amend-{plan.revision}"),
                action="plan.amended",
                actor=amendment.by,
                detail={
                    "revision": plan.revision,
                    "previous_hash": previous_hash,
                    "plan_hash": self._s.plan_hash,
                    "changes": changes,
                    "reason": amendment.reason,
                },
            )
        )
        self._set_awaiting(policy.waiting_for(updated))
        self._details(details.gate(updated))
        return None

    @workflow.signal(name=Message.PAUSE.value)
    async def pause(self, action: OperatorAction) -> None:
        await self._catalog_read()
        self._act(action, OperatorVerb.PAUSE)

    @workflow.signal(name=Message.RESUME.value)
    async def resume(self, action: OperatorAction) -> None:
        await self._catalog_read()
        self._act(action, OperatorVerb.RESUME)

    @workflow.signal(name=Message.ABORT.value)
    async def abort(self, action: OperatorAction) -> None:
        """Stop the release: compensations run, outcome `aborted`."""
        await self._catalog_read()
        self._act(action, OperatorVerb.ABORT)

    @workflow.signal(name=Message.PROMOTE.value)
    async def promote(self, action: OperatorAction) -> None:
        """Skip the rest of the current bake (or review period)."""
        await self._catalog_read()
        self._act(action, OperatorVerb.PROMOTE)

    @workflow.signal(name=Message.OVERRIDE_WINDOW.value)
    async def override_window(self, action: OperatorAction) -> None:
        """Let the waiting step through the closed window that holds it; recorded."""
        await self._catalog_read()
        self._act(action, OperatorVerb.OVERRIDE_WINDOW)

    @workflow.update(name=Message.OPERATE.value)
    def operate(self, action: OperatorAction) -> ActionResult:
        """Any operator action with an immediate answer (the CLI's way); refusals leave no history."""
        if reason := self._act(action, action.action):
            raise ApplicationError(reason, type=ErrorType.REFUSED, non_retryable=True)
        baking = next((s.name for s in reversed(self._s.stages) if s.ended_at is None), None)
        return ActionResult(
            record=self._s.actions[-1], phase=self._s.phase, paused=self._s.paused, baking=baking
        )

    @operate.validator
    def _validate_operate(self, action: OperatorAction) -> None:
        if reason := self._action_refusal(action, action.action):
            raise ApplicationError(reason, type=ErrorType.REFUSED, non_retryable=True)

    def _action_refusal(self, action: OperatorAction, verb: OperatorVerb) -> str | None:
        if reason := self._not_ready():
            return reason
        if self._s.outcome is not None:
            return f"the release has ended ({self._s.outcome})"
        if verb is OperatorVerb.ABORT and self._run.abort is not None:
            return f"already aborting (by {self._run.abort.by})"
        return policy.action_refusal(action, verb, self._ctx(), self._run.waiting)

    def _act(self, action: OperatorAction, verb: OperatorVerb) -> str | None:
        if reason := self._action_refusal(action, verb):
            self._refuse(action.by, verb.value, reason)
            return reason
        self._accept(action)
        self._s.actions.append(ActionRecord(action=action, at=workflow.now()))
        if verb is OperatorVerb.PAUSE:
            self._s.paused = True
        elif verb is OperatorVerb.RESUME:
            self._s.paused = False
        elif verb is OperatorVerb.PROMOTE:
            self._run.promote = True
        elif verb is OperatorVerb.ABORT:
            self._run.abort = action
        elif self._run.waiting is not None:
            self._run.waiting.override = action
            self._run.events.append(
                EventInput(
                    **self._key(f"override-{len(self._s.window_waits)}"),
                    action="window.overridden",
                    actor=action.by,
                    detail={"window": action.window, "step": action.step, "reason": action.reason},
                )
            )
        self._note(f"{verb.value.replace('_', ' ')} by {action.by}: {action.reason}")
        return None

    @workflow.signal(name=Message.FEEDBACK.value)
    async def feedback(self, feedback: Feedback) -> None:
        await self._catalog_read()
        if reason := policy.feedback_refusal(feedback, self._ctx()):
            self._refuse(feedback.by, "feedback", reason)
            return
        self._accept(feedback)
        self._s.feedback.append(feedback.model_copy(update={"at": workflow.now()}))

    @workflow.query(name=Message.STATUS.value)
    def status(self) -> ReleaseStatus:
        """The full typed state of the release."""
        return self._s

    @workflow.query(name=Message.HISTORY.value)
    def history(self) -> list[PhaseTransition]:
        """The timeline: phase transitions and operator actions, with their times."""
        return self._s.history

    # --- helpers ---------------------------------------------------------------------

    @property
    def profile(self) -> ServiceProfile:
        assert self._profile is not None
        return self._profile

    @property
    def plan(self) -> ReleasePlan:
        assert self._s.plan is not None
        return self._s.plan

    @property
    def package(self) -> ReleasePackage:
        assert self._s.package is not None
        return self._s.package

    def _key(self, step: str) -> dict[str, str]:
        return {"release_id": self._s.release_id, "step": step}

    async def _activity(
        self,
        name: Activity,
        arg: Any,
        result_type: type[T] | None,
        summary: str,
        *,
        # Short steps (flags, symlinks, CMDB rows) take milliseconds; a worker lost in one
        # costs the release this long before another worker retries it.
        timeout: timedelta = timedelta(seconds=45),
        heartbeat: timedelta | None = None,
        retry: RetryPolicy = STEP_RETRY,
        local: bool = False,
    ) -> Any:
        self._flush()
        # The result arrives as plain JSON and is validated here, in workflow code: a result
        # that breaks its contract then ends the release like any other error (undone and
        # recorded) instead of failing the run before the workflow could react.
        if local:
            # Short reads and notifications: a marker in the history instead of three events
            # and a workflow task of their own.
            raw = await workflow.execute_local_activity(
                name.value,
                arg,
                start_to_close_timeout=timeout,
                retry_policy=retry,
                summary=summary[:200],
            )
        else:
            raw = await workflow.execute_activity(
                name.value,
                arg,
                start_to_close_timeout=timeout,
                heartbeat_timeout=heartbeat,
                retry_policy=retry,
                summary=summary[:200],
            )
        return raw if result_type is None else _adapter(result_type).validate_python(raw)

    async def _record(self, step: str, status: str, name: Activity) -> None:
        request = self._s.request
        await self._activity(
            name,
            ChangeRecordInput(
                **self._key(step),
                request=request,
                risk=self._s.risk,
                ci_name=self.profile.ci_name,
                criticality=self.profile.criticality,
                status=status,
            ),
            None,
            f"CMDB: change {self._s.release_id} {status}",
            retry=RECORD_RETRY,
        )

    async def _record_events(self) -> None:
        """Write the audit rows of amendments and overrides (idempotent by their keys)."""
        while self._run.events:
            event = self._run.events.pop(0)
            await self._activity(
                Activity.RECORD_EVENT,
                event,
                None,
                f"CMDB: {event.action} by {event.actor}",
                retry=RECORD_RETRY,
            )

    async def _notify(self, event: str, message: str, recipients: list[str]) -> None:
        await self._activity(
            Activity.NOTIFY,
            Notification(
                **self._key(f"notify-{len(self._s.history)}"),
                event=event,
                message=message[:1000],
                recipients=recipients,
            ),
            None,
            f"notify {event}",
            timeout=timedelta(seconds=30),
            retry=RetryPolicy(maximum_attempts=3),
            local=True,
        )

    def _enter(self, phase: Phase, note: str = "") -> None:
        self._s.phase = phase
        self._s.history.append(PhaseTransition(phase=phase, at=workflow.now(), note=note))
        gate = self._current_gate()
        awaiting = policy.waiting_for(gate) if gate else []
        if phase is Phase.CLOSED and self._s.needs_operator:
            awaiting = ["operator"]
        self._s.awaiting = awaiting
        request = self._s.request
        updates: list[SearchAttributeUpdate[Any]] = [
            visibility.RELEASE_SERVICE.value_set(request.service),
            visibility.RELEASE_VERSION.value_set(request.version),
            visibility.RELEASE_CHANGE_TYPE.value_set(request.change_type.value),
            visibility.RELEASE_PHASE.value_set(phase.value),
            visibility.RELEASE_AWAITING.value_set(awaiting),
        ]
        if self._s.risk is not None:
            updates.append(visibility.RELEASE_RISK.value_set(self._s.risk.value))
        if phase is Phase.CLOSED and self._s.outcome is not None:
            updates.append(visibility.RELEASE_OUTCOME.value_set(self._s.outcome.value))
        self._publish(updates, defer=True)
        self._details(details.gate(gate) if gate else (note or phase.value))

    def _publish(self, updates: list[SearchAttributeUpdate[Any]], *, defer: bool = False) -> None:
        """Set search attributes; deferred ones are merged until the next wait or activity."""
        self._run.pending.update({u.key.name: u for u in updates})
        if not defer:
            self._flush()

    def _flush(self) -> None:
        """Upsert only the attributes whose value changed: each upsert is a history event."""
        current = workflow.info().typed_search_attributes
        changed = [u for u in self._run.pending.values() if current.get(u.key) != u.value]
        self._run.pending.clear()
        if changed:
            workflow.upsert_search_attributes(changed)

    def _current_gate(self) -> GateStatus | None:
        phase_gate = {
            Phase.AWAITING_CAB: Gate.REQUEST,
            Phase.AWAITING_PLAN_APPROVAL: Gate.PLAN,
            Phase.DARK_LAUNCH: Gate.MARGINAL,
            Phase.REVIEWING: Gate.RETRO,
        }.get(self._s.phase)
        gate = self._s.gates.get(phase_gate) if phase_gate else None
        return gate if gate and gate.state is GateState.OPEN else None

    def _set_awaiting(self, who: list[str]) -> None:
        """The one place `awaiting` changes: the status and the `ReleaseAwaiting` attribute."""
        self._s.awaiting = list(who)
        self._publish([visibility.RELEASE_AWAITING.value_set(list(who))])

    def _details(self, text: str) -> None:
        workflow.set_current_details(details.page(self._s, text))

    def _note(self, text: str) -> None:
        """An entry in the timeline (operator actions, amendments) at the current phase."""
        workflow.logger.info("%s", text)
        self._s.history.append(PhaseTransition(phase=self._s.phase, at=workflow.now(), note=text[:1000]))


_ADAPTERS: dict[Any, pydantic.TypeAdapter[Any]] = {}


def _adapter(result_type: Any) -> pydantic.TypeAdapter[Any]:
    """One validator per result type (built once per worker, never per activity)."""
    if result_type not in _ADAPTERS:
        _ADAPTERS[result_type] = pydantic.TypeAdapter(result_type)
    return _ADAPTERS[result_type]


def _what(step: str) -> str:
    return "go-live" if step == GO_LIVE else f"stage {step}"


def _error_text(err: Exception) -> str:
    """An unexpected error in one line (reasons and notes refuse control characters)."""
    if isinstance(err, pydantic.ValidationError):
        return f"ValidationError: {err.title}: {one_line(err)} ({err.error_count()} error(s))"
    first = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {first}"[:900]


def _failure_reason(err: BaseException) -> str:
    """The innermost failure message of an activity error (e.g. the failing test names)."""
    cause: BaseException | None = err
    message = str(err)
    while cause is not None:
        if isinstance(cause, ApplicationError):
            message = f"{cause.type}: {cause.message}" if cause.type else cause.message
        cause = cause.__cause__
    return message[:1000]
