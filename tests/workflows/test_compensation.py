"""Compensations that fail: retried to success, or the release ends asking an operator to act.

The greeter example runs with the real activities (build, tests, environments as directories
with a `current` symlink, the flags file, a SQLite CMDB) on the time-skipping server. Faults are
injected by `Flaky`, a wrapper registered under the real activity's name that raises a
retryable error for the first N calls of one step and otherwise delegates to the real
`EnvironmentActivities.rollback` / `ExposureActivities.set_exposure`: the adapters themselves
are untouched, so what ends up on disk is what the real compensation did (or did not) do.

The workflow retries a compensation with COMPENSATION_RETRY (8 attempts, backoff 1 s doubling
to 30 s). The releases are standard changes of the example's `docs-only` change model (no CAB
gate), so the test only awaits the result and the time-skipping server skips the backoff.
"""

from __future__ import annotations

import json
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from relman import visibility
from relman.activities.registry import create_activities
from relman.client import ReleaseClient
from relman.cmdb.store import CmdbStore
from relman.contracts import (
    Activity,
    ChangeType,
    CloseCode,
    Environment,
    Outcome,
    ReleaseStatus,
)
from relman.identity.keys import Signer
from relman.results import final_status
from relman.workflows.release import COMPENSATION_RETRY, ReleaseWorkflow
from tests.activities.greeter_support import example_keys
from tests.helpers import new_worker
from tests.workflows.test_release import start
from tests.workflows.test_release_real import CATALOG, manifest

pytestmark = pytest.mark.timeout(120)

STANDARD = {"change_type": ChangeType.STANDARD, "change_model": "docs-only"}
"""A pre-approved change: the example catalog's change model (pat may request it)."""
ROLLBACK_STAGING = "roll back staging"
EXPOSURE_OFF = "exposure to 0%"


@dataclass
class Flaky:
    """Fault injection: the first `failures` calls of `step` raise, then the real activity runs."""

    real: Callable[[Any], Awaitable[Any]]
    step: str
    failures: int
    attempts: list[int] = field(default_factory=list)
    """Temporal's attempt number of every call of `step`."""
    succeeded: int = 0

    def activity(self) -> Callable[..., Any]:
        """An activity under the real one's name and types (the pydantic converter needs them)."""

        async def flaky(inp: Any) -> Any:
            if inp.step == self.step:
                self.attempts.append(activity.info().attempt)
                if len(self.attempts) <= self.failures:
                    raise ApplicationError(f"injected fault #{len(self.attempts)} in {self.step}")
            result = await self.real(inp)
            if inp.step == self.step:
                self.succeeded += 1
            return result

        flaky.__annotations__ = typing.get_type_hints(self.real)
        return activity.defn(name=_name(self.real))(flaky)


@dataclass
class Rig:
    env: WorkflowEnvironment
    data: Path
    cmdb: CmdbStore
    activities: list[Callable[..., Any]]
    signers: dict[str, Signer]

    def current(self, environment: Environment) -> str | None:
        link = self.data / "envs" / "greeter" / environment.value / "current"
        return link.readlink().name if link.is_symlink() else None

    def flags(self) -> dict[str, Any]:
        path = self.data / "envs" / "greeter" / "production" / "flags.flagd.json"
        flag: dict[str, Any] = json.loads(path.read_text())["flags"]["greeter"]
        return flag

    async def release(
        self, name: str, *faults: Flaky
    ) -> tuple[ReleaseStatus, WorkflowHandle[ReleaseWorkflow, ReleaseStatus]]:
        """A standard (pre-approved) release of `examples/releases/<name>.yaml`, to its end."""
        replaced = {_name(f.real): f.activity() for f in faults}
        activities = [replaced.get(_name(a), a) for a in self.activities]
        request = manifest(name).model_copy(update=STANDARD)
        async with new_worker(self.env.client, ReleaseWorkflow, activities=activities) as worker:
            handle = await start(self.env, worker, request)
            final = await final_status(handle)
        return final, handle


def _name(fn: Callable[..., Any]) -> str:
    return str(fn.__temporal_activity_definition.name)  # type: ignore[attr-defined]


@pytest_asyncio.fixture
async def rig(ts_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Rig]:
    """Real activities over a tmp data dir and CMDB, with greeter 1.1.0 live everywhere."""
    data = tmp_path / "data"
    cmdb_url = f"sqlite:///{tmp_path / 'cmdb.sqlite'}"
    store = CmdbStore(cmdb_url)
    signers = example_keys(data)
    rig = Rig(ts_env, data, store, create_activities(CATALOG, data, cmdb_url), signers)
    baseline, _ = await rig.release("greeter-1.1.0")
    assert baseline.outcome is Outcome.COMPLETED, baseline.reason
    assert rig.current(Environment.STAGING) == rig.current(Environment.PRODUCTION) == "1.1.0"
    yield rig
    store.close()


def real(rig: Rig, name: Activity) -> Callable[[Any], Awaitable[Any]]:
    return next(a for a in rig.activities if _name(a) == name.value)


