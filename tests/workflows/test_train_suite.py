"""The train-level suite (the manifest's `tests:`) on the combined staging, on the
time-skipping server with test activities: after every component is prepared, before the
first wave; not accepted, nothing is launched and every prepared component is backed out."""

from __future__ import annotations

from collections import Counter

from temporalio.testing import WorkflowEnvironment

from relman.cli.train_render import format_train_status
from relman.contracts import Activity, CloseCode, Outcome
from relman.contracts.train_run import ComponentState
from relman.identity.evidence_train import build_train_statement
from tests.helpers import new_worker
from tests.workflows.test_train import UNDO, WORKFLOWS, final, order
from tests.workflows.train_support import TrainFakes, approve_train, make_train, start_train

SUITES = ("tests", "train-tests", "deploy-production", "expose-stage-allow-list")


async def test_the_train_suite_runs_once_between_the_preparations_and_the_first_wave(
    ts_env: WorkflowEnvironment,
) -> None:
    fake = TrainFakes()
    async with new_worker(ts_env.client, *WORKFLOWS, activities=fake.all()) as worker:
        request = make_train().model_copy(update={"tests": ["combined", "smoke"]})
        handle = await start_train(ts_env, worker, request)
        await approve_train(ts_env, handle)
        done = await final(handle)

    assert done.outcome is Outcome.COMPLETED, done.reason
    steps = [step for _, step in order(fake, handle.id, SUITES)]
    assert steps.count("train-tests") == 1
    at = steps.index("train-tests")
    assert steps[:at] == ["tests"] * 3  # every component tested in staging first
    launch = steps[at + 1 :]  # then the waves
    assert launch and set(launch) == {"deploy-production", "expose-stage-allow-list"}
    assert done.tests is not None and done.tests.accepted
    assert [(s.name, s.passed) for s in done.tests.suites] == [("combined", 3), ("smoke", 3)]
    assert {c.state for c in done.components.values()} == {ComponentState.LIVE}
    # The report is in the status `relman status` prints and in the train's signed evidence.
    assert "train suites: combined 3/3, smoke 3/3, accepted" in format_train_status(done).splitlines()
    evidence = fake.train_evidence[-1]
    assert evidence.tests == done.tests
    assert build_train_statement(evidence)["predicate"]["tests"]["accepted"] is True


async def test_a_failing_train_suite_backs_out_every_prepared_component_and_launches_nothing(
    ts_env: WorkflowEnvironment,
) -> None:
    fake = TrainFakes(failing_suites={"smoke"})
    async with new_worker(ts_env.client, *WORKFLOWS, activities=fake.all()) as worker:
        request = make_train().model_copy(update={"tests": ["combined", "smoke"]})
        handle = await start_train(ts_env, worker, request)
        await approve_train(ts_env, handle)
        done = await final(handle)

    train_id = handle.id
    assert done.outcome is Outcome.ROLLED_BACK
    assert done.reason.startswith("train suites: ") and "smoke" in done.reason, done.reason
    assert done.tests is not None and not done.tests.accepted
    assert [(s.name, s.failed) for s in done.tests.suites] == [("combined", 0), ("smoke", 1)]
    assert order(fake, train_id, ("deploy-production", "expose-stage-allow-list")) == []
    undone = order(fake, train_id, UNDO)
    # Every component was prepared: each staging deploy undone once, in backout order.
    assert undone == [
        ("worker", "rollback-staging"),
        ("api", "rollback-staging"),
        ("db-migration", "rollback-staging"),
    ]
    assert Counter(undone).most_common(1)[0][1] == 1
    assert {c.state for c in done.components.values()} == {ComponentState.BACKED_OUT}
    assert fake.train_closes[-1].close_code is CloseCode.ROLLED_BACK
    assert "train suites: combined 3/3, smoke 2/3, not accepted" in format_train_status(done)
    assert fake.train_evidence[-1].tests == done.tests


async def test_an_unknown_train_suite_is_refused_before_anything_starts(ts_env: WorkflowEnvironment) -> None:
    fake = TrainFakes()
    async with new_worker(ts_env.client, *WORKFLOWS, activities=fake.all()) as worker:
        request = make_train().model_copy(update={"tests": ["combined", "soak"]})
        done = await final(await start_train(ts_env, worker, request))

    assert done.outcome is Outcome.REJECTED
    assert done.reason == (
        "invalid request: InvalidRequest: unknown train suite(s) soak; the catalog has: combined, smoke"
    ), done.reason
    assert fake.log == [] and fake.changes == []  # no change opened, nothing built


async def test_a_train_without_suites_runs_no_train_suite(ts_env: WorkflowEnvironment) -> None:
    fake = TrainFakes(failing_suites={"combined", "smoke"})
    async with new_worker(ts_env.client, *WORKFLOWS, activities=fake.all()) as worker:
        handle = await start_train(ts_env, worker, make_train())
        await approve_train(ts_env, handle)
        done = await final(handle)

    assert done.outcome is Outcome.COMPLETED, done.reason
    assert done.tests is None
    assert not [c for c in fake.log if c[0] == Activity.RUN_TRAIN_TESTS.value]
    assert "train suites" not in format_train_status(done)
    # Its evidence states what a train's stated before suites existed: no `tests` key.
    assert "tests" not in build_train_statement(fake.train_evidence[-1])["predicate"]
