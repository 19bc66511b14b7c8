"""The greeter example released end to end with the real activities on the time-skipping server.

Every side effect is real: the build runs `examples/greeter/build.py` (sha256 artifacts), the
tests run pytest against the staging copy (JUnit XML), the dark launch writes the flags file and
probes the version's real HTTP metrics, go-live switches production's `current` symlink, and
the CMDB is a SQLite file. The example catalog's people sign with real keys (`example_keys`
puts them in the data dir, where the catalog reads their `.pub` files). Each test keeps its
history (`real_*`) for the replay test.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from relman.activities.registry import create_activities
from relman.cmdb.dora import DoraMetrics
from relman.cmdb.records import ChangeDetail
from relman.cmdb.store import CmdbStore
from relman.contracts import (
    ChangeType,
    CloseCode,
    Environment,
    Gate,
    GateState,
    OperatorVerb,
    Outcome,
    Phase,
    ReleaseRequest,
    ReleaseStatus,
    Verdict,
)
from relman.results import final_status
from relman.workflows.release import ReleaseWorkflow
from tests.activities.greeter_support import example_keys
from tests.helpers import new_worker
from tests.workflows.test_release import act, at_gate, record_history, start, until, vote

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CATALOG = EXAMPLES / "catalog.yaml"
RELEASES = EXAMPLES / "releases"
OPERATOR = "oli"
"""The example catalog's operator."""
POLL = timedelta(milliseconds=200)
"""Small steps: the bakes (1 s) and the review period (5 s) of the example are real seconds."""


def manifest(name: str) -> ReleaseRequest:
    return ReleaseRequest.model_validate(yaml.safe_load((RELEASES / f"{name}.yaml").read_text()))


@dataclass
class Greeter:
    """A worker with the real activities over a data dir and a SQLite CMDB in tmp_path."""

    env: WorkflowEnvironment
    worker: Worker
    data: Path
    cmdb: CmdbStore

    def env_dir(self, environment: Environment) -> Path:
        return self.data / "envs" / "greeter" / environment.value

    def current(self, environment: Environment) -> str | None:
        link = self.env_dir(environment) / "current"
        return os.readlink(link) if link.is_symlink() else None

    def flags(self) -> dict[str, Any]:
        """The greeter's flagd flag in production, summed up: who is exposed to what."""
        doc = json.loads((self.env_dir(Environment.PRODUCTION) / "flags.flagd.json").read_text())
        flag = doc["flags"]["greeter"]
        return {
            "version": flag["variants"]["new"],
            "previous": flag["variants"]["previous"],
            "percent": flag["metadata"]["percent"],
            "enabled": "targeting" in flag or flag["defaultVariant"] == "new",
            **{k: flag["metadata"][k] for k in ("release", "stage", "digest")},
        }

    def change(self, handle: WorkflowHandle) -> ChangeDetail:
        change = self.cmdb.get_change(handle.id)
        assert change is not None, f"no CMDB change for {handle.id}"
        return change

    def dora(self) -> DoraMetrics:
        # Around every stamp: the CMDB stamps requested_at/closed_at with the wall clock, the
        # workflow production_at/failed_at with its own, and the time-skipping server's clock
        # leaps ahead (by 10 years when it reaches a default schedule-to-close timer).
        changes = self.cmdb.list_changes(service="greeter")
        stamps = [
            at
            for c in changes
            for at in (c.requested_at, c.production_at, c.failed_at, c.recovered_at, c.closed_at)
            if at is not None
        ]
        return self.cmdb.dora(min(stamps) - timedelta(hours=1), max(stamps) + timedelta(hours=1), "greeter")

    async def start(self, request: ReleaseRequest) -> WorkflowHandle[ReleaseWorkflow, ReleaseStatus]:
        return await start(self.env, self.worker, request)

    async def approve(self, handle: WorkflowHandle, gate: Gate, *members: str) -> None:
        await until(self.env, handle, at_gate(gate), step=POLL)
        for member in members:
            await vote(handle, gate, member)

    async def authorize(self, handle: WorkflowHandle) -> None:
        """A normal change: two CAB members approve the request, two others the plan."""
        await self.approve(handle, Gate.REQUEST, "alice", "bob")
        await self.approve(handle, Gate.PLAN, "carol", "dave")

    async def finish(self, handle: WorkflowHandle, name: str) -> ReleaseStatus:
        final = await final_status(handle)
        record_history(f"real_{name}", await handle.fetch_history())
        return final

    async def release(self, name: str) -> ReleaseStatus:
        """A normal release of `examples/releases/<name>.yaml`, approved, to its end."""
        handle = await self.start(manifest(name))
        await self.authorize(handle)
        return await final_status(handle)


