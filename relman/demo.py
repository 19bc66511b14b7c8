"""`relman demo`: a dev server, a worker and two example releases, approvals sent by the demo.

greeter 1.1.0 goes through every phase (CAB quorum, plan approval, build, tests, dark
launch, go-live, review with feedback, close); then greeter 1.3.0 passes its tests but
fails health in the dark launch and rolls back to 1.1.0; then a release train of three
components (greeter-db, greeter, greeter-worker 2.0.0) is approved once and delivered in
dependency waves. Every phase change is printed as it
happens, and a step that runs for more than two seconds is printed while it runs.

Every message is signed: the demo makes a key for each person the example catalog declares
(and the worker's evidence key) in its data directory, and acts as them. It also shows what
is refused: the requester approving their own release, a vote signed with someone else's key
(sent as a plain `approve` signal; the refusal shows in the status), and an unsigned vote. At
the end the good release's evidence is read from the CMDB and verified as `relman verify` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from relman.cli.render import Follower, follow_release
from relman.client import ReleaseClient, load_manifest
from relman.config import PACKAGE_ROOT, Settings, load_settings
from relman.contracts import (
    Decision,
    Gate,
    GateState,
    GateStatus,
    Message,
    Outcome,
    Phase,
    ReleaseStatus,
    Vote,
)
from relman.demo_traffic import start_traffic
from relman.demo_train import drive_train
from relman.demo_train import expected as train_expected
from relman.devserver import DevServer, free_port, port_free
from relman.errors import RelmanError
from relman.identity.keys import WORKER, Signer, ensure_keys
from relman.identity.signing import seal
from relman.observability import configure_logging

EXAMPLES = PACKAGE_ROOT / "examples"
FORGER = "mallory"
"""Has a key of her own, but the catalog does not know her: she forges a CAB member's vote."""


@dataclass
class DemoRelease:
    label: str
    manifest: Path
    expected: set[Outcome]
    feedback: tuple[str, int, str] = ("alice", 5, "greeting reads well")
    release_id: str = ""
    status: ReleaseStatus | None = None
    voted: set[tuple[str, str, str]] = field(default_factory=set)
    showed_refusal: bool = False
    forge: bool = False
    """Also show a forged and an unsigned vote being refused (once, at the first open gate)."""
    follower: Follower = field(init=False)
    """What of the release was printed already (the follow loop's state)."""

    def __post_init__(self) -> None:
        self.follower = Follower(prefix=f"[{self.label}] ", compact=True)


def demo_releases(examples: Path = EXAMPLES) -> list[DemoRelease]:
    return [
        DemoRelease("good", examples / "releases" / "greeter-1.1.0.yaml", {Outcome.COMPLETED}, forge=True),
        DemoRelease("bad ", examples / "releases" / "greeter-1.3.0.yaml", {Outcome.ROLLED_BACK}),
    ]


def demo_keys(keys_dir: Path, catalog: Path) -> dict[str, Signer]:
    """A key for every person `catalog` declares, the worker's evidence key and the forger's,
    made in `keys_dir` unless there (before the catalog loads: it reads the `.pub` files)."""
    people = (yaml.safe_load(catalog.read_text()) or {}).get("people") or {}
    return ensure_keys(keys_dir, [*people, WORKER, FORGER])


