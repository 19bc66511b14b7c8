"""What a waiting release holds in the worker: tracemalloc + object counts, Python vs native.

    python bench/memory_probe.py [--n 200] [--kind relman|bare|shaped|both] [--no-trace]
        [--runner sandbox|unsandboxed] [--ablate] [--top 25]

Starts a dev server (relman's search attributes), a worker in this process (production's
sandbox runner, no-op activities of bench/noop.py, ReleaseWorkflow and bench/bare.py's
BareWorkflow, pydantic data converter), runs one warm-up workflow, then starts N workflows
that reach their wait (relman: the CAB gate; bare: waiting for a signal) and compares:

- VmRSS growth (all of it: Python heap + Temporal's Rust core + allocator slack);
- tracemalloc growth (Python allocations only), top lines and tracebacks;
- objects per type that became reachable from the N cached workflow instances, with
  `sys.getsizeof` bytes (shallow sizes of every newly created object reached, each once).

`--kind both` (the default) runs each kind in a fresh child process, so one side's freed
memory does not hide the other's growth. `--no-trace` measures RSS without tracemalloc's own
overhead (about 60 bytes per live block; with 25 frames it also slows the worker ~40x).
`--kind shaped --runner unsandboxed`: a bare workflow with a release's commands before the CAB
gate (local activity, activity, local activity, upsert, 7-day timer), to split Temporal's own
per-run state from relman's. `--ablate` drops the protobuf messages each instance holds and
re-measures (upb arenas are native). RSS is also given after `malloc_trim(0)`, which removes
free-but-unreturned heap (allocator slack). Exits with `os._exit` (sdk-python#300).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import os
import re
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import bare
import noop
from google.protobuf.message import Message
from release_bench import TASK_QUEUE, Bench
from temporalio import workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from relman import visibility
from relman.devserver import temporal_binary
from relman.worker import workflow_runner
from relman.workflows.release import ReleaseWorkflow


@workflow.defn(name="ShapedBareWorkflow")
class ShapedBareWorkflow:
    """Bare, but with a release's commands before its CAB gate: a local activity, an activity,
    a local activity, a search-attribute upsert and a 7-day deadline (unsandboxed runner only:
    this module is `__main__`). Tells Temporal's own per-run state from relman's."""

    def __init__(self) -> None:
        self._signals = 0

    @workflow.run
    async def run(self, payload: str) -> int:
        opts: dict[str, Any] = {"start_to_close_timeout": timedelta(seconds=30)}
        await workflow.execute_local_activity(bare.bare_step, 1, **opts)
        await workflow.execute_activity(bare.bare_step, 2, **opts)
        await workflow.execute_local_activity(bare.bare_step, 3, **opts)
        workflow.upsert_search_attributes([visibility.RELEASE_PHASE.value_set("awaiting_cab")])
        await workflow.wait_condition(lambda: self._signals > 0, timeout=timedelta(days=7))
        return len(payload)

    @workflow.signal
    def approve(self, approver: str) -> None:
        self._signals += 1


SKIP_TYPES = (type, type(sys), type(gc))
"""Never followed: classes and modules are shared by every workflow."""


def rss_kb() -> int:
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert match
    return int(match.group(1))


def malloc_trim() -> bool:
    """Hand free heap pages back to the OS: RSS that goes away is allocator slack, not state."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except OSError:
        return False


def type_name(o: object) -> str:
    t = type(o)
    return f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__


def reachable(roots: list[Any], old: set[int]) -> tuple[Counter[str], Counter[str]]:
    """Count and shallow bytes per type of objects reachable from `roots` that are new
    (not gc-tracked before the run; untracked leaves such as str/int/bytes are counted once)."""
    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        o = stack.pop()
        i = id(o)
        if i in seen or i in old or isinstance(o, SKIP_TYPES):
            continue
        seen.add(i)
        name = type_name(o)
        count[name] += 1
        size[name] += sys.getsizeof(o)
        stack.extend(gc.get_referents(o))
    return count, size


def running_workflows(worker: Worker) -> dict[str, Any]:
    """The worker's cached workflow instances (private SDK attribute, read only here)."""
    wf_worker = worker._workflow_worker
    assert wf_worker is not None
    return dict(wf_worker._running_workflows)


