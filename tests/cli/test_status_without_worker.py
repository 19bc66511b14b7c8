"""`relman status` with no worker, on a real dev server: the status is rebuilt from the server's
and the CMDB's records (source RECORDS); with a worker the live query answers (source WORKFLOW).
And a version of a service is released once at a time, whatever `--id` says."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from relman.client import ReleaseClient, RelmanError, load_manifest
from relman.config import Settings, load_settings
from relman.contracts import Gate, GateState, Outcome, Phase, ReleaseStatus, StatusSource
from relman.errors import RefusedError
from relman.worker import run_worker
from tests.activities.greeter_support import example_keys
from tests.conftest import _binary
from tests.helpers import assert_eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "examples" / "releases" / "greeter-1.1.0.yaml"


@dataclass
class Rig:
    """A release client, the CLI's environment and a worker that can be stopped and started."""

    env: WorkflowEnvironment
    settings: Settings
    cli_env: dict[str, str]
    client: ReleaseClient
    worker: tuple[asyncio.Event, asyncio.Task[None]] | None = None
    started: list[str] = field(default_factory=list)

    async def start_worker(self) -> None:
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            run_worker(self.settings, client=self.env.client, stop=stop, ready=ready, handle_signals=False)
        )
        await asyncio.wait_for(ready.wait(), 30)
        self.worker = (stop, task)

    async def stop_worker(self) -> None:
        assert self.worker is not None
        stop, task = self.worker
        stop.set()
        await asyncio.wait_for(task, 30)
        self.worker = None

    async def start(self, release_id: str | None = None) -> str:
        rid = release_id or f"release-greeter-1.1.0-{uuid.uuid4().hex[:6]}"
        await self.client.start(load_manifest(MANIFEST), rid)
        self.started.append(rid)
        return rid

    async def cli(self, *args: str, code: int = 0) -> str:
        """`python -m relman.starter ARGS` (stdout, or the one-line stderr of a failure)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relman.starter",
            *args,
            cwd=ROOT,
            env=self.cli_env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == code, (
            f"relman {' '.join(args)} → {proc.returncode}: {err.decode()}{out.decode()}"
        )
        if code:
            assert "Traceback" not in err.decode() and len(err.decode().strip().splitlines()) == 1, (
                err.decode()
            )
            return err.decode().strip()
        return out.decode()

    async def temporal(self, *args: str) -> None:
        """The Temporal CLI against the test's server, as an operator would run it."""
        proc = await asyncio.create_subprocess_exec(
            _binary("temporal"),
            *args,
            "--address",
            self.env.client.service_client.config.target_host,
            "--namespace",
            self.env.client.namespace,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, (out + err).decode()


@pytest_asyncio.fixture
async def rig(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Rig]:
    queue = f"relman-records-{uuid.uuid4().hex[:8]}"
    cmdb_url = f"sqlite:///{tmp_path / 'cmdb.sqlite'}"
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith(("RELMAN_", "TEMPORAL_"))} | {
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": dev_env.client.namespace,
        "RELMAN_TASK_QUEUE": queue,
        "RELMAN_DATA_DIR": str(tmp_path / "data"),
        "RELMAN_CMDB_URL": cmdb_url,
        "RELMAN_CATALOG": str(ROOT / "examples" / "catalog.yaml"),
        "NO_COLOR": "1",
    }
    signers = example_keys(tmp_path / "data")
    settings = load_settings(
        task_queue=queue,
        data_dir=tmp_path / "data",
        cmdb_url=cmdb_url,
        catalog=ROOT / "examples" / "catalog.yaml",
        graceful_shutdown_seconds=2,
    )
    client = ReleaseClient(dev_env.client, queue, signer=signers.__getitem__, cmdb_url=cmdb_url)
    rig = Rig(dev_env, settings, cli_env, client)
    try:
        yield rig
    finally:
        if rig.worker is not None:
            await rig.stop_worker()
        for rid in rig.started:
            with contextlib.suppress(Exception):  # already closed
                await dev_env.client.get_workflow_handle(rid).terminate("test over")


def gate_open(gate: Gate) -> Callable[[ReleaseStatus], bool]:
    return lambda st: gate in st.gates and st.gates[gate].state is GateState.OPEN


