"""Helpers of the fault tests: a TCP proxy that can cut or freeze traffic, a persisted dev
server that can be killed and restarted, worker subprocesses, and instant activities.

Everything started here is stopped by its owner's `close()`/`stop()`; the fixtures in
`tests/faults/conftest.py` call them in finalizers so nothing outlives a failing test.

Requests and votes are signed by the test people (`tests.people`), issued on the clock of the
server the release runs on: the wall clock (a dev server's), or `clock=people.now` for the
time-skipping server, whose clock runs ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowHandle

from relman.contracts import (
    Decision,
    Gate,
    GateState,
    GateTimeouts,
    ReleaseRequest,
    ReleaseStatus,
    RolloutStage,
    ServiceProfile,
    Vote,
)
from relman.devserver import DevServer, free_port
from relman.identity.signing import Signable
from relman.workflows.release import ReleaseWorkflow
from tests import people
from tests.helpers import assert_eventually

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = "oli"
"""An operator, in the test people's roles and in the example catalog's."""
S = TypeVar("S", bound=Signable)
Clock = Callable[[], Awaitable[datetime]]


async def wall_clock() -> datetime:
    return datetime.now(UTC)


# --- a TCP proxy we control --------------------------------------------------------------


class _Conn:
    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.swallow_replies = False
        self.tasks: list[asyncio.Task[None]] = []

    def close(self) -> None:
        for w in (self.client, self.server):
            with contextlib.suppress(Exception):
                w.close()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; can refuse connections, freeze, or lose a reply.

    - `outage()` closes every connection and the listener (clients see "connection refused");
      `restore()` listens again on the same port.
    - `pause()` freezes every byte in both directions (a network partition); `resume()`.
    - `lose_reply_after(marker)`: the first request carrying `marker` reaches the server, but
      nothing the server answers on that connection reaches the client (the effect lands, its
      acknowledgement is lost); `reply_lost` is set once the server has answered.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._marker: bytes | None = None
        self.on_reply_lost: Callable[[], None] | None = None
        self.reply_lost = asyncio.Event()
        self.refused = 0

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.refused += 1
            writer.close()
            return
        conn = _Conn(writer, up_writer)
        self._conns.add(conn)
        conn.tasks = [
            asyncio.create_task(self._pump(conn, reader, up_writer, upstream=True)),
            asyncio.create_task(self._pump(conn, up_reader, writer, upstream=False)),
        ]

    async def _pump(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        tail = b""
        try:
            while chunk := await reader.read(65536):
                await self._flowing.wait()
                if upstream and self._marker is not None and self._marker in tail + chunk:
                    self._marker = None
                    conn.swallow_replies = True
                if not upstream and conn.swallow_replies:
                    if not self.reply_lost.is_set():
                        self.reply_lost.set()
                        if self.on_reply_lost is not None:
                            self.on_reply_lost()
                    continue
                tail = chunk[-256:]
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            conn.close()
            self._conns.discard(conn)

    def lose_reply_after(self, marker: str) -> asyncio.Event:
        self._marker = marker.encode()
        self.reply_lost.clear()
        return self.reply_lost

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def drop_connections(self) -> None:
        for conn in list(self._conns):
            for task in conn.tasks:
                task.cancel()
            conn.close()
        self._conns.clear()

    def outage(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.drop_connections()

    async def restore(self) -> None:
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        self.outage()
        self._flowing.set()


# --- a persisted dev server that can die --------------------------------------------------


class KillableDevServer(DevServer):
    """relman's DevServer on free ports with a SQLite file; `kill()` is SIGKILL."""

    def __init__(self, db_file: Path) -> None:
        super().__init__(port=free_port(), ui_port=free_port(), db_file=db_file)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


# --- worker subprocesses -------------------------------------------------------------------


