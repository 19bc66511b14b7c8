"""No-op adapters for the benchmark: relman's activities under their real names, answering instantly.

They return valid results (the workflow's own checks and contracts all run), so the benchmark
measures relman's workflow, contracts and data conversion, not builds, tests or a database.
The service profile is the example catalog's `greeter` with zero bake time and a zero review
period, so a normal release runs through every phase without waiting on a timer. The catalog
reads its people's public keys from `{data_dir}/keys/<name>.pub`, so `bench_profile` first
makes a key for each of them (and the worker's evidence key) in the data directory it is given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from temporalio import activity
from temporalio.exceptions import ApplicationError

from relman.catalog import load_catalog
from relman.contracts import (
    Activity,
    Artifact,
    BuildInput,
    ChangeRecordInput,
    CloseChangeInput,
    DeployInput,
    DeployResult,
    ErrorType,
    EventInput,
    EvidenceInput,
    EvidenceRecord,
    ExposureInput,
    ExposureResult,
    HealthInput,
    HealthReport,
    LeaseDecision,
    LeaseInput,
    Notification,
    ReleasePackage,
    ReleaseRequest,
    RollbackInput,
    ServiceProfile,
    SuiteResult,
    TestInput,
    TestReport,
    Verdict,
    WindowDecision,
    WindowQuery,
)
from relman.contracts.train import TrainChangeInput, TrainCloseInput, TrainEvidenceInput, TrainRequest
from relman.contracts.train_run import TrainProfile
from relman.identity.keys import WORKER, Signer, ensure_keys

CATALOG = Path(__file__).resolve().parent.parent / "examples" / "catalog.yaml"
SERVICE = "greeter"


def bench_signers(data_dir: str | Path) -> dict[str, Signer]:
    """A key for every person of the catalog and for `relman-worker`, made once in
    `<data_dir>/keys` (as `relman keys init` would, without a passphrase) and read after."""
    people = yaml.safe_load(CATALOG.read_text()).get("people") or {}
    return ensure_keys(Path(data_dir) / "keys", [*people, WORKER])


def bench_profile(data_dir: str | Path) -> ServiceProfile:
    """The catalog's `greeter` profile with zero bake seconds and a zero review period; the
    keys its people sign with are made in `data_dir` first (see `bench_signers`)."""
    bench_signers(data_dir)
    profile = load_catalog(CATALOG, data_dir=data_dir).profile(SERVICE)
    stages = [s.model_copy(update={"bake_seconds": 0}) for s in profile.stages]
    return profile.model_copy(update={"stages": stages, "review_period": timedelta(0)})


def bench_services(profile: ServiceProfile, n: int) -> dict[str, ServiceProfile]:
    """`n` services (`comp-01`, ...) with the greeter's profile: a train's components, or as many
    independent releases."""
    names = [f"comp-{i:02d}" for i in range(1, n + 1)]
    return {name: profile.model_copy(update={"service": name, "ci_name": name}) for name in names}


class NoopActivities:
    """Every relman activity, registered under its `Activity` name, doing nothing."""

    def __init__(
        self, profile: ServiceProfile, others: dict[str, ServiceProfile] | None = None, wave: int = 5
    ) -> None:
        self.profile = profile
        self.profiles = {profile.service: profile, **(others or {})}
        self.wave = wave
        """Train components go in waves of this many: each depends on the one `wave` before it."""

    @activity.defn(name=Activity.VALIDATE_REQUEST)
    async def validate_request(self, request: ReleaseRequest) -> ServiceProfile:
        if request.service not in self.profiles:
            raise ApplicationError(
                f"unknown service {request.service!r}", type=ErrorType.UNKNOWN_SERVICE, non_retryable=True
            )
        return self.profiles[request.service]

    @activity.defn(name=Activity.VALIDATE_TRAIN)
    async def validate_train(self, request: TrainRequest) -> TrainProfile:
        services = request.services
        unknown = [s for s in services if s not in self.profiles]
        if unknown:
            raise ApplicationError(
                f"unknown component(s) {', '.join(unknown)}",
                type=ErrorType.UNKNOWN_SERVICE,
                non_retryable=True,
            )
        chain = [(s, "depends_on", services[i - self.wave]) for i, s in enumerate(services) if i >= self.wave]
        return TrainProfile(profiles={s: self.profiles[s] for s in services}, relationships=chain)

    @activity.defn(name=Activity.OPEN_TRAIN)
    async def open_train(self, inp: TrainChangeInput) -> None:
        return None

    @activity.defn(name=Activity.UPDATE_TRAIN)
    async def update_train(self, inp: TrainChangeInput) -> None:
        return None

    @activity.defn(name=Activity.CLOSE_TRAIN)
    async def close_train(self, inp: TrainCloseInput) -> None:
        return None

    @activity.defn(name=Activity.WRITE_TRAIN_EVIDENCE)
    async def write_train_evidence(self, inp: TrainEvidenceInput) -> EvidenceRecord:
        digest = hashlib.sha256(inp.release_id.encode()).hexdigest()
        return EvidenceRecord(envelope_sha256=digest, key_id=digest[:16])

    @activity.defn(name=Activity.OPEN_CHANGE)
    async def open_change(self, inp: ChangeRecordInput) -> None:
        return None

    @activity.defn(name=Activity.UPDATE_CHANGE)
    async def update_change(self, inp: ChangeRecordInput) -> None:
        return None

    @activity.defn(name=Activity.CLOSE_CHANGE)
    async def close_change(self, inp: CloseChangeInput) -> None:
        return None

    @activity.defn(name=Activity.CHECK_WINDOW)
    async def check_window(self, q: WindowQuery) -> WindowDecision:
        return WindowDecision(open=True)

    @activity.defn(name=Activity.ACQUIRE_LEASE)
    async def acquire_lease(self, inp: LeaseInput) -> LeaseDecision:
        # No real environment behind the no-op adapters, so nothing to serialise: always granted
        # (N concurrent releases of one service would otherwise queue one behind the other).
        return LeaseDecision(granted=True, holder=inp.release_id)

    @activity.defn(name=Activity.RELEASE_LEASE)
    async def release_lease(self, inp: LeaseInput) -> None:
        return None

    @activity.defn(name=Activity.BUILD_PACKAGE)
    async def build_package(self, inp: BuildInput) -> ReleasePackage:
        digest = hashlib.sha256(f"{inp.service}-{inp.version}".encode()).hexdigest()
        return ReleasePackage(
            service=inp.service,
            version=inp.version,
            path=f"/dev/null/{inp.release_id}",
            artifacts=[Artifact(name="app.tar", sha256=digest, size=1)],
            digest=digest,
        )

    @activity.defn(name=Activity.DEPLOY)
    async def deploy(self, inp: DeployInput) -> DeployResult:
        return DeployResult(environment=inp.environment, version=inp.version, previous_version="1.0.0")

    @activity.defn(name=Activity.ROLLBACK)
    async def rollback(self, inp: RollbackInput) -> DeployResult:
        return DeployResult(environment=inp.environment, version=inp.restore_version or "1.0.0")

    @activity.defn(name=Activity.RUN_TESTS)
    async def run_tests(self, inp: TestInput) -> TestReport:
        return TestReport(suites=[SuiteResult(name="unit", passed=1)], accepted=True)

    @activity.defn(name=Activity.SET_EXPOSURE)
    async def set_exposure(self, inp: ExposureInput) -> ExposureResult:
        return ExposureResult(percent=inp.percent)

    @activity.defn(name=Activity.CHECK_HEALTH)
    async def check_health(self, inp: HealthInput) -> HealthReport:
        return HealthReport(verdict=Verdict.PASS, error_rate=0.0, latency_ms=1.0, samples=100, detail="pass")

    @activity.defn(name=Activity.NOTIFY)
    async def notify(self, n: Notification) -> None:
        return None

    @activity.defn(name=Activity.RECORD_EVENT)
    async def record_event(self, inp: EventInput) -> None:
        return None

    @activity.defn(name=Activity.WRITE_EVIDENCE)
    async def write_evidence(self, inp: EvidenceInput) -> EvidenceRecord:
        # Nothing is signed or stored: the evidence is the worker's work after the release,
        # not the workflow's (its cost would be one Ed25519 signature per release).
        digest = hashlib.sha256(inp.release_id.encode()).hexdigest()
        return EvidenceRecord(envelope_sha256=digest, key_id=digest[:16])

    def all(self) -> list[Callable[..., Any]]:
        """Every activity; fails loudly when relman gains an activity this module lacks."""
        found: list[Callable[..., Any]] = [
            self.validate_request,
            self.validate_train,
            self.open_train,
            self.update_train,
            self.close_train,
            self.write_train_evidence,
            self.acquire_lease,
            self.release_lease,
            self.open_change,
            self.update_change,
            self.close_change,
            self.check_window,
            self.build_package,
            self.deploy,
            self.rollback,
            self.run_tests,
            self.set_exposure,
            self.check_health,
            self.notify,
            self.record_event,
            self.write_evidence,
        ]
        names = {activity._Definition.must_from_callable(f).name for f in found}
        missing = {a.value for a in Activity} - names
        if missing:
            raise RuntimeError(f"bench/noop.py has no no-op for: {', '.join(sorted(missing))}")
        return found