async def test_status_of_a_release_at_a_gate_after_its_worker_stopped(rig: Rig) -> None:
    await rig.start_worker()
    rid = await rig.start()
    live = await rig.client.wait_for(rid, gate_open(Gate.REQUEST), timeout=30, interval=0.2)
    assert live.source is StatusSource.WORKFLOW
    assert live.phase is Phase.AWAITING_CAB and live.awaiting
    await rig.stop_worker()

    began = time.monotonic()
    st = await rig.client.status(rid)
    took = time.monotonic() - began
    assert st.source is StatusSource.RECORDS
    assert took < 10, f"a missing worker took {took:.1f}s to detect"
    print(f"missing worker detected in {took:.2f}s")
    assert (st.phase, st.awaiting, st.outcome, st.risk) == (
        Phase.AWAITING_CAB,
        live.awaiting,
        None,
        live.risk,
    )
    assert st.request == live.request  # from the start memo, signature included
    # The timeline: the phases as the workflow published them (event history), and the CMDB's rows.
    assert [(h.phase, h.note) for h in st.history] == [
        (Phase.REQUESTED, "workflow started"),
        (Phase.REQUESTED, "CMDB: change requested"),
        (Phase.AWAITING_CAB, ""),
    ]
    assert st.gates == {} and st.plan is None  # what only the workflow knows is not made up

    text = await rig.cli("status", rid)
    assert "no worker answered" in text
    assert "awaiting_cab" in text and ", ".join(live.awaiting) in text
    assert live.request.title in text
    as_json = json.loads(await rig.cli("status", rid, "--json"))
    assert as_json["source"] == "records" and as_json["phase"] == "awaiting_cab"

    # Votes need the workflow: the approver hears that no worker answered, not "no open gate".
    with pytest.raises(RelmanError, match="no worker answered"):
        await rig.client.approve(rid, "alice")

    await rig.start_worker()  # back to the live answer as soon as a worker polls
    st = await rig.client.status(rid)
    assert st.source is StatusSource.WORKFLOW and st.gates[Gate.REQUEST].state is GateState.OPEN


async def test_cancelled_with_no_worker_shows_no_outcome_until_a_worker_closes_it(rig: Rig) -> None:
    await rig.start_worker()
    rid = await rig.start()
    await rig.client.wait_for(rid, gate_open(Gate.REQUEST), timeout=30, interval=0.2)
    await rig.stop_worker()
    await rig.temporal("workflow", "cancel", "--workflow-id", rid)

    st = await rig.client.status(rid)
    assert st.source is StatusSource.RECORDS
    assert st.outcome is None and st.awaiting == []
    assert "cancelled (temporal workflow cancel) at " in st.reason and "no outcome recorded" in st.reason
    assert st.history[-1].note == "cancel requested (temporal workflow cancel)"
    text = await rig.cli("status", rid)
    assert "no worker answered" in text and "cancelled (temporal workflow cancel)" in text

    # A worker runs the cancellation: compensations, the CMDB close, outcome aborted.
    await rig.start_worker()

    async def aborted() -> None:
        st = await rig.client.status(rid)
        assert st.source is StatusSource.WORKFLOW and st.outcome is Outcome.ABORTED, st

    await assert_eventually(aborted, timeout=30, interval=0.3)
    await rig.stop_worker()
    # Closed, worker gone: the outcome relman recorded (search attribute and CMDB).
    st = await rig.client.status(rid)
    assert st.source is StatusSource.RECORDS
    assert (st.phase, st.outcome, st.reason) == (Phase.CLOSED, Outcome.ABORTED, "workflow cancelled")
    assert any("CMDB: change closed, aborted" in h.note for h in st.history)


async def test_terminated_with_no_worker_is_closed_without_outcome(rig: Rig) -> None:
    rid = await rig.start()  # no worker ever: the request comes from the start memo alone
    await rig.temporal("workflow", "terminate", "--workflow-id", rid, "--reason", "operator gave up")
    began = time.monotonic()
    st = await rig.client.status(rid)
    # No worker ever polled its task queue: known at once, without waiting on a query.
    assert time.monotonic() - began < 2
    assert f"no worker polls task queue {rig.settings.task_queue}" in st.issues[0]
    assert st.source is StatusSource.RECORDS
    assert (st.phase, st.outcome) == (Phase.CLOSED, None)
    assert st.reason == (
        "the workflow was terminated (operator gave up) before relman closed the release: no outcome recorded"
    )
    assert st.request == load_manifest(MANIFEST).model_copy(update={"proof": st.request.proof})


async def test_a_version_is_released_once_at_a_time(rig: Rig) -> None:
    first = await rig.start()
    second = f"release-greeter-1.1.0-{uuid.uuid4().hex[:6]}"

    async def refused() -> None:
        try:
            await rig.client.start(load_manifest(MANIFEST), second)
        except RefusedError as exc:
            assert str(exc) == (
                f"greeter 1.1.0 is already being released as {first} " + str(exc).split(f"as {first} ")[1]
            )
            assert "wait for it to end or abort it" in str(exc)
            return
        rig.started.append(second)
        raise AssertionError("a second release of greeter 1.1.0 started")

    await assert_eventually(refused, timeout=10, interval=0.2)
    error = await rig.cli("start", str(MANIFEST), "--id", second, code=1)
    assert error.startswith(f"error: greeter 1.1.0 is already being released as {first} (running since ")

    # Another version is not held up; once the first ends, the same version may run again.
    other = load_manifest(MANIFEST).model_copy(update={"version": "1.1.1"})
    rig.started.append(await rig.client.start(other, f"release-greeter-1.1.1-{uuid.uuid4().hex[:6]}"))
    await rig.env.client.get_workflow_handle(first).terminate("superseded")

    async def started() -> None:
        try:
            assert await rig.client.start(load_manifest(MANIFEST), second) == second
        except RefusedError as exc:
            raise AssertionError(str(exc)) from None
        rig.started.append(second)

    await assert_eventually(started, timeout=10, interval=0.2)