@pytest_asyncio.fixture
async def greeter(ts_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Greeter]:
    data = tmp_path / "data"
    cmdb_url = f"sqlite:///{tmp_path / 'cmdb.sqlite'}"
    example_keys(data)
    activities = create_activities(CATALOG, data, cmdb_url)
    store = CmdbStore(cmdb_url)
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=activities) as worker:
        yield Greeter(ts_env, worker, data, store)
    store.close()


async def test_normal_release_really_builds_tests_launches_and_deploys(greeter: Greeter) -> None:
    handle = await greeter.start(manifest("greeter-1.1.0"))
    await greeter.authorize(handle)
    final = await greeter.finish(handle, "normal_completed")

    assert final.outcome is Outcome.COMPLETED, final.reason
    assert [s.verdict for s in final.stages] == [Verdict.PASS] * 4
    assert final.package is not None and final.package.version == "1.1.0"
    assert {a.name for a in final.package.artifacts} >= {"app.py", "VERSION", "behaviour.json"}
    assert greeter.current(Environment.PRODUCTION) == "1.1.0"
    assert greeter.current(Environment.STAGING) == "1.1.0"
    prod = greeter.env_dir(Environment.PRODUCTION)
    assert (prod / "current" / "VERSION").read_text().strip() == "1.1.0"
    flags = greeter.flags()
    assert (flags["version"], flags["percent"], flags["enabled"]) == ("1.1.0", 100.0, True)
    assert (flags["stage"], flags["digest"]) == ("go-live", final.package.digest)

    change = greeter.change(handle)
    assert (change.status, change.close_code) == ("closed", CloseCode.SUCCESSFUL)
    assert change.artifact_digest == final.package.digest
    ci = greeter.cmdb.get_ci("greeter")
    assert ci is not None and ci.current_version == "1.1.0"
    versions = greeter.cmdb.ci_versions("greeter")
    assert [(v.version, v.artifact_digest) for v in versions] == [("1.1.0", final.package.digest)]
    assert sorted((a.gate, a.approver) for a in change.approvals) == [
        ("plan", "carol"),
        ("plan", "dave"),
        ("request", "alice"),
        ("request", "bob"),
    ]
    assert change.review is not None


async def test_failing_tests_roll_back_staging_and_name_the_tests(greeter: Greeter) -> None:
    assert (await greeter.release("greeter-1.1.0")).outcome is Outcome.COMPLETED
    handle = await greeter.start(manifest("greeter-1.2.0"))
    await greeter.authorize(handle)
    final = await greeter.finish(handle, "tests_failed_rolled_back")

    assert final.outcome is Outcome.ROLLED_BACK
    assert final.compensations == ["roll back staging"]
    assert Phase.DARK_LAUNCH not in [t.phase for t in final.history]
    assert greeter.current(Environment.STAGING) == "1.1.0"
    assert greeter.current(Environment.PRODUCTION) == "1.1.0"
    change = greeter.change(handle)
    assert (change.status, change.close_code) == ("closed", CloseCode.ROLLED_BACK)
    for failing in ("test_this_release_greets_correctly", "test_greet_over_http"):
        assert failing in change.reason and failing in final.reason
    ci = greeter.cmdb.get_ci("greeter")
    assert ci is not None and ci.current_version == "1.1.0"
    dora = greeter.dora()
    assert dora.deployments == 1
    # A failure in staging is not a failed production deployment (DORA).
    assert (dora.failures, dora.change_fail_rate) == (0, 0.0)


