"""End to end on a real dev server: the `relman` CLI (as a subprocess) against a real worker.

The example catalog's people sign with their keys in the data dir, where both the worker (their
`.pub` files) and the CLI (`--as NAME` reads `<data dir>/keys/NAME.key`) find them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from relman.client import ReleaseClient
from relman.config import load_settings
from relman.contracts import Gate, GateState, Outcome, Phase, ReleaseStatus
from relman.worker import run_worker
from tests.activities.greeter_support import example_keys
from tests.helpers import assert_eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "examples" / "releases" / "greeter-1.1.0.yaml"
OPERATOR = "oli"
"""The example catalog's operator (pause, resume, abort)."""


@dataclass
class Cli:
    env: dict[str, str]
    client: ReleaseClient

    async def __call__(self, *args: str, code: int = 0) -> str:
        """Run `python -m relman.starter ARGS`; assert its exit code; return stdout (or stderr on error)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relman.starter",
            *args,
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        text_out, text_err = out.decode(), err.decode()
        assert proc.returncode == code, f"relman {' '.join(args)} → {proc.returncode}: {text_err}{text_out}"
        if code != 0:
            assert "Traceback" not in text_err
            assert len(text_err.strip().splitlines()) == 1, text_err
            return text_err.strip()
        return text_out

    async def json(self, *args: str) -> Any:
        return json.loads(await self(*args, "--json"))

    async def until(self, release_id: str, check: Any, timeout: float = 60) -> ReleaseStatus:
        return await self.client.wait_for(release_id, check, timeout=timeout, interval=0.2)


@pytest_asyncio.fixture
async def cli(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Cli]:
    """A worker on its own task queue and data dir, and the CLI's environment pointing at both."""
    queue = f"relman-e2e-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELMAN_", "TEMPORAL_"))} | {
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": dev_env.client.namespace,
        "RELMAN_TASK_QUEUE": queue,
        "RELMAN_DATA_DIR": str(tmp_path / "data"),
        "RELMAN_CMDB_URL": f"sqlite:///{tmp_path / 'cmdb.sqlite'}",
        "RELMAN_CATALOG": str(ROOT / "examples" / "catalog.yaml"),
    }
    signers = example_keys(tmp_path / "data")
    settings = load_settings(
        task_queue=queue,
        data_dir=tmp_path / "data",
        cmdb_url=env["RELMAN_CMDB_URL"],
        catalog=ROOT / "examples" / "catalog.yaml",
        graceful_shutdown_seconds=2,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_worker(settings, client=dev_env.client, stop=stop, ready=ready, handle_signals=False)
    )
    await asyncio.wait_for(ready.wait(), 30)
    try:
        yield Cli(env, ReleaseClient(dev_env.client, queue, signer=signers.__getitem__))
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def gate_open(gate: Gate) -> Any:
    return lambda st: gate in st.gates and st.gates[gate].state is GateState.OPEN


async def test_release_through_every_phase_from_the_cli(cli: Cli, tmp_path: Path) -> None:
    rid = f"release-greeter-1.1.0-{uuid.uuid4().hex[:6]}"
    assert (await cli("start", str(MANIFEST), "--id", rid)).strip() == rid
    refused = await cli("start", str(MANIFEST), "--id", rid, code=1)
    assert refused == f"error: release {rid} was already started; a release runs once " + (
        "(release another version, or pass another id)"
    )

    await cli.until(rid, gate_open(Gate.REQUEST))
    refused = await cli("approve", rid, "--as", "pat", code=1)
    assert refused == "error: refused: pat requested this release and cannot approve it"
    assert "1/2 approvals, gate open" in await cli("approve", rid, "--as", "alice", "--comment", "fine")

    async def listed_as_waiting_on_bob() -> None:
        found = await cli.json("list", "--awaiting", "bob")
        assert rid in [r["release_id"] for r in found]
        assert next(r for r in found if r["release_id"] == rid)["phase"] == Phase.AWAITING_CAB.value

    await assert_eventually(listed_as_waiting_on_bob, timeout=20, interval=0.5)
    assert "gate approved" in await cli("approve", rid, "--as", "bob", "--gate", "request")

    # Pause before the plan is approved: the release holds before building.
    await cli.until(rid, gate_open(Gate.PLAN))
    await cli("pause", rid, "--as", OPERATOR, "--reason", "waiting for the on-call handover")
    await cli("approve", rid, "--as", "carol", "--gate", "plan")
    await cli("approve", rid, "--as", "dave", "--gate", "plan")
    await cli.until(rid, lambda st: st.paused and st.awaiting == ["operator"])
    status = await cli.json("status", rid)
    assert status["paused"] is True and status["outcome"] is None
    assert status["gates"]["plan"]["state"] == "approved"
    assert [v["vote"]["approver"] for v in status["gates"]["request"]["votes"]] == ["alice", "bob"]
    await cli("resume", rid, "--as", OPERATOR, "--reason", "handover done")

    await cli.until(rid, lambda st: st.phase is Phase.REVIEWING or st.outcome is not None)
    await cli("feedback", rid, "--as", "alice", "--rating", "4", "--comment", "friendlier indeed")
    final = await cli.until(rid, lambda st: st.outcome is not None, timeout=90)
    assert final.outcome is Outcome.COMPLETED, final.reason

    status = await cli.json("status", rid)
    assert status["outcome"] == "completed"
    assert [s["verdict"] for s in status["stages"]] == ["pass"] * len(status["stages"])
    assert status["feedback"][0]["rating"] == 4
    text = await cli("status", rid)
    for phase in ("awaiting_cab", "building", "testing", "dark_launch", "deploying", "reviewing", "closed"):
        assert phase in text

    changes = await cli.json("cmdb", "changes")
    change = next(c for c in changes if c["release_id"] == rid)
    assert (change["status"], change["close_code"]) == ("closed", "successful")
    ci = await cli.json("cmdb", "ci", "greeter")
    assert ci["ci"]["current_version"] == "1.1.0"
    plot = tmp_path / "dora.png"
    metrics = await cli.json("metrics", "--service", "greeter", "--plot", str(plot))
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert metrics["deployments"] == 1 and metrics["failures"] == 0
    assert "change fail rate" in await cli("metrics")