async def drive(
    client: ReleaseClient, r: DemoRelease, emit: Callable[[str], None], timeout: float = 300.0
) -> ReleaseStatus:
    """Act as the CAB and the users: approve open gates, give feedback. What happens is printed
    by the follow loop `relman status --follow` uses."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    fed_back = False

    async def act(st: ReleaseStatus) -> None:
        nonlocal fed_back
        r.status = st
        await approve_open_gates(client, r, st, emit)
        if st.phase is Phase.REVIEWING and not fed_back:
            fed_back = True
            who, rating, comment = r.feedback
            await client.feedback(r.release_id, who, rating, comment)
            emit(f"{r.follower.indent}{who} gives feedback {rating}/5: {comment}")
        if loop.time() > deadline:
            raise RelmanError(f"{r.release_id} did not finish within {timeout:.0f}s (phase {st.phase.value})")

    r.status = await follow_release(client, r.release_id, emit, interval=0.3, follower=r.follower, act=act)
    return r.status


async def approve_open_gates(
    client: ReleaseClient, r: DemoRelease, st: ReleaseStatus, emit: Callable[[str], None]
) -> None:
    """Each open gate approved by as many eligible members as it needs (never the requester)."""
    say = r.follower.indent
    for gate, g in st.gates.items():
        if g.state is not GateState.OPEN:
            continue
        if not r.showed_refusal:
            # Separation of duties, shown once: the requester may not approve.
            r.showed_refusal = True
            try:
                await client.approve(r.release_id, st.request.requested_by, gate)
            except RelmanError as exc:
                emit(f"{say}{st.request.requested_by} tries to approve → {exc}")
            if r.forge:
                await show_forgeries(client, r, gate, g, emit)
        voted = {a.vote.on_behalf_of or a.vote.approver for a in g.votes}
        approvals = sum(1 for a in g.votes if a.vote.decision is Decision.APPROVE)
        for member in g.eligible:
            if approvals >= g.required:
                break
            key = (gate.value, g.subject_hash, member)
            if member in voted or member == st.request.requested_by or key in r.voted:
                continue
            r.voted.add(key)
            try:
                after = await client.approve(
                    r.release_id,
                    member,
                    gate,
                    comment="approved by the demo",
                    subject_hash=g.subject_hash,
                )
            except RelmanError as exc:
                emit(f"{say}{member} approve {gate.value} → {exc}")
                continue
            approvals += 1
            emit(
                f"{say}{member} approves the {gate.value} gate "
                f"({approvals}/{g.required}, gate {after.state.value})"
            )


async def show_forgeries(
    client: ReleaseClient, r: DemoRelease, gate: Gate, g: GateStatus, emit: Callable[[str], None]
) -> None:
    """A name in a message proves nothing: a vote for a CAB member signed with another key, and
    one not signed at all, are both refused (and count for nothing)."""
    assert r.status is not None
    member = next(m for m in g.eligible if m != r.status.request.requested_by)
    vote = Vote(
        gate=gate,
        approver=member,
        decision=Decision.APPROVE,
        approved_hash=g.subject_hash,
        comment="looks fine to me",
    )
    assert client.signer is not None
    forged = seal(vote, r.release_id, client.signer(FORGER))
    # A signal, as any Temporal client can send: no answer, the refusal lands in the status.
    await client.client.get_workflow_handle(r.release_id).signal(Message.APPROVE.value, forged)
    emit(f"{r.follower.indent}{FORGER} signs a vote as {member} with her own key and signals it")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    shown = False
    while not shown and loop.time() < deadline:
        st = await client.status(r.release_id)
        for line in r.follower.refusal_lines(st):
            emit(line)
            shown = shown or f" claimed by {member}: " in line
        if not shown:
            await asyncio.sleep(0.2)
    unsigned = ReleaseClient(client.client, client.task_queue)  # no signer: messages go unsigned
    try:
        await unsigned.decide(r.release_id, vote.model_copy(update={"comment": "unsigned"}))
        emit(f"{r.follower.indent}UNEXPECTED: an unsigned vote for {member} was accepted")
    except RelmanError as exc:
        emit(f"{r.follower.indent}an unsigned vote for {member} (decide update) → {exc}")


def _ports(port: int | None, ui_port: int | None) -> tuple[int, int]:
    p = port or (7233 if port_free(7233) else free_port())
    u = ui_port or (8233 if port_free(8233) and p != 8233 else free_port())
    return p, u


async def run_demo(
    *,
    exit_when_done: bool = False,
    port: int | None = None,
    ui_port: int | None = None,
    emit: Callable[[str], None] = print,
    base: Settings | None = None,
) -> bool:
    """Run the demo; True when both releases ended as expected."""
    began = time.monotonic()
    base = base or load_settings()
    demo_dir = base.data_dir / "demo"
    # The demo owns this directory: start clean so the example releases can run again.
    shutil.rmtree(demo_dir, ignore_errors=True)
    demo_dir.mkdir(parents=True)
    settings = base.model_copy(
        update={
            "data_dir": demo_dir,
            # Moving data_dir moves the keys with it (the settings validators do not run again).
            "keys_dir": demo_dir / "keys",
            "evidence_key": demo_dir / "keys" / f"{WORKER}.key",
            "catalog": EXAMPLES / "catalog.yaml",
            "cmdb_url": f"sqlite:///{demo_dir / 'cmdb.sqlite'}",
            "activity_task_queue": None,
            "graceful_shutdown_seconds": 5.0,
        }
    )
    traffic = start_traffic(settings.catalog, demo_dir)
    try:
        emit(traffic.health)
        settings = settings.model_copy(update={"catalog": traffic.catalog})
        return await _run(settings, began, exit_when_done, _ports(port, ui_port), emit)
    finally:
        traffic.stop()


async def _run(
    settings: Settings,
    began: float,
    exit_when_done: bool,
    ports: tuple[int, int],
    emit: Callable[[str], None],
) -> bool:
    """The demo's server, worker and releases, on `settings` (the demo's own)."""
    from relman.worker import run_worker

    demo_dir = settings.data_dir
    signers = demo_keys(settings.keys_dir, settings.catalog)
    emit(f"keys for {', '.join(n for n in signers if n not in (WORKER, FORGER))} in {settings.keys_dir}")
    log_file = demo_dir / "worker.log"
    configure_logging("INFO", "json", stream=open(log_file, "a"))  # noqa: SIM115
    logging.getLogger("temporalio").setLevel(logging.WARNING)

    p, u = ports
    server = DevServer(p, u, demo_dir / "temporal.db")
    emit(f"starting a Temporal dev server on 127.0.0.1:{p} (state in {demo_dir})")
    client = await server.start()
    stop = asyncio.Event()
    ready = asyncio.Event()
    worker_task = asyncio.create_task(
        run_worker(settings, client=client, stop=stop, ready=ready, handle_signals=False)
    )
    try:
        ready_wait = asyncio.create_task(ready.wait())
        await asyncio.wait({ready_wait, worker_task}, return_when=asyncio.FIRST_COMPLETED)
        if worker_task.done():
            worker_task.result()  # raises the worker's start-up error
        emit(f"worker ready on task queue {settings.task_queue} (logs: {log_file})")
        emit(f"Temporal UI: {server.ui_url}")
        rc = ReleaseClient(
            client, settings.task_queue, settings.catalog, signer=signers.__getitem__, data_dir=demo_dir
        )
        releases = demo_releases()
        results: list[ReleaseStatus] = []
        # One after the other: two releases of one service share its staging and production.
        for r in releases:
            request = load_manifest(r.manifest)
            # committed an hour ago, so the CMDB's lead-time metric has something to show
            request = request.model_copy(update={"committed_at": datetime.now(UTC) - timedelta(hours=1)})
            r.release_id = await rc.start(request)
            emit(f"[{r.label}] started {r.release_id}: {request.title}")
            results.append(await drive(rc, r, emit))
        # Then three components as one train: one approval, delivered in dependency waves.
        train = await drive_train(rc, EXAMPLES / "releases" / "train-greeter-2.0.yaml", emit)
        ok = train_expected(train)
        emit("")
        mark = "as expected" if ok else "UNEXPECTED (wanted completed)"
        emit(f"{train.train_id}: {train.outcome.value if train.outcome else '-'} — {mark}")
        for r, st in zip(releases, results, strict=True):
            good = st.outcome in r.expected
            ok = ok and good
            mark = "as expected" if good else f"UNEXPECTED (wanted {', '.join(o.value for o in r.expected)})"
            extra = f"; compensations: {', '.join(st.compensations)}" if st.compensations else ""
            emit(f"{r.release_id}: {st.outcome.value if st.outcome else '-'} — {mark}{extra}")
        _print_cmdb(settings, emit)
        shown = next(r for r in releases if r.forge)
        ok = _verify_evidence(settings, shown.release_id, emit) and ok
        ok = _verify_evidence(settings, train.train_id, emit) and ok
        emit(f"demo took {time.monotonic() - began:.0f}s; browse the releases at {server.ui_url}")
        if not exit_when_done:
            emit("the server keeps running for the UI; Ctrl-C to stop")
            await _until_interrupted()
        return ok
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker_task, 15)
        server.stop()


def _print_cmdb(settings: Settings, emit: Callable[[str], None]) -> None:
    from relman.cmdb import CmdbStore

    store = CmdbStore(settings.cmdb)
    try:
        emit("CMDB:")
        for c in store.list_changes():
            code = c.close_code.value if c.close_code else "-"
            emit(f"  change {c.release_id}: {c.status}, close code {code}")
        for ci in store.list_cis():
            if ci.current_version:
                emit(f"  CI {ci.name} now at version {ci.current_version}")
        now = datetime.now(UTC)
        m = store.dora(now - timedelta(days=1), now + timedelta(minutes=1))
        rate = "-" if m.change_fail_rate is None else f"{m.change_fail_rate:.0%}"
        emit(f"  DORA (24h): {m.deployments} deployment(s), {m.failures} failed, change fail rate {rate}")
    finally:
        store.close()


def _verify_evidence(settings: Settings, release_id: str, emit: Callable[[str], None]) -> bool:
    """The release's evidence from the CMDB, written to a file and checked as `relman verify` does."""
    from relman.catalog import read_trust
    from relman.cli.evidence import summary
    from relman.cmdb import CmdbStore
    from relman.identity.evidence import verify_evidence

    store = CmdbStore(settings.cmdb)
    try:
        stored = store.get_evidence(release_id)
    finally:
        store.close()
    if stored is None:
        emit(f"evidence: the CMDB has none for {release_id}")
        return False
    path = settings.data_dir / f"evidence-{release_id}.json"
    path.write_text(json.dumps(stored.envelope, indent=2, sort_keys=True) + "\n")
    trust = read_trust(settings.catalog, data_dir=settings.data_dir)
    report = verify_evidence(stored.envelope, trust.services, trust.evidence_keys)
    emit(f"evidence of {release_id} in {path}; relman verify says:")
    if report.ok:
        emit(f"  {summary(report)}")
    for finding in report.findings:
        emit(f"  error: {finding}")
    return report.ok


async def _until_interrupted() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