async def test_rollback_failing_twice_then_succeeding_rolls_back_cleanly(rig: Rig) -> None:
    """Greeter 1.2.0 fails its tests in staging; restoring staging fails twice, then works."""
    flaky = Flaky(real(rig, Activity.ROLLBACK), "rollback-staging", failures=2)
    final, handle = await rig.release("greeter-1.2.0", flaky)

    assert final.outcome is Outcome.ROLLED_BACK
    assert flaky.attempts == [1, 2, 3]  # Temporal's retries, not the workflow, re-ran it
    assert flaky.succeeded == 1
    assert final.compensations == [ROLLBACK_STAGING]  # ran once, successfully
    assert not final.needs_operator and final.issues == []
    assert rig.current(Environment.STAGING) == "1.1.0"
    assert rig.current(Environment.PRODUCTION) == "1.1.0"
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(visibility.RELEASE_AWAITING) == []
    change = rig.cmdb.get_change(handle.id)
    assert change is not None
    assert change.close_code is CloseCode.ROLLED_BACK


async def test_rollback_that_keeps_failing_asks_an_operator(rig: Rig) -> None:
    """Restoring staging never works: the release ends rolled back *and* flagged for an operator."""
    flaky = Flaky(real(rig, Activity.ROLLBACK), "rollback-staging", failures=1_000)
    final, handle = await rig.release("greeter-1.2.0", flaky)

    assert final.outcome is Outcome.ROLLED_BACK
    assert flaky.attempts == list(range(1, COMPENSATION_RETRY.maximum_attempts + 1))
    assert flaky.succeeded == 0
    assert final.needs_operator
    assert final.compensations == []
    assert len(final.issues) == 1
    assert final.issues[0].startswith(f"compensation '{ROLLBACK_STAGING}' failed: ")
    assert "injected fault #8 in rollback-staging" in final.issues[0]
    assert final.awaiting == ["operator"]
    # what `relman status` shows
    seen = await ReleaseClient(rig.env.client, signer=rig.signers.__getitem__).status(handle.id)
    assert seen.needs_operator and seen.issues == final.issues
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(visibility.RELEASE_AWAITING) == ["operator"]
    # Nothing restored staging: exactly what the operator is told to fix. Production untouched.
    assert rig.current(Environment.STAGING) == "1.2.0"
    assert rig.current(Environment.PRODUCTION) == "1.1.0"
    change = rig.cmdb.get_change(handle.id)
    assert change is not None
    assert change.close_code is CloseCode.UNSUCCESSFUL
    assert change.recovered_at is None


async def test_failing_kill_switch_still_restores_staging_and_asks_an_operator(rig: Rig) -> None:
    """Greeter 1.3.0 fails health in dark launch; the kill switch (exposure to 0%) keeps failing.
    The saga goes on: staging is still restored, and the operator is asked to kill the exposure."""
    flaky = Flaky(real(rig, Activity.SET_EXPOSURE), "exposure-off", failures=1_000)
    final, handle = await rig.release("greeter-1.3.0", flaky)

    assert final.outcome is Outcome.ROLLED_BACK
    assert "health failed" in final.reason
    assert final.needs_operator
    assert final.compensations == [ROLLBACK_STAGING]
    assert [i.split(":")[0] for i in final.issues] == [f"compensation '{EXPOSURE_OFF}' failed"]
    flags = rig.flags()
    # Still exposed (to the failing stage's cohort): the operator's job now.
    assert (flags["variants"]["new"], "targeting" in flags) == ("1.3.0", True)
    assert (flags["metadata"]["release"], flags["metadata"]["stage"]) == (handle.id, final.stages[-1].name)
    assert rig.current(Environment.STAGING) == "1.1.0"
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(visibility.RELEASE_AWAITING) == ["operator"]
    change = rig.cmdb.get_change(handle.id)
    assert change is not None and change.close_code is CloseCode.UNSUCCESSFUL


async def test_a_flag_that_does_not_evaluate_as_written_rolls_back_before_the_bake(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injected: the allow-list stage's flag lands on disk sending allow-listed users to
    `previous`. The read-back through OpenFeature refuses it; no bake, the release rolls back."""
    from relman.activities import flagd

    real_write = flagd.write_document

    def tampering(path: Path, document: dict[str, Any]) -> None:
        flag = document["flags"]["greeter"]
        if flag["metadata"]["stage"] == "allow-list":
            flag["targeting"]["if"][1] = "previous"
        real_write(path, document)

    monkeypatch.setattr(flagd, "write_document", tampering)
    final, _ = await rig.release("greeter-1.3.0")

    assert final.outcome is Outcome.ROLLED_BACK
    assert "does not evaluate as written" in final.reason, final.reason
    assert "allow-listed key 'alice' got 'previous'" in final.reason
    assert [s.name for s in final.stages] == ["allow-list"] and final.stages[0].health is None
    assert final.compensations == [EXPOSURE_OFF, ROLLBACK_STAGING] and not final.needs_operator
    flags = rig.flags()
    assert (flags["metadata"]["stage"], "targeting" in flags) == ("exposure-off", False)
    assert rig.current(Environment.PRODUCTION) == "1.1.0"