async def test_abort_while_waiting_for_a_window_compensates(cli: Cli, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    await cli(
        "cmdb", "window", "add", "--kind", "blackout", "--service", "greeter",
        "--environment", "production", "--start", (now - timedelta(hours=1)).isoformat(),
        "--end", (now + timedelta(hours=2)).isoformat(), "--reason", "quarter-end freeze",
        "--as", "alice",
    )  # fmt: skip
    windows = await cli.json("cmdb", "windows")
    assert [w["kind"] for w in windows] == ["blackout"]

    rid = f"release-greeter-1.1.0-{uuid.uuid4().hex[:6]}"
    await cli("start", str(MANIFEST), "--id", rid)
    for gate in (Gate.REQUEST, Gate.PLAN):
        await cli.until(rid, gate_open(gate))
        for member in ("alice", "bob"):
            await cli.client.approve(rid, member, gate)
    waiting = await cli.until(rid, lambda st: st.awaiting == ["window"] or st.outcome is not None)
    assert waiting.outcome is None and waiting.phase is Phase.DARK_LAUNCH

    await cli("abort", rid, "--as", OPERATOR, "--reason", "freeze runs longer than planned")
    final = await cli.until(rid, lambda st: st.outcome is not None)
    assert final.outcome is Outcome.ABORTED
    assert final.compensations == ["exposure to 0%", "roll back staging"]
    refused = await cli("approve", rid, "--as", "carol", "--gate", "plan", code=1)
    assert "refused" in refused or "ended" in refused

    changes = await cli.json("cmdb", "changes", "--service", "greeter")
    assert next(c for c in changes if c["release_id"] == rid)["close_code"] == "aborted"

    async def listed_as_aborted() -> None:
        # Temporal says COMPLETED; the list says how the release ended, and filters on it.
        found = await cli.json("list", "--outcome", "aborted")
        assert [(r["outcome"], r["status"]) for r in found if r["release_id"] == rid] == [
            ("aborted", "COMPLETED")
        ]
        assert rid not in [r["release_id"] for r in await cli.json("list", "--outcome", "completed")]
        assert any(rid in line and " aborted " in line for line in (await cli("list")).splitlines())

    await assert_eventually(listed_as_aborted, timeout=20, interval=0.5)
    missing = await cli("status", "release-greeter-9.9.9", code=1)
    assert missing == "error: no release named release-greeter-9.9.9"


async def test_delegated_approval_then_a_veto_rejects(cli: Cli, tmp_path: Path) -> None:
    rid = f"release-greeter-1.2.0-{uuid.uuid4().hex[:6]}"
    await cli("start", str(ROOT / "examples" / "releases" / "greeter-1.2.0.yaml"), "--id", rid)
    delegation = tmp_path / "dave-to-carol.json"
    until = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    await cli(
        "delegate", "--as", "dave", "--to", "carol", "--service", "greeter", "--gate", "request",
        "--until", until, "--output", str(delegation),
    )  # fmt: skip
    out = await cli(
        "approve", rid, "--as", "carol", "--on-behalf-of", "dave", "--delegation", str(delegation),
        "--comment", "dave is on leave",
    )  # fmt: skip
    assert "1/2 approvals" in out
    gate = json.loads(await cli("reject", rid, "--as", "bob", "--reason", "no rollback rehearsal", "--json"))
    assert gate["state"] == "rejected"
    final = await cli.until(rid, lambda st: st.outcome is not None)
    assert final.outcome is Outcome.REJECTED
    votes = final.gates[Gate.REQUEST].votes
    assert [(v.vote.approver, v.vote.on_behalf_of, v.vote.decision.value) for v in votes] == [
        ("carol", "dave", "approve"),
        ("bob", None, "reject"),
    ]
    changes = await cli.json("cmdb", "changes", "--service", "greeter")
    assert next(c for c in changes if c["release_id"] == rid)["close_code"] == "rejected"