class WorkerProcess:
    """`python -m tests.faults.worker` (the real worker, shorter activity timeouts) as a child."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 30.0) -> WorkerProcess:
        out = self.log.open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.faults.worker",
                cwd=ROOT,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        start = self.log.stat().st_size if self.log.exists() else 0

        async def ready() -> None:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise RuntimeError(f"worker exited ({self.proc.returncode}): {self.tail()}")
            assert b"worker ready" in self.log.read_bytes()[start:]

        await assert_eventually(ready, timeout=timeout, what="worker ready")
        return self

    def ready_count(self) -> int:
        return _count_ready(self.log)

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def kill(self) -> None:
        """SIGKILL the worker's whole process group: nothing of it runs on."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


def _count_ready(log: Path) -> int:
    return log.read_text(errors="replace").count("worker ready") if log.exists() else 0


# --- waiting ---------------------------------------------------------------------------------


async def status(handle: WorkflowHandle[Any, Any]) -> ReleaseStatus:
    return await handle.query(ReleaseWorkflow.status)


async def wait_status(
    handle: WorkflowHandle[Any, Any], pred: Callable[[ReleaseStatus], bool], *, timeout: float = 60
) -> ReleaseStatus:
    async def check() -> ReleaseStatus:
        current = await status(handle)
        assert pred(current), f"{handle.id}: phase={current.phase} awaiting={current.awaiting}"
        return current

    result: ReleaseStatus = await assert_eventually(check, timeout=timeout, interval=0.1, what=handle.id)
    return result


async def signed(message: S, release_id: str, clock: Clock = wall_clock, who: str | None = None) -> S:
    """`message` signed by `who` (default: the name it carries), issued now by `clock`."""
    return people.signed(message, release_id, who, at=await clock())


def gate_open(gate: Gate) -> Callable[[ReleaseStatus], bool]:
    return lambda s: gate in s.gates and s.gates[gate].state is GateState.OPEN


async def approve(
    handle: WorkflowHandle[Any, Any],
    gate: Gate,
    *members: str,
    timeout: float = 60,
    clock: Clock = wall_clock,
) -> None:
    """Wait for the gate, then approve it with the `decide` update, one member after another."""
    current = await wait_status(handle, gate_open(gate), timeout=timeout)
    for member in members:
        vote = Vote(
            gate=gate,
            approver=member,
            decision=Decision.APPROVE,
            approved_hash=current.gates[gate].subject_hash,
            comment="ok",
        )
        await handle.execute_update(ReleaseWorkflow.decide, await signed(vote, handle.id, clock))


async def signal_approval(handle: WorkflowHandle[Any, Any], gate: Gate, subject_hash: str) -> None:
    """Two CAB approvals by signal (fire-and-forget, as any Temporal client can send)."""
    for member in ("alice", "bob") if gate is Gate.REQUEST else ("carol", "dave"):
        vote = Vote(gate=gate, approver=member, decision=Decision.APPROVE, approved_hash=subject_hash)
        await handle.signal(ReleaseWorkflow.approve, await signed(vote, handle.id))


async def start_release(
    client: Client, task_queue: str, request: ReleaseRequest, release_id: str, clock: Clock = wall_clock
) -> WorkflowHandle[Any, ReleaseStatus]:
    request = await signed(request, release_id, clock)
    return await client.start_workflow(ReleaseWorkflow.run, request, id=release_id, task_queue=task_queue)


def request_for(service: str, version: str = "1.1.0") -> ReleaseRequest:
    return ReleaseRequest(
        service=service,
        version=version,
        requested_by="pat",
        title=f"{service} {version}",
        commit=hashlib.sha1(f"{service}{version}".encode()).hexdigest()[:12],
    )


# --- instant activities for everything but the CMDB -----------------------------------------


def profile(
    service: str,
    *,
    bake: int = 0,
    review: timedelta = timedelta(0),
    timeouts: GateTimeouts | None = None,
    stages: int = 3,
) -> ServiceProfile:
    return ServiceProfile(
        service=service,
        ci_name=service,
        trust=people.trust(quorum=2),
        stages=[
            RolloutStage(name="allow-list", percent=0, bake_seconds=bake, allow_list=["alice"]),
            RolloutStage(name="one", percent=1, bake_seconds=bake),
            RolloutStage(name="quarter", percent=25, bake_seconds=bake),
        ][-stages:],
        review_period=review,
        timeouts=timeouts or GateTimeouts(),
    )