async def test_bad_health_in_dark_launch_kills_exposure_and_keeps_production(greeter: Greeter) -> None:
    assert (await greeter.release("greeter-1.1.0")).outcome is Outcome.COMPLETED
    handle = await greeter.start(manifest("greeter-1.3.0"))
    await greeter.authorize(handle)
    final = await greeter.finish(handle, "health_failed_rolled_back")

    assert final.outcome is Outcome.ROLLED_BACK
    assert "health failed" in final.reason and "error_rate=0.3" in final.reason
    assert final.stages[-1].verdict is Verdict.FAIL  # the failed stage says so
    assert final.compensations == ["exposure to 0%", "roll back staging"]
    flags = greeter.flags()
    assert (flags["version"], flags["percent"], flags["enabled"]) == ("1.3.0", 0.0, False)
    assert (flags["previous"], flags["stage"]) == ("1.1.0", "exposure-off")  # the kill switch
    assert greeter.current(Environment.PRODUCTION) == "1.1.0"
    assert greeter.current(Environment.STAGING) == "1.1.0"
    change = greeter.change(handle)
    assert change.close_code is CloseCode.ROLLED_BACK
    # It failed at the allow-list stage (0 % plus named internal people): no production user
    # saw it, so no failed_at, and for DORA neither a deployment nor a failure.
    assert change.failed_at is None and change.recovered_at is None
    ci = greeter.cmdb.get_ci("greeter")
    assert ci is not None and ci.current_version == "1.1.0"
    dora = greeter.dora()
    assert (dora.deployments, dora.failures, dora.change_fail_rate) == (1, 0, 0.0)


async def test_emergency_release_with_ecab_and_cab_retro_approval(greeter: Greeter) -> None:
    request = manifest("greeter-1.1.1-emergency")
    assert request.change_type is ChangeType.EMERGENCY
    handle = await greeter.start(request)
    await greeter.approve(handle, Gate.REQUEST, "erin")
    await greeter.approve(handle, Gate.PLAN, "erin")
    await greeter.approve(handle, Gate.RETRO, "alice", "bob")
    final = await greeter.finish(handle, "emergency_retro_completed")

    assert final.outcome is Outcome.COMPLETED, final.reason
    assert final.gates[Gate.RETRO].state is GateState.APPROVED
    assert greeter.current(Environment.PRODUCTION) == "1.1.1"
    change = greeter.change(handle)
    assert (change.change_type, change.close_code) == (ChangeType.EMERGENCY, CloseCode.SUCCESSFUL)
    assert sorted((a.gate, a.approver) for a in change.approvals) == [
        ("plan", "erin"),
        ("request", "erin"),
        ("retro", "alice"),
        ("retro", "bob"),
    ]


async def test_operator_abort_in_dark_launch_compensates(greeter: Greeter) -> None:
    assert (await greeter.release("greeter-1.1.0")).outcome is Outcome.COMPLETED
    request = manifest("greeter-1.1.0").model_copy(update={"version": "1.1.2", "title": "Greeter 1.1.2"})
    handle = await greeter.start(request)
    await greeter.authorize(handle)
    await until(greeter.env, handle, lambda s: len(s.stages) >= 2, step=POLL)
    await handle.signal(
        ReleaseWorkflow.abort, await act(handle, OperatorVerb.ABORT, OPERATOR, "pager went off")
    )
    final = await greeter.finish(handle, "aborted_in_dark_launch")

    assert final.outcome is Outcome.ABORTED
    assert "pager went off" in final.reason
    phases = [t.phase for t in final.history]
    assert Phase.DEPLOYING not in phases
    assert phases.index(Phase.COMPENSATING) > phases.index(Phase.DARK_LAUNCH)
    assert final.compensations == ["exposure to 0%", "roll back staging"]
    flags = greeter.flags()
    assert (flags["version"], flags["percent"], flags["enabled"]) == ("1.1.2", 0.0, False)
    assert greeter.current(Environment.STAGING) == "1.1.0"
    assert greeter.current(Environment.PRODUCTION) == "1.1.0"
    assert greeter.change(handle).close_code is CloseCode.ABORTED
