"""A train through ReleaseClient on the time-skipping server (test activities): started once,
refused before it starts when the catalog cannot order it, voted on through the same `decide`
as a release, and shown by wave as `relman status` prints it."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from relman.cli.train_render import format_train_status
from relman.client import ReleaseClient
from relman.contracts import Gate, GateState, GateStatus, Outcome
from relman.contracts.train_run import TrainStatus
from relman.errors import NotFoundError, RefusedError
from relman.workflows.component import ReleaseComponent
from relman.workflows.train import ReleaseTrain
from tests import people
from tests.helpers import assert_eventually, new_worker
from tests.workflows import train_support
from tests.workflows.train_support import (
    TrainFakes,
    component,
    make_train,
)

EXAMPLE_CATALOG = Path(__file__).resolve().parents[2] / "examples" / "catalog.yaml"


def client_for(env: WorkflowEnvironment, task_queue: str, catalog: Path | None = None) -> ReleaseClient:
    return ReleaseClient(env.client, task_queue, catalog, signer=people.PEOPLE.__getitem__)


async def gate_opened(client: ReleaseClient, train_id: str, gate: Gate) -> None:
    status = (await client.train_status(train_id)).gates.get(gate)
    assert status is not None and status.state is GateState.OPEN, status


async def test_a_train_started_voted_and_shown_through_the_client(
    dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dev server: the client signs on the wall clock, which a time-skipping server leaves.
    quick = [s.model_copy(update={"bake_seconds": 0}) for s in train_support.STAGES]
    monkeypatch.setattr(train_support, "STAGES", quick)
    fake = TrainFakes()
    async with new_worker(dev_env.client, ReleaseTrain, ReleaseComponent, activities=fake.all()) as worker:
        client = client_for(dev_env, worker.task_queue)
        request = make_train()
        train_id = await client.start_train(request)
        with pytest.raises(RefusedError, match="already started"):
            await client.start_train(request)
        assert await client.is_train(train_id)
        await assert_eventually(lambda: gate_opened(client, train_id, Gate.REQUEST), timeout=20)
        # One CAB's quorum is not enough: the data CAB (carol) must approve too.
        after = await client.approve(train_id, "alice", Gate.REQUEST)
        assert after.state is GateState.OPEN
        after = await client.approve(train_id, "carol", Gate.REQUEST)
        assert after.state is GateState.APPROVED
        await assert_eventually(lambda: gate_opened(client, train_id, Gate.PLAN), timeout=20)
        await client.approve(train_id, "bob", Gate.PLAN)
        await client.approve(train_id, "dave", Gate.PLAN)
        await dev_env.client.get_workflow_handle(train_id).result()
        final: TrainStatus = await client.train_status(train_id)

    assert final.outcome is Outcome.COMPLETED, final.reason
    shown = format_train_status(final)
    assert shown.splitlines()[0].startswith(train_id)
    for line in ("1     db-migration", "2     api", "3     worker"):
        assert line in shown, shown
    assert "live" in shown and "prepare, launch" in shown
    assert "backout order: worker, api, db-migration" in shown


async def test_a_train_the_catalog_cannot_order_never_starts(ts_env: WorkflowEnvironment) -> None:
    client = client_for(ts_env, "tq-never-polled", EXAMPLE_CATALOG)
    unknown = make_train(component("greeter"), component("payments"))
    with pytest.raises(RefusedError, match="payments"):
        await client.start_train(unknown)
    with pytest.raises(RPCError):
        await ts_env.client.get_workflow_handle(f"train-{unknown.train}").describe()


async def test_list_finds_a_train_and_its_components(
    dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`relman list --train ID` on a real dev server (visibility queries): the train and the
    child workflow of each of its components' steps, which carry the train's id."""
    quick = [s.model_copy(update={"bake_seconds": 0}) for s in train_support.STAGES]
    monkeypatch.setattr(train_support, "STAGES", quick)
    fake = TrainFakes()
    async with new_worker(dev_env.client, ReleaseTrain, ReleaseComponent, activities=fake.all()) as worker:
        client = client_for(dev_env, worker.task_queue)
        train_id = await client.start_train(make_train())
        for gate, voters in ((Gate.REQUEST, ("alice", "carol")), (Gate.PLAN, ("bob", "dave"))):
            for who in voters:

                async def vote(g: Gate = gate, w: str = who) -> GateStatus:
                    return await client.approve(train_id, w, g)

                await assert_eventually(vote, timeout=20)
        final = await dev_env.client.get_workflow_handle(train_id, result_type=TrainStatus).result()
        assert final.outcome is Outcome.COMPLETED

        async def listed() -> list[str]:
            found = sorted(s.release_id for s in await client.list(train=train_id))
            assert len(found) == 7, found
            return found

        found = await assert_eventually(listed, timeout=20, what="the train and its six children listed")
    assert found[0] == train_id
    assert {f.removeprefix(f"{train_id}.") for f in found[1:]} == {
        f"{s}.{m}" for s in ("api", "db-migration", "worker") for m in ("launch", "prepare")
    }


async def test_a_components_marginal_stage_is_approved_through_the_client(
    dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vote sent to a component's child (`<train>.<service>.launch`) is signed for the
    component (`<train>.<service>`), as the child and the train's evidence check it."""
    quick = [s.model_copy(update={"bake_seconds": 0}) for s in train_support.STAGES]
    monkeypatch.setattr(train_support, "STAGES", quick)
    fake = TrainFakes(marginal={("api", "health-ten-0")})
    async with new_worker(dev_env.client, ReleaseTrain, ReleaseComponent, activities=fake.all()) as worker:
        client = client_for(dev_env, worker.task_queue)
        train_id = await client.start_train(make_train())
        for gate, voters in ((Gate.REQUEST, ("alice", "carol")), (Gate.PLAN, ("bob", "dave"))):
            for who in voters:

                async def vote(g: Gate = gate, w: str = who) -> GateStatus:
                    return await client.approve(train_id, w, g)

                await assert_eventually(vote, timeout=20)
        child = f"{train_id}.api.launch"

        async def marginal_open() -> None:
            try:
                gate = (await client.status(child)).gates.get(Gate.MARGINAL)
            except NotFoundError:
                raise AssertionError(f"{child} not started yet") from None
            assert gate is not None and gate.state is GateState.OPEN

        await assert_eventually(marginal_open, timeout=30, what="api's marginal gate open")
        decided = await client.approve(child, "bob", Gate.MARGINAL)
        final = await dev_env.client.get_workflow_handle(train_id, result_type=TrainStatus).result()
    assert decided.state is GateState.APPROVED
    assert final.outcome is Outcome.COMPLETED, final.reason