def impl_of(running: Any) -> Any:
    """The `_WorkflowInstanceImpl` of a cached run, inside or outside the sandbox."""
    inst = running.instance
    sandboxed = getattr(inst, "globals_and_locals", None)
    return sandboxed["__temporal_in_sandbox"].instance if sandboxed else inst


def ablate(instances: list[Any], rss_before: int, n: int) -> None:
    """Drop the protobuf messages each instance keeps (destructive: measure, then terminate).

    Python protobuf (upb) keeps a message's whole arena alive natively while any part of
    it is referenced, which tracemalloc does not see; the RSS that goes away is theirs."""
    held: Counter[str] = Counter()
    wire: Counter[str] = Counter()
    for running in instances:
        impl = impl_of(running)
        for name, value in list(vars(impl).items()):
            if isinstance(value, Message):
                held[name] += 1
                wire[name] += value.ByteSize()
                setattr(impl, name, type(value)())
    gc.collect()
    malloc_trim()
    after = rss_kb()
    show(
        "protobuf messages held by each workflow instance (count, wire bytes per workflow)",
        [f"{held[k] / n:5.1f} {wire[k] / n:8.0f} B  {k}" for k in held],
    )
    print(f"RSS freed by replacing them with empty messages: {(rss_before - after) / n:8.1f} KB per workflow")


def gc_types() -> Counter[str]:
    return Counter(type_name(o) for o in gc.get_objects())


def show(title: str, rows: list[str]) -> None:
    print(f"\n== {title}")
    for r in rows:
        print(f"  {r}")


async def start_shaped(client: Client, ids: list[str], *, signal: bool) -> None:
    async def one(wid: str) -> None:
        handle = await client.start_workflow(ShapedBareWorkflow.run, "x" * 300, id=wid, task_queue=TASK_QUEUE)
        if signal:
            await handle.signal(ShapedBareWorkflow.approve, "alice")

    await asyncio.gather(*(one(w) for w in ids))


