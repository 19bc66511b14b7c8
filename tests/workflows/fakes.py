"""Test activities registered under relman's real activity names.

They replace the real adapters only to test the workflow's own logic (the SDK's documented
way): they record every call and inject the faults a test asks for.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from relman.contracts import (
    Activity,
    Artifact,
    BuildInput,
    ChangeRecordInput,
    ChangeType,
    CloseChangeInput,
    Conflict,
    DeployInput,
    DeployResult,
    ErrorType,
    EventInput,
    EvidenceInput,
    EvidenceRecord,
    ExposureInput,
    ExposureResult,
    GateTimeouts,
    HealthInput,
    HealthReport,
    LeaseDecision,
    LeaseInput,
    Notification,
    ReleasePackage,
    ReleaseRequest,
    RollbackInput,
    RolloutStage,
    ServiceProfile,
    StepInput,
    SuiteResult,
    TestInput,
    TestReport,
    Verdict,
    WindowDecision,
    WindowKind,
    WindowQuery,
)
from tests import people

STAGES = [
    RolloutStage(name="allow-list", percent=0, bake_seconds=60, allow_list=["tester"]),
    RolloutStage(name="one", percent=1, bake_seconds=60),
    RolloutStage(name="five", percent=5, bake_seconds=60),
    RolloutStage(name="quarter", percent=25, bake_seconds=60),
]


def profile_for(service: str) -> ServiceProfile:
    """The test catalog: every service but `unknown` exists, with the same CAB and stages."""
    if service == "unknown":
        raise KeyError(service)
    return ServiceProfile(
        service=service,
        ci_name=f"{service}-app",
        stages=STAGES,
        trust=people.trust(),
        review_period=timedelta(days=1),
        timeouts=GateTimeouts(),
    )


@dataclass
class FakeActivities:
    """Records (activity, step) calls; `fail_steps` raise, `verdicts` map health steps to verdicts.

    `keys` counts calls per (activity, idempotency key) across releases; `profile` is the
    catalog (a KeyError means an unknown service).
    """

    profile: Callable[[str], ServiceProfile] = profile_for
    fail_steps: set[str] = field(default_factory=set)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    closed_window_checks: set[int] = field(default_factory=set)
    compensation_failures: dict[str, int] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    closes: list[CloseChangeInput] = field(default_factory=list)
    events: list[EventInput] = field(default_factory=list)
    evidence: list[EvidenceInput] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    """What every window check reports as conflicts (warn mode: the window stays open)."""
    window_checks: int = 0
    blackout_until: datetime | None = None
    leases: dict[str, str] = field(default_factory=dict)
    keys: Counter[tuple[str, str]] = field(default_factory=Counter)

    def _call(self, name: Activity, inp: StepInput) -> None:
        step = inp.step
        self.calls.append((name.value, step))
        self.keys[(name.value, inp.idempotency_key)] += 1
        if step in self.fail_steps:
            raise ApplicationError(
                f"injected failure at {step}", type=ErrorType.DEPLOY_FAILED, non_retryable=True
            )
        left = self.compensation_failures.get(step, 0)
        if left:
            self.compensation_failures[step] = left - 1
            raise ApplicationError(f"injected compensation failure at {step}")

    def steps(self, name: Activity) -> list[str]:
        return [step for n, step in self.calls if n == name.value]

    @activity.defn(name=Activity.VALIDATE_REQUEST)
    async def validate_request(self, request: ReleaseRequest) -> ServiceProfile:
        self.calls.append((Activity.VALIDATE_REQUEST.value, "validate"))
        try:
            return self.profile(request.service)
        except KeyError:
            raise ApplicationError(
                f"unknown service {request.service!r}", type=ErrorType.UNKNOWN_SERVICE, non_retryable=True
            ) from None

    @activity.defn(name=Activity.OPEN_CHANGE)
    async def open_change(self, inp: ChangeRecordInput) -> None:
        self._call(Activity.OPEN_CHANGE, inp)

    @activity.defn(name=Activity.UPDATE_CHANGE)
    async def update_change(self, inp: ChangeRecordInput) -> None:
        self._call(Activity.UPDATE_CHANGE, inp)

    @activity.defn(name=Activity.CLOSE_CHANGE)
    async def close_change(self, inp: CloseChangeInput) -> None:
        self._call(Activity.CLOSE_CHANGE, inp)
        self.closes.append(inp)

    @activity.defn(name=Activity.RECORD_EVENT)
    async def record_event(self, inp: EventInput) -> None:
        self._call(Activity.RECORD_EVENT, inp)
        self.events.append(inp)

    @activity.defn(name=Activity.WRITE_EVIDENCE)
    async def write_evidence(self, inp: EvidenceInput) -> EvidenceRecord:
        self._call(Activity.WRITE_EVIDENCE, inp)
        self.evidence.append(inp)
        return EvidenceRecord(envelope_sha256="0" * 64, key_id="test")

    @activity.defn(name=Activity.CHECK_WINDOW)
    async def check_window(self, q: WindowQuery) -> WindowDecision:
        if q.step == "request":  # the conflicts check before the CAB: no window counted
            self.calls.append((Activity.CHECK_WINDOW.value, "conflicts-request"))
            return WindowDecision(open=True, conflicts=self.conflicts)
        index = self.window_checks
        self.window_checks += 1
        self.calls.append((Activity.CHECK_WINDOW.value, f"window-{index}"))
        if index in self.closed_window_checks:
            self.blackout_until = q.at + timedelta(days=2)
        if self.blackout_until and q.at < self.blackout_until:
            return WindowDecision(
                open=False,
                window="test-blackout",
                kind=WindowKind.BLACKOUT,
                reason="quarter-end close",
                next_open=self.blackout_until,
            )
        return WindowDecision(open=True, conflicts=self.conflicts)

    @activity.defn(name=Activity.ACQUIRE_LEASE)
    async def acquire_lease(self, inp: LeaseInput) -> LeaseDecision:
        holder = self.leases.setdefault(inp.service, inp.release_id)
        self.calls.append((Activity.ACQUIRE_LEASE.value, inp.release_id))
        return LeaseDecision(granted=holder == inp.release_id, holder=holder)

    @activity.defn(name=Activity.RELEASE_LEASE)
    async def release_lease(self, inp: LeaseInput) -> None:
        self.calls.append((Activity.RELEASE_LEASE.value, inp.release_id))
        if self.leases.get(inp.service) == inp.release_id:
            del self.leases[inp.service]

    @activity.defn(name=Activity.BUILD_PACKAGE)
    async def build_package(self, inp: BuildInput) -> ReleasePackage:
        self._call(Activity.BUILD_PACKAGE, inp)
        digest = hashlib.sha256(f"{inp.service}-{inp.version}".encode()).hexdigest()
        return ReleasePackage(
            service=inp.service,
            version=inp.version,
            path=f"/tmp/{inp.release_id}",
            artifacts=[Artifact(name="app.tar", sha256=digest, size=1)],
            digest=digest,
        )

    @activity.defn(name=Activity.DEPLOY)
    async def deploy(self, inp: DeployInput) -> DeployResult:
        self._call(Activity.DEPLOY, inp)
        return DeployResult(environment=inp.environment, version=inp.version, previous_version="1.0.0")

    @activity.defn(name=Activity.ROLLBACK)
    async def rollback(self, inp: RollbackInput) -> DeployResult:
        self._call(Activity.ROLLBACK, inp)
        return DeployResult(environment=inp.environment, version=inp.restore_version or "1.0.0")

    @activity.defn(name=Activity.RUN_TESTS)
    async def run_tests(self, inp: TestInput) -> TestReport:
        self._call(Activity.RUN_TESTS, inp)
        return TestReport(suites=[SuiteResult(name="unit", passed=3)], accepted=True)

    @activity.defn(name=Activity.SET_EXPOSURE)
    async def set_exposure(self, inp: ExposureInput) -> ExposureResult:
        self._call(Activity.SET_EXPOSURE, inp)
        return ExposureResult(percent=inp.percent)

    @activity.defn(name=Activity.CHECK_HEALTH)
    async def check_health(self, inp: HealthInput) -> HealthReport:
        self._call(Activity.CHECK_HEALTH, inp)
        verdict = self.verdicts.get(inp.step, Verdict.PASS)
        return HealthReport(
            verdict=verdict, error_rate=0.001, latency_ms=20, samples=100, detail=str(verdict)
        )

    @activity.defn(name=Activity.NOTIFY)
    async def notify(self, n: Notification) -> None:
        self.calls.append((Activity.NOTIFY.value, n.event))
        self.notifications.append(n)

    def all(self, *, cmdb: bool = True) -> list[Callable[..., Any]]:
        """Every activity; without the CMDB's when the real `CmdbActivities` join them."""
        cmdb_fakes = [
            self.open_change,
            self.update_change,
            self.close_change,
            self.check_window,
            self.acquire_lease,
            self.release_lease,
            self.record_event,
        ]
        return [
            self.validate_request,
            *(cmdb_fakes if cmdb else []),
            self.build_package,
            self.deploy,
            self.rollback,
            self.run_tests,
            self.set_exposure,
            self.check_health,
            self.notify,
            self.write_evidence,
        ]


def make_request(change_type: ChangeType = ChangeType.NORMAL, service: str = "checkout") -> ReleaseRequest:
    return ReleaseRequest(
        service=service,
        version="2.4.1",
        change_type=change_type,
        requested_by="rita",
        title="Faster checkout",
        commit="0a1b2c3d4e5f",
        change_model="config-tweak" if change_type is ChangeType.STANDARD else None,
    )
