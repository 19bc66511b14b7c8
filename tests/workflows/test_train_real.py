"""The example trains end to end with the real activities on the time-skipping server.

Every side effect is real: greeter-db, greeter and greeter-worker are built by their own
build scripts, tested with pytest in staging, dark-launched through flagd flags and probed;
greeter-db's environments are commands migrating a SQLite file; the CMDB is a SQLite file.
`train-greeter-2.0` goes out in its three waves; `train-greeter-2.1` then fails in its last
wave (greeter-worker 2.1.0 loses names with spaces) and the whole train is backed out, in
reverse order, one component after the other, each undo once, leaving 2.0.0 everywhere.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from relman.activities.registry import create_activities
from relman.cmdb.store import CmdbStore
from relman.contracts import ErrorType, Gate, Outcome
from relman.contracts.train import TrainRequest
from relman.contracts.train_run import ComponentState, TrainStatus
from relman.demo_train import approvers_for
from relman.workflows.component import ReleaseComponent
from relman.workflows.release import ReleaseWorkflow
from relman.workflows.train import ReleaseTrain
from tests.activities.greeter_support import example_keys
from tests.helpers import new_worker
from tests.workflows.train_support import gate_open, start_train, train_status, train_vote, until_train

pytestmark = pytest.mark.timeout(240)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SERVICES = ("greeter-db", "greeter", "greeter-worker")


def manifest(name: str) -> TrainRequest:
    return TrainRequest.model_validate(yaml.safe_load((EXAMPLES / "releases" / f"{name}.yaml").read_text()))


async def final(handle: WorkflowHandle) -> TrainStatus:
    try:
        return TrainStatus.model_validate(await handle.result())
    except WorkflowFailureError as err:
        cause = err.cause
        assert isinstance(cause, ApplicationError) and cause.type == ErrorType.RELEASE_FAILED, err
        return TrainStatus.model_validate(cause.details[0])


async def approve(env: WorkflowEnvironment, handle: WorkflowHandle, requester: str) -> None:
    """Each gate approved as the demo approves it: one member of every component's CAB."""
    for gate in (Gate.REQUEST, Gate.PLAN):
        status = await until_train(env, handle, gate_open(gate))
        for who in approvers_for(status.gates[gate], requester):
            await train_vote(handle, gate, who)


def production(data: Path, service: str) -> str | None:
    link = data / "envs" / service / "production" / "current"
    return os.readlink(link) if link.is_symlink() else None


async def children_started(handle: WorkflowHandle) -> list[str]:
    history = await handle.fetch_history()
    return [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    ]


async def test_the_example_trains_go_out_in_waves_and_come_back_in_reverse(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    cmdb_url = f"sqlite:///{tmp_path / 'cmdb.sqlite'}"
    example_keys(data)
    activities = create_activities(EXAMPLES / "catalog.yaml", data, cmdb_url)
    store = CmdbStore(cmdb_url)
    workflows = (ReleaseTrain, ReleaseComponent, ReleaseWorkflow)
    try:
        async with new_worker(ts_env.client, *workflows, activities=activities) as worker:
            good = await start_train(ts_env, worker, manifest("train-greeter-2.0"))
            await approve(ts_env, good, "pat")
            done = await final(good)
            live = {s: production(data, s) for s in SERVICES}

            bad = await start_train(ts_env, worker, manifest("train-greeter-2.1"))
            await approve(ts_env, bad, "pat")
            failed = await final(bad)
            started = await children_started(bad)
            shown = await train_status(bad)
        change = store.get_change(good.id)
        bad_change = store.get_change(bad.id)
    finally:
        store.close()

    assert done.outcome is Outcome.COMPLETED, done.reason
    assert done.waves == [["greeter-db"], ["greeter"], ["greeter-worker"]]
    assert live == dict.fromkeys(SERVICES, "2.0.0")
    # The catalog's train suite ran once on the combined staging, before the first wave.
    assert done.tests is not None and done.tests.accepted
    assert [(s.name, s.passed, s.failed, s.errors) for s in done.tests.suites] == [("combined", 2, 0, 0)]
    assert change is not None and sorted(c.service for c in change.components) == sorted(SERVICES)

    assert failed.outcome is Outcome.ROLLED_BACK, failed.reason
    # Names with spaces are not what the combined suite sends: it passes, the wave fails.
    assert failed.tests is not None and failed.tests.accepted
    assert "greeter-worker: launch rolled_back" in failed.reason and "health failed" in failed.reason
    # The failed launch undid its own exposure and production deploy; then every component is
    # backed out in reverse dependency order, one after the other, each once.
    backouts = [c.removeprefix(f"{bad.id}.") for c in started if c.endswith(".backout")]
    assert backouts == ["greeter-worker.backout", "greeter.backout", "greeter-db.backout"], started
    assert {c.state for c in failed.components.values()} == {ComponentState.BACKED_OUT}
    for service in SERVICES:
        assert production(data, service) == "2.0.0", service
        undone = failed.components[service].compensations
        assert len(undone) == len(set(undone)), (service, undone)
    assert shown.outcome is Outcome.ROLLED_BACK
    # greeter-db's schema is 2.0.0's again: the 2.1.0 migration was undone.
    db = data / "envs" / "greeter-db" / "production" / "greeter.sqlite"
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}
    assert "greetings" in tables
    assert bad_change is not None and bad_change.close_code == "rolled_back"