async def probe(args: argparse.Namespace) -> None:
    trace = not args.no_trace
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        search_attributes=list(visibility.ALL_KEYS),
        data_converter=pydantic_data_converter,
    )
    client: Client = env.client
    b = Bench(client, noop.bench_profile(Path(args.data_dir)), noop.bench_signers(Path(args.data_dir)))
    if trace:
        tracemalloc.start(args.frames)
    worker = Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[ReleaseWorkflow, bare.BareWorkflow]
        + ([ShapedBareWorkflow] if args.runner == "unsandboxed" else []),
        activities=[*noop.NoopActivities(b.profile).all(), bare.bare_step],
        workflow_runner=(
            UnsandboxedWorkflowRunner() if args.runner == "unsandboxed" else workflow_runner(also=("bare",))
        ),
        max_cached_workflows=args.n + 200,
    )
    n = args.n
    async with worker:
        # Warm up: one complete workflow of the kind measured (imports, caches, pydantic schemas).
        if args.kind == "shaped":
            await start_shaped(client, ["shaped-warm"], signal=True)
            await asyncio.wait_for(client.get_workflow_handle("shaped-warm").result(), 60)
        elif args.kind == "bare":
            ids = await b.start_bare(1, b.next_tag(), signals=4)
            await asyncio.wait_for(client.get_workflow_handle(ids[0]).result(), 60)
        else:
            requests = await b.start_releases(1, b.next_tag())
            await b.approve_all(requests, timeout=60)
            await b.check_releases(requests)
        await asyncio.sleep(1.0)
        gc.collect()
        old = {id(o) for o in gc.get_objects()}
        types0 = gc_types()
        rss0 = rss_kb()
        snap0 = tracemalloc.take_snapshot() if trace else None
        traced0 = tracemalloc.get_traced_memory()[0] if trace else 0

        t0 = time.monotonic()
        if args.kind == "shaped":
            waiting = [f"shaped-{i}" for i in range(n)]
            await start_shaped(client, waiting, signal=False)
            await b.wait_bare_waiting(waiting, timeout=120 + n)
            await asyncio.sleep(1.0)
        elif args.kind == "bare":
            waiting = await b.start_bare(n, b.next_tag(), signals=0)
            await b.wait_bare_waiting(waiting, timeout=120 + n)
        else:
            waiting = list(await b.start_releases(n, b.next_tag()))
            await b.wait_releases_waiting(n, timeout=120 + n)
        await asyncio.sleep(2.0)
        gc.collect()
        rss1 = rss_kb()
        trimmed = malloc_trim()
        rss2 = rss_kb()
        history = await client.get_workflow_handle(waiting[0]).fetch_history()
        events = list(history.events)
        snap1 = tracemalloc.take_snapshot() if trace else None
        traced1 = tracemalloc.get_traced_memory()[0] if trace else 0
        instances = [w for w in running_workflows(worker).values() if w.workflow_id in set(waiting)]
        types1 = gc_types()
        count, size = reachable([w for w in instances], old)

        print(f"\n### {args.kind}: N={n} waiting ({time.monotonic() - t0:.1f}s), {len(instances)} cached")
        print(f"RSS growth:        {(rss1 - rss0) / n:8.1f} KB per workflow")
        print(
            f"RSS growth after malloc_trim(0): {(rss2 - rss0) / n:8.1f} KB per workflow"
            f" (glibc returned free memory: {trimmed})"
        )
        size_b = sum(e.ByteSize() for e in events)
        print(f"history of one waiting workflow: {len(events)} events, {size_b / 1024:.1f} KiB")
        if trace:
            print(f"tracemalloc growth: {(traced1 - traced0) / 1024 / n:8.1f} KB per workflow (Python)")
            print(
                f"native/other:      {((rss1 - rss0) - (traced1 - traced0) / 1024) / n:8.1f} KB per workflow"
                " (RSS - Python; includes tracemalloc's own bookkeeping)"
            )
        total = sum(size.values())
        print(f"reachable from instances: {total / 1024 / n:8.1f} KB per workflow (shallow sizes)")
        show(
            "reachable new objects per workflow, by type (count, bytes)",
            [f"{count[t] / n:8.1f} {size[t] / n:9.0f} B  {t}" for t, _ in size.most_common(args.top)],
        )
        grown = types1 - types0
        show(
            "gc-tracked objects per workflow, growth by type",
            [f"{c / n:8.1f}  {t}" for t, c in grown.most_common(args.top)],
        )
        if snap0 is not None and snap1 is not None:
            filt = [tracemalloc.Filter(False, tracemalloc.__file__)]
            s0, s1 = snap0.filter_traces(filt), snap1.filter_traces(filt)
            show(
                "tracemalloc by line (KB per workflow, blocks per workflow)",
                [
                    f"{d.size_diff / 1024 / n:7.2f} KB {d.count_diff / n:7.1f}  {d.traceback[0]}"
                    for d in s1.compare_to(s0, "lineno")[: args.top]
                ],
            )
            print("\n== tracemalloc by traceback (top 12, innermost last)")
            for d in s1.compare_to(s0, "traceback")[:12]:
                print(f"  {d.size_diff / 1024 / n:7.2f} KB {d.count_diff / n:7.1f} blocks per workflow")
                for line in d.traceback.format(limit=args.frames)[-2 * args.show_frames :]:
                    print(f"      {line}")
        if args.ablate:
            ablate(instances, rss2, n)
        await b.terminate(waiting)
    sys.stdout.flush()
    await env.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--kind", choices=("relman", "bare", "shaped", "both"), default="both")
    parser.add_argument("--no-trace", action="store_true", help="RSS only, no tracemalloc")
    parser.add_argument("--frames", type=int, default=25, help="tracemalloc frames kept")
    parser.add_argument("--show-frames", type=int, default=8, help="frames printed per traceback")
    parser.add_argument(
        "--runner", choices=("sandbox", "unsandboxed"), default="sandbox", help="production's sandbox or none"
    )
    parser.add_argument("--ablate", action="store_true", help="drop held protobuf messages, re-measure")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--data-dir", default="/tmp/relman-memory-probe")
    args = parser.parse_args()
    if args.kind == "both":
        for kind in ("bare", "relman"):
            cmd = [sys.executable, __file__, *sys.argv[1:], "--kind", kind]
            subprocess.run(cmd, check=False)
        os._exit(0)
    asyncio.run(probe(args))
    sys.stdout.flush()
    os._exit(0)  # sdk-python#300: the SDK can crash at interpreter exit


if __name__ == "__main__":
    main()
