"""ReleaseTrain: several components released as one, approved once, delivered in waves.

requested → awaiting_cab → planning → awaiting_plan_approval → building (leases, then every
component prepared in parallel) → dark_launch (wave by wave, each wave's window checked, the
wave's components launched in parallel) → closing. Each component runs as a child workflow
(`ReleaseComponent`) per mode. A failure, an abort or a cancel cancels the running children
and backs out every prepared or launched component in the plan's backout order, one after
the other, each once. Decisions come from `policy`, `waves` and `trainplan`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    import pydantic

    from relman import visibility
    from relman.contracts import (
        ActionRecord,
        ActionResult,
        Activity,
        Environment,
        ErrorType,
        EvidenceRecord,
        Gate,
        GateState,
        LeaseDecision,
        LeaseInput,
        Message,
        Notification,
        OperatorAction,
        OperatorVerb,
        Outcome,
        Phase,
        PhaseTransition,
        ReleaseStatus,
        Risk,
        ServiceProfile,
        TestReport,
        Trust,
        WindowDecision,
        WindowQuery,
        release_id_problem,
    )
    from relman.contracts.train import (
        ComponentEvidence,
        ComponentRecord,
        TrainChangeInput,
        TrainCloseInput,
        TrainEvidenceInput,
        TrainRequest,
        TrainTestInput,
    )
    from relman.contracts.train_run import (
        TRAIN_WORKFLOW,
        ComponentInput,
        ComponentMode,
        ComponentState,
        ComponentStatus,
        TrainProfile,
        TrainStatus,
    )
    from relman.workflows import details, policy
    from relman.workflows.component import ReleaseComponent, component_child_id
    from relman.workflows.messages import VoteHandlers
    from relman.workflows.release import (
        RECORD_RETRY,
        STEP_RETRY,
        _adapter,
        _error_text,
        _failure_reason,
        _Stop,
    )
    from relman.workflows.trainplan import backout_for, train_plan, train_waves
    from relman.workflows.waves import OrderingError, lease_order

CHILD_TIMEOUT = timedelta(days=60)
"""Bound on one child run (a launch may wait weeks for windows and marginal decisions)."""


@workflow.defn(name=TRAIN_WORKFLOW, failure_exception_types=[pydantic.ValidationError])
class ReleaseTrain(VoteHandlers):
    _s: TrainStatus

    @workflow.init
    def __init__(self, request: TrainRequest) -> None:
        self._s = TrainStatus(
            train_id=workflow.info().workflow_id,
            request=request,
            components={
                c.service: ComponentStatus(service=c.service, version=c.version) for c in request.components
            },
        )
        self._found: TrainProfile | None = None
        self._trust: Trust | None = None
        self._nonces: set[str] = set()
        self._abort: OperatorAction | None = None
        self._change_open = False
        self._running: dict[str, tuple[ComponentMode, workflow.ChildWorkflowHandle[Any, Any]]] = {}
        """The children running now, by service, with their mode."""
        self._steps = 0
        self._ended: dict[str, list[ReleaseStatus]] = {}
        """The final status of each component's children, in the order they ran (evidence)."""
        self._failed_at: datetime | None = None

    # --- the process ----------------------------------------------------------

    @workflow.run
    async def run(self, request: TrainRequest) -> TrainStatus:
        if problem := release_id_problem(self._s.train_id):
            raise ApplicationError(problem, type=ErrorType.INVALID_REQUEST, non_retryable=True)
        outcome, reason = Outcome.COMPLETED, ""
        try:
            await self._requested()
            await self._gate(Gate.REQUEST, Phase.AWAITING_CAB, request.content_hash())
            self._planning()
            await self._gate(Gate.PLAN, Phase.AWAITING_PLAN_APPROVAL, self._s.plan_hash)
            await self._record(Activity.UPDATE_TRAIN, "authorized", "authorized")
            await self._take_leases()
            await self._prepare()
            await self._train_tests()
            await self._launch()
            await self._give_back_leases()
        except _Stop as stop:
            outcome, reason = stop.outcome, stop.reason
            await self._back_out(reason)
        except (ActivityError, ApplicationError, ChildWorkflowError) as err:
            outcome, reason = Outcome.ROLLED_BACK, _failure_reason(err)
            await self._back_out(reason)
        except asyncio.CancelledError:
            # A cancelled train still backs out what it delivered and records its change.
            await self._back_out("train cancelled")
            await self._close(Outcome.ABORTED, "train cancelled")
            raise
        except workflow.NondeterminismError:
            raise
        except Exception as err:
            outcome, reason = Outcome.ROLLED_BACK, f"error in the train workflow: {_error_text(err)}"
            workflow.logger.exception("train workflow error")
            self._s.needs_operator = True
            self._s.issues.append(reason[:1000])
            await self._back_out(reason)
        await self._close(outcome, reason)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if policy.failed_change(policy.close_code(outcome, self._s.needs_operator)):
            raise ApplicationError(
                f"{self._s.train_id} {self._s.outcome}: {self._s.reason}"[:1000],
                self._s,
                type=ErrorType.RELEASE_FAILED,
                non_retryable=True,
            )
        return self._s

    async def _requested(self) -> None:
        """Every component known, the order sound, the ids usable: else rejected before any
        side effect. Then the one change record of the train, and who asked."""
        request = self._s.request
        self._enter(Phase.REQUESTED)
        try:
            self._found = found = await self._activity(
                Activity.VALIDATE_TRAIN,
                request,
                TrainProfile,
                f"validate train {request.train}: {len(request.components)} components",
                local=True,
            )
        except (ActivityError, ApplicationError) as err:
            raise _Stop(Outcome.REJECTED, f"invalid request: {_failure_reason(err)}") from err
        try:
            self._s.waves = train_waves(request, found.relationships)
        except OrderingError as err:
            raise _Stop(Outcome.REJECTED, f"invalid train: {err}") from None
        for wave, services in enumerate(self._s.waves, start=1):
            for service in services:
                self._s.components[service].wave = wave
        for service in request.services:
            if problem := release_id_problem(
                component_child_id(self._s.train_id, service, ComponentMode.PREPARE)
            ):
                raise _Stop(Outcome.REJECTED, f"invalid train: component {service}: {problem}")
        self._trust = policy.merged_trust(self._profile(s).trust for s in request.services)
        self._s.risk = max(
            (policy.risk_for(request.change_type, self._profile(s).criticality) for s in request.services),
            key=list(Risk).index,
        )
        await self._record(Activity.OPEN_TRAIN, "open", "requested")
        self._change_open = True
        if refused := policy.train_request_refusal(request, self._ctx()):
            raise _Stop(Outcome.REJECTED, f"request refused: {refused}")
        if request.proof is not None:
            self._nonces.add(request.proof.nonce)

    async def _gate(self, gate: Gate, phase: Phase, subject_hash: str) -> None:
        request = self._s.request
        if gate is not Gate.REQUEST:
            await self._refresh_trust()
        profiles = {s: self._profile(s) for s in request.services}
        status = policy.train_gate(
            gate, request.change_type, profiles, subject_hash, workflow.now(), request.requested_by
        )
        self._s.gates[gate] = status
        if problem := policy.train_gate_problem(status):
            raise _Stop(Outcome.REJECTED, problem)
        if status.state is GateState.SKIPPED:
            return
        self._enter(phase)
        self._set_awaiting(policy.waiting_for(status))
        self._details(details.gate(status))
        await self._notify(
            f"gate.{gate}", f"approval needed at gate {gate} of train {request.train}", status.eligible
        )
        decided = await self._wait(
            lambda: self._s.gates[gate].state is not GateState.OPEN, status.deadline, f"gate {gate} deadline"
        )
        self._s.gates[gate], ended, why = policy.gate_end(self._s.gates[gate], decided, workflow.now())
        if ended is not None:
            raise _Stop(ended, why)

    async def _refresh_trust(self) -> None:
        """Each gate after the request's reads the catalog's keys and roles again, as a
        release's does: a key or a member removed stops counting from the next gate."""
        assert self._found is not None
        try:
            fresh: TrainProfile = await self._activity(
                Activity.VALIDATE_TRAIN,
                self._s.request,
                TrainProfile,
                f"catalog trust of train {self._s.request.train}",
                local=True,
            )
        except (ActivityError, ApplicationError) as err:
            workflow.logger.warning("catalog not re-read, keeping the trust it gave: %s", err)
            return
        profiles = {
            s: p.model_copy(update={"trust": fresh.profiles[s].trust}) if s in fresh.profiles else p
            for s, p in self._found.profiles.items()
        }
        self._found = self._found.model_copy(update={"profiles": profiles})
        self._trust = policy.merged_trust(p.trust for p in profiles.values())

    def _planning(self) -> None:
        self._enter(Phase.PLANNING)
        assert self._found is not None
        self._s.plan = train_plan(self._s.request, self._found.profiles, self._found.relationships)
        self._s.plan_hash = self._s.plan.content_hash()

    async def _take_leases(self) -> None:
        """Every component's lease, in one global order: two trains sharing services never
        hold one each while waiting for the other's. A train waits for a lease as a release
        does (durably, visible as awaiting `release:<holder>`), until the window-wait deadline."""
        self._enter(Phase.BUILDING, note="leases")
        services = lease_order(self._s.request.services)
        deadline = workflow.now() + min(self._profile(s).timeouts.window_wait for s in services)
        for service in services:
            backoff = timedelta(seconds=15)
            while True:
                decision: LeaseDecision = await self._lease(Activity.ACQUIRE_LEASE, service, LeaseDecision)
                if decision.granted:
                    self._s.leases.append(service)
                    break
                self._set_awaiting([f"release:{decision.holder}"])
                self._details(f"waiting for {decision.holder} to give back {service}")
                until = min(workflow.now() + backoff, deadline)
                await self._wait(lambda: False, until, f"{decision.holder} to give back {service}")
                if workflow.now() >= deadline:
                    raise _Stop(Outcome.EXPIRED, f"{decision.holder} held {service} too long")
                backoff = min(backoff * 2, timedelta(minutes=5))
        self._set_awaiting([])

    async def _give_back_leases(self) -> None:
        while self._s.leases:
            await self._lease(Activity.RELEASE_LEASE, self._s.leases[-1], None)
            self._s.leases.pop()

    async def _prepare(self) -> None:
        """Every component built, deployed to staging and tested, all in parallel."""
        self._checkpoint()
        self._details("preparing every component: build, staging, tests")
        failures = await self._children(ComponentMode.PREPARE, self._s.request.services)
        if failures:
            raise _Stop(Outcome.ROLLED_BACK, "; ".join(failures))

    async def _train_tests(self) -> None:
        """The manifest's train suites on the combined staging, once every component is
        there; not accepted, the train stops and every prepared component is backed out."""
        request = self._s.request
        if not request.tests:
            return
        self._checkpoint()
        self._details(f"train suites on the combined staging: {', '.join(request.tests)}")
        assert self._s.plan is not None
        try:
            self._s.tests = await self._activity(
                Activity.RUN_TRAIN_TESTS,
                TrainTestInput(
                    release_id=self._s.train_id,
                    step="train-tests",
                    train=request.train,
                    suites=request.tests,
                    min_pass_rate=self._s.plan.acceptance.min_pass_rate,
                ),
                TestReport,
                f"train suites {', '.join(request.tests)} on the combined staging",
                timeout=timedelta(hours=2),
                heartbeat=timedelta(seconds=30),
            )
        except ActivityError as err:
            report = _tests_report(err)
            if report is None:
                raise
            self._s.tests = report
            raise _Stop(Outcome.ROLLED_BACK, f"train suites: {_failure_reason(err)}") from None
        self._checkpoint()

    async def _launch(self) -> None:
        """Wave by wave: the wave's windows open, then its components launched in parallel."""
        self._enter(Phase.DARK_LAUNCH)
        for number, wave in enumerate(self._s.waves, start=1):
            self._checkpoint()
            await self._await_windows(number, wave)
            self._details(f"wave {number} of {len(self._s.waves)}: {', '.join(wave)}")
            failures = await self._children(ComponentMode.LAUNCH, wave)
            if failures:
                raise _Stop(Outcome.ROLLED_BACK, f"wave {number}: " + "; ".join(failures))

    # --- children -------------------------------------------------------------

    async def _children(self, mode: ComponentMode, services: Sequence[str]) -> list[str]:
        """Run one child per service in `mode`, in parallel, until all end or an abort cancels
        them; the components' states follow. Returns what failed, one line each."""
        started = await asyncio.gather(*(self._start_child(s, mode) for s in services))
        for service, handle in zip(services, started, strict=True):
            self._running[service] = (mode, handle)
        # One failure is enough: the others are cancelled and the train backs out.
        await workflow.wait_condition(
            lambda: all(h.done() for h in started) or any(map(_failed, started)) or self._abort is not None,
            timeout_summary=f"{mode} children",
        )
        await self._stop_children()
        failures = [f for s in services if (f := self._settle(s, *self._running.pop(s)))]
        if self._abort is not None:
            raise self._aborted()
        return failures

    async def _start_child(self, service: str, mode: ComponentMode) -> workflow.ChildWorkflowHandle[Any, Any]:
        component = self._s.components[service]
        child_id = component_child_id(self._s.train_id, service, mode)
        component.children.append(child_id)
        if mode is ComponentMode.PREPARE:
            component.staged = True
        elif mode is ComponentMode.LAUNCH:
            component.state, component.exposed = ComponentState.LAUNCHED, True
        return await workflow.start_child_workflow(
            ReleaseComponent.run,
            self._child_input(service, mode),
            id=child_id,
            execution_timeout=CHILD_TIMEOUT,
            cancellation_type=workflow.ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(visibility.RELEASE_TRAIN, self._s.train_id)]
            ),
            static_summary=f"{mode} {service} {component.version} (train {self._s.request.train})",
        )

    def _child_input(self, service: str, mode: ComponentMode) -> ComponentInput:
        assert self._s.plan is not None
        component = self._s.components[service]
        undo = backout_for(component) if mode is ComponentMode.BACKOUT else None
        return ComponentInput(
            train_id=self._s.train_id,
            mode=mode,
            request=self._s.request.component_request(service),
            profile=self._profile(service),
            plan=self._s.plan.release_plan(service),
            risk=self._s.risk or Risk.MEDIUM,
            package=component.package,
            **({"backout": undo} if undo is not None else {}),
        )

    async def _stop_children(self) -> None:
        """Cancel the children still running and wait until each has ended."""
        running = [h for _, h in self._running.values() if not h.done()]
        for handle in running:
            handle.cancel()
        if running:
            await workflow.wait_condition(
                lambda: all(h.done() for h in running), timeout_summary="children cancelled"
            )

    def _settle(
        self, service: str, mode: ComponentMode, handle: workflow.ChildWorkflowHandle[Any, Any]
    ) -> str:
        """Record how a child ended; a failure's one-line reason ('' when it succeeded)."""
        component = self._s.components[service]
        if handle.cancelled():
            # Cut short: what it did is unknown, so its flags stay and the backout undoes it.
            component.issue = f"{mode} cancelled"
            return ""
        error = handle.exception()
        if error is None:
            self._absorb(component, _adapter(ReleaseStatus).validate_python(handle.result()))
            if mode is ComponentMode.PREPARE:
                component.state = ComponentState.PREPARED
            elif mode is ComponentMode.LAUNCH:
                component.state, component.live_at = ComponentState.LIVE, workflow.now()
            return ""
        if _cancelled(error):
            component.issue = f"{mode} cancelled"
            return ""
        status = _child_status(error)
        component.state = ComponentState.FAILED
        if status is None:
            component.issue = f"{mode} failed: {_failure_reason(error)}"[:1000]
            return f"{service}: {component.issue}"
        self._absorb(component, status)
        if not component.needs_operator:
            # The child undid its own steps of this mode.
            if mode is ComponentMode.PREPARE:
                component.staged = False
            else:
                component.exposed = False
        component.issue = f"{mode} {status.outcome}: {status.reason}"[:1000]
        return f"{service}: {component.issue}"

    def _absorb(self, component: ComponentStatus, status: ReleaseStatus) -> None:
        self._ended.setdefault(component.service, []).append(status)
        if status.package is not None:
            component.package = status.package
        if status.tests is not None:
            component.tests = status.tests
        component.deploys.extend(d for d in status.deploys if d not in component.deploys)
        component.compensations.extend(status.compensations)
        if status.needs_operator:
            component.needs_operator = self._s.needs_operator = True
            self._s.issues.extend(f"{component.service}: {issue}" for issue in status.issues)

    async def _back_out(self, reason: str) -> None:
        """Cancel what runs, then undo every prepared or launched component in the backout
        order, one after the other, each exactly once; a failing undo flags an operator."""
        self._failed_at = self._failed_at or workflow.now()
        await self._stop_children()
        for service, (mode, handle) in list(self._running.items()):
            self._settle(service, mode, handle)
        self._running.clear()
        if self._s.plan is None:
            return
        entered = False
        for service in self._s.plan.backout_order:
            component = self._s.components[service]
            if backout_for(component) is None:
                continue
            if not entered:
                self._enter(Phase.COMPENSATING, note=reason[:1000])
                entered = True
            handle = await self._start_child(service, ComponentMode.BACKOUT)
            self._running[service] = (ComponentMode.BACKOUT, handle)
            try:
                await workflow.wait_condition(handle.done, timeout_summary=f"backout of {service}")
            finally:
                self._running.pop(service, None)
            if (error := handle.exception()) is not None:
                component.needs_operator = self._s.needs_operator = True
                self._s.issues.append(f"{service}: backout failed: {_failure_reason(error)}"[:1000])
                continue
            self._absorb(component, _adapter(ReleaseStatus).validate_python(handle.result()))
            if not component.needs_operator:
                component.state, component.staged, component.exposed = ComponentState.BACKED_OUT, False, False
                component.backed_out_at = workflow.now()
        if self._s.needs_operator:
            self._set_awaiting(["operator"])
            self._details("**operator action required**: " + "; ".join(self._s.issues))

    # --- windows, leases, records -------------------------------------------------

    async def _await_windows(self, number: int, services: Sequence[str]) -> None:
        """Before a wave: every one of its components' deployment windows open (waited for
        durably until the window-wait deadline; an override is given on a component's stage)."""
        deadline = workflow.now() + min(self._profile(s).timeouts.window_wait for s in services)
        while True:
            closed: WindowDecision | None = None
            for service in services:
                decision = await self._check_window(service, f"wave-{number}")
                if not decision.open:
                    closed = decision
                    break
            if closed is None:
                return
            if workflow.now() >= deadline:
                raise _Stop(
                    Outcome.EXPIRED, f"no deployment window opened for wave {number} before the deadline"
                )
            hourly = workflow.now() + timedelta(hours=1)
            until = max(min(closed.next_open or hourly, deadline), workflow.now() + timedelta(seconds=1))
            self._set_awaiting(["window"])
            self._details(f"wave {number} waits for window {closed.window!r}: {closed.reason}")
            await self._wait(lambda: False, until, f"window {closed.window} before wave {number}")
            self._set_awaiting([])

    async def _check_window(self, service: str, step: str) -> WindowDecision:
        profile = self._profile(service)
        result: WindowDecision = await self._activity(
            Activity.CHECK_WINDOW,
            WindowQuery(
                service=service,
                environment=Environment.PRODUCTION,
                at=workflow.now(),
                change_type=self._s.request.change_type,
                release_id=self._s.train_id,
                step=step,
                ci_name=profile.ci_name,
                conflicts=profile.conflicts,
            ),
            WindowDecision,
            f"deployment window of {service} for {step}",
            retry=RECORD_RETRY,
            local=True,
        )
        return result

    async def _lease(self, name: Activity, service: str, result_type: type[Any] | None) -> Any:
        self._steps += 1
        return await self._activity(
            name,
            LeaseInput(
                release_id=self._s.train_id,
                step=f"{name.value}-{self._steps}",
                service=service,
                environment=Environment.PRODUCTION,
            ),
            result_type,
            f"{name.value.replace('_', ' ')} on {service}",
            retry=RECORD_RETRY,
            local=True,
        )

    async def _record(self, name: Activity, step: str, status: str) -> None:
        """The train's one change in the CMDB, a row per component."""
        request = self._s.request
        await self._activity(
            name,
            TrainChangeInput(
                release_id=self._s.train_id,
                step=step,
                request=request,
                risk=self._s.risk or Risk.MEDIUM,
                status=status,
                ci_names={s: self._profile(s).ci_name for s in request.services},
            ),
            None,
            f"CMDB: train {self._s.train_id} {status}",
            retry=RECORD_RETRY,
        )

    async def _close(self, outcome: Outcome, reason: str) -> None:
        """Leases given back, the outcome recorded once for the whole train."""
        self._enter(Phase.CLOSING)
        await self._give_back_leases()
        self._s.outcome, self._s.reason = outcome, reason[:1000]
        for gate, status in self._s.gates.items():
            self._s.gates[gate] = policy.withdraw(status, workflow.now())
        if self._change_open:
            close_code = policy.close_code(outcome, self._s.needs_operator)
            production = [c.live_at for c in self._s.components.values() if c.live_at]
            await self._activity(
                Activity.CLOSE_TRAIN,
                TrainCloseInput(
                    release_id=self._s.train_id,
                    step="close",
                    request=self._s.request,
                    risk=self._s.risk or Risk.MEDIUM,
                    outcome=outcome,
                    close_code=close_code,
                    reason=self._s.reason,
                    approvals=[a for g in self._s.gates.values() for a in g.votes],
                    components=[self._component_record(c, outcome) for c in self._s.components.values()],
                    production_at=max(production) if deployed(outcome) and production else None,
                    failed_at=self._failed_at,
                    recovered_at=workflow.now() if self._failed_at and not self._s.needs_operator else None,
                ),
                None,
                f"close train {self._s.train_id}: {outcome}",
                retry=RECORD_RETRY,
            )
            await self._evidence(close_code)
            await self._notify("release.closed", f"{self._s.train_id} closed: {outcome} {reason}".strip(), [])
        self._s.closed_at = workflow.now()
        self._enter(Phase.CLOSED, note=str(outcome))
        if self._s.needs_operator:
            self._set_awaiting(["operator"])
        self._details(f"**closed: {outcome}**" + (f" — {reason}" if reason else ""))

    def _component_record(self, component: ComponentStatus, outcome: Outcome) -> ComponentRecord:
        request = next(c for c in self._s.request.components if c.service == component.service)
        production = component.deployed(Environment.PRODUCTION)
        live = component.state is ComponentState.LIVE
        ended = {
            ComponentState.LIVE: Outcome.COMPLETED,
            ComponentState.BACKED_OUT: Outcome.ABORTED if outcome is Outcome.ABORTED else Outcome.ROLLED_BACK,
            ComponentState.FAILED: Outcome.ROLLED_BACK,
        }.get(component.state)
        return ComponentRecord(
            service=component.service,
            version=component.version,
            commit=request.commit,
            ci_name=self._profile(component.service).ci_name,
            previous_version=production.previous_version if production else None,
            artifact_digest=component.package.digest if component.package else None,
            deployed=live and deployed(outcome),
            outcome=ended,
            production_at=component.live_at,
            failed_at=self._failed_at if self._seen_by_users(component) else None,
            recovered_at=component.backed_out_at,
        )

    def _seen_by_users(self, component: ComponentStatus) -> bool:
        """Production users saw it (a stage above 0% or its go-live): undoing it is a failed
        deployment of that service (DORA), as for a release."""
        statuses = self._ended.get(component.service, [])
        stages = [stage for status in statuses for stage in status.stages]
        in_production = component.deployed(Environment.PRODUCTION) is not None
        return policy.failed_deployment(Outcome.ROLLED_BACK, stages, in_production)

    async def _evidence(self, close_code: Any) -> None:
        """The train's signed evidence (every component's artifacts, stages and decisions); a
        failure to write it is flagged, never hidden."""
        assert self._found is not None
        components = [
            ComponentEvidence.from_statuses(service, statuses[0].release_id, *statuses)
            for service, statuses in self._ended.items()
            if statuses
        ]
        try:
            await self._activity(
                Activity.WRITE_TRAIN_EVIDENCE,
                TrainEvidenceInput(
                    release_id=self._s.train_id,
                    step="evidence",
                    request=self._s.request,
                    risk=self._s.risk,
                    outcome=self._s.outcome,
                    close_code=close_code,
                    reason=self._s.reason,
                    plan=self._s.plan.model_dump(mode="json") if self._s.plan else None,
                    plan_hash=self._s.plan_hash,
                    gates=list(self._s.gates.values()),
                    actions=self._s.actions,
                    issues=self._s.issues,
                    history=self._s.history,
                    components=components,
                    tests=self._s.tests,
                ),
                EvidenceRecord,
                f"sign the evidence of train {self._s.train_id}",
                retry=RECORD_RETRY,
            )
        except (ActivityError, ApplicationError) as err:
            self._s.needs_operator = True
            self._s.issues.append(f"train evidence not written: {_failure_reason(err)}"[:1000])

    async def _notify(self, event: str, message: str, recipients: list[str]) -> None:
        self._steps += 1
        await self._activity(
            Activity.NOTIFY,
            Notification(
                release_id=self._s.train_id,
                step=f"notify-{self._steps}",
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

    async def _activity(
        self,
        name: Activity,
        arg: Any,
        result_type: type[Any] | None,
        summary: str,
        *,
        timeout: timedelta = timedelta(seconds=45),
        retry: RetryPolicy = STEP_RETRY,
        local: bool = False,
        heartbeat: timedelta | None = None,
    ) -> Any:
        if local:
            raw = await workflow.execute_local_activity(
                name.value, arg, start_to_close_timeout=timeout, retry_policy=retry, summary=summary[:200]
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

    # --- waiting and steering ---------------------------------------------------------

    async def _wait(self, done: Callable[[], bool], until: datetime | None, what: str) -> bool:
        """Wait for `done` until a deadline; True if it happened. An abort ends any wait."""
        timeout = None if until is None else max((until - workflow.now()).total_seconds(), 0.0)
        try:
            await workflow.wait_condition(
                lambda: done() or self._abort is not None, timeout=timeout, timeout_summary=what[:200]
            )
        except TimeoutError:
            return False
        self._checkpoint()
        return True

    def _checkpoint(self) -> None:
        if self._abort is not None:
            raise self._aborted()

    def _aborted(self) -> _Stop:
        assert self._abort is not None
        return _Stop(Outcome.ABORTED, f"aborted by {self._abort.by}: {self._abort.reason}")

    @workflow.signal(name=Message.ABORT.value)
    async def abort(self, action: OperatorAction) -> None:
        """Stop the train: running components cancelled, every delivered one backed out."""
        await self._catalog_read()
        self._act(action, OperatorVerb.ABORT)

    @workflow.update(name=Message.OPERATE.value)
    def operate(self, action: OperatorAction) -> ActionResult:
        """An abort with an immediate answer (pause, promote and overrides go to a component)."""
        if reason := self._act(action, action.action):
            raise ApplicationError(reason, type=ErrorType.REFUSED, non_retryable=True)
        return ActionResult(record=self._s.actions[-1], phase=self._s.phase)

    @operate.validator
    def _validate_operate(self, action: OperatorAction) -> None:
        if reason := self._action_refusal(action, action.action):
            raise ApplicationError(reason, type=ErrorType.REFUSED, non_retryable=True)

    def _action_refusal(self, action: OperatorAction, verb: OperatorVerb) -> str | None:
        if reason := self._not_ready():
            return reason
        if self._s.outcome is not None:
            return f"the train has ended ({self._s.outcome})"
        if verb is not OperatorVerb.ABORT:
            return f"a train takes abort only; {verb} a component on its child workflow"
        if self._abort is not None:
            return f"already aborting (by {self._abort.by})"
        return policy.action_refusal(action, verb, self._ctx())

    def _act(self, action: OperatorAction, verb: OperatorVerb) -> str | None:
        if reason := self._action_refusal(action, verb):
            self._refuse(action.by, verb.value, reason)
            return reason
        self._accept(action)
        self._s.actions.append(ActionRecord(action=action, at=workflow.now()))
        self._abort = action
        self._note(f"abort by {action.by}: {action.reason}")
        return None

    @workflow.query(name=Message.STATUS.value)
    def status(self) -> TrainStatus:
        """The full typed state of the train, with each component's children and state."""
        return self._s

    # --- what the vote handlers need ------------------------------------------------

    def _profile(self, service: str) -> ServiceProfile:
        assert self._found is not None
        return self._found.profiles[service]

    def _ctx(self) -> policy.Context:
        request = self._s.request
        return policy.Context(
            release_id=self._s.train_id,
            service=f"train {request.train}",
            requested_by=request.requested_by,
            trust=self._trust or Trust(),
            now=workflow.now(),
            seen_nonces=frozenset(self._nonces),
            services=tuple(request.services),
        )

    def _ready(self) -> bool:
        return self._trust is not None or self._s.outcome is not None

    def _not_ready(self) -> str | None:
        if self._trust is None and self._s.outcome is None:
            return "the train has not read its catalog yet; send it again in a moment"
        return None

    def _remember(self, nonce: str) -> None:
        self._nonces.add(nonce)

    def _set_awaiting(self, who: list[str]) -> None:
        self._s.awaiting = list(who)
        self._publish([visibility.RELEASE_AWAITING.value_set(list(who))])

    def _details(self, text: str) -> None:
        workflow.set_current_details(f"train {self._s.request.train}: {self._s.phase}\n\n{text}"[:4000])

    def _enter(self, phase: Phase, note: str = "") -> None:
        self._s.phase = phase
        self._s.history.append(PhaseTransition(phase=phase, at=workflow.now(), note=note))
        gate = {Phase.AWAITING_CAB: Gate.REQUEST, Phase.AWAITING_PLAN_APPROVAL: Gate.PLAN}.get(phase)
        status = self._s.gates.get(gate) if gate else None
        self._s.awaiting = policy.waiting_for(status) if status else []
        updates: list[SearchAttributeUpdate[Any]] = [
            visibility.RELEASE_TRAIN.value_set(self._s.train_id),
            visibility.RELEASE_CHANGE_TYPE.value_set(self._s.request.change_type.value),
            visibility.RELEASE_PHASE.value_set(phase.value),
            visibility.RELEASE_AWAITING.value_set(self._s.awaiting),
        ]
        if self._s.risk is not None:
            updates.append(visibility.RELEASE_RISK.value_set(self._s.risk.value))
        if phase is Phase.CLOSED and self._s.outcome is not None:
            updates.append(visibility.RELEASE_OUTCOME.value_set(self._s.outcome.value))
        self._publish(updates)
        self._details(note or phase.value)

    def _publish(self, updates: list[SearchAttributeUpdate[Any]]) -> None:
        """Upsert only the attributes whose value changed: each upsert is a history event."""
        current = workflow.info().typed_search_attributes
        changed = [u for u in updates if current.get(u.key) != u.value]
        if changed:
            workflow.upsert_search_attributes(changed)

    def _note(self, text: str) -> None:
        workflow.logger.info("%s", text)
        self._s.history.append(PhaseTransition(phase=self._s.phase, at=workflow.now(), note=text[:1000]))


def _failed(handle: workflow.ChildWorkflowHandle[Any, Any]) -> bool:
    return handle.done() and not handle.cancelled() and handle.exception() is not None


def _cancelled(error: BaseException) -> bool:
    """A child that ended cancelled (by its train): what it did is unknown."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, CancelledError):
            return True
        cause = cause.__cause__
    return False


def _tests_report(error: BaseException) -> TestReport | None:
    """The report a rejected test run carries (its TestsFailed details), or None."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type == ErrorType.TESTS_FAILED and cause.details:
            return TestReport.model_validate(cause.details[0])
        cause = cause.__cause__
    return None


def _child_status(error: BaseException) -> ReleaseStatus | None:
    """The final status a failed child carries (its ReleaseFailed details), or None."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type == ErrorType.RELEASE_FAILED and cause.details:
            return ReleaseStatus.model_validate(cause.details[0])
        cause = cause.__cause__
    return None


def deployed(outcome: Outcome) -> bool:
    return outcome in (Outcome.COMPLETED, Outcome.COMPLETED_WITH_ISSUES)
