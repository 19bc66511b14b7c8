"""Run a catalog command as a subprocess: no shell, own process group, bounded memory.

Output (stdout and stderr) streams to a log file; only a bounded tail stays in memory, so
a command printing gigabytes costs disk, not RAM. A timeout or a cancellation kills the
whole process group (SIGTERM, then SIGKILL after a grace period), grandchildren included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

DEFAULT_TAIL_BYTES = 64 * 1024
_CHUNK = 64 * 1024
# Variables a command inherits from the worker; everything else must come from the catalog.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "USER", "LOGNAME")

Heartbeat = Callable[[dict[str, object]], None]


@dataclass(frozen=True)
class RunResult:
    argv: list[str]
    returncode: int | None
    """None when the command was killed after its timeout."""
    timed_out: bool
    duration: float
    output_path: Path
    output_bytes: int
    tail: str
    """The last bytes of stdout+stderr, decoded leniently."""
    stdout_tail: str
    """The last bytes of stdout alone (for commands that print a result)."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def command_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: a few inherited basics plus the catalog's own variables."""
    env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
    # Deployed release folders must stay byte-identical to the package.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


MASK = b"***"


class _Masker:
    """Replaces secret values in one output stream, also when a value spans two reads."""

    def __init__(self, values: Sequence[str]) -> None:
        self.values = sorted({v.encode() for v in values if v}, key=len, reverse=True)
        # At most this many bytes are held back: the longest prefix of a value.
        self.hold = max((len(v) for v in self.values), default=1) - 1
        self.carry = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self.values:
            return chunk
        data = self._mask(self.carry + chunk)
        # Only an ending that starts a value is held back: holding more would cut lines, and
        # another stream's output would land in the middle of them in the shared log.
        cut = len(data) - self._pending(data)
        self.carry = data[cut:]
        return data[:cut]

    def _pending(self, data: bytes) -> int:
        """Length of the longest ending of `data` that the next read could complete into a value."""
        for size in range(min(self.hold, len(data)), 0, -1):
            end = data[-size:]
            if any(value.startswith(end) for value in self.values):
                return size
        return 0

    def flush(self) -> bytes:
        data, self.carry = self._mask(self.carry), b""
        return data

    def _mask(self, data: bytes) -> bytes:
        for value in self.values:
            data = data.replace(value, MASK)
        return data


class _Tail:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()

    def add(self, chunk: bytes) -> None:
        self.buf += chunk
        if len(self.buf) > self.limit:
            del self.buf[: len(self.buf) - self.limit]

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace")


def _start_time(pid: int) -> str:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat): tells a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _kill_orphan(marker: Path) -> None:
    """Kill the process group a killed worker left running for this same command.

    Commands run in their own session, so a SIGKILLed worker's command outlives it; the retry
    (on any worker of this machine) must not run beside it, writing the same output files.
    """
    try:
        pid, started = marker.read_text().split()
    except (OSError, ValueError):
        return
    if _start_time(int(pid)) == started:
        _signal_group(int(pid), signal.SIGKILL)
    marker.unlink(missing_ok=True)


def _marker(output_path: Path) -> Path:
    return output_path.with_name(output_path.name + ".pgid")


def stop_orphan(output_path: Path) -> None:
    """Kill a command a killed worker left running with this `output_path`, if any.

    `run_command` does it itself before it starts; call it to stop such a command before
    doing something else it must not run beside (hold a lock that rules out a live owner).
    """
    _kill_orphan(_marker(output_path))


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _kill_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the group, give it `grace` seconds, then SIGKILL whatever is left."""
    pgid = proc.pid  # start_new_session makes the child its group leader
    _signal_group(pgid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), timeout=grace)
    # Children may have ignored SIGTERM or outlived the leader.
    _signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await proc.wait()


async def run_command(
    argv: Sequence[str],
    *,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    secrets: Sequence[str] = (),
    output_path: Path | None = None,
    tail_bytes: int = DEFAULT_TAIL_BYTES,
    heartbeat: Heartbeat | None = None,
    heartbeat_interval: float = 1.0,
    kill_grace: float = 2.0,
) -> RunResult:
    """Run `argv` to completion or `timeout`; the caller's cancellation kills the group too.

    `secrets` names worker environment variables the command receives; their values are
    masked in everything kept of the output (log file, tails), before it is written anywhere.
    """
    argv = list(argv)
    env = dict(env) if env is not None else command_env()
    env.update({name: os.environ[name] for name in secrets if name in os.environ})
    secret_values = [env[name] for name in secrets if env.get(name)]
    if output_path is None:
        fd, name = tempfile.mkstemp(prefix="relman-run-", suffix=".log")
        os.close(fd)
        output_path = Path(name)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    marker = _marker(output_path)
    _kill_orphan(marker)
    started = time.monotonic()
    tail, stdout_tail = _Tail(tail_bytes), _Tail(tail_bytes)
    written = 0

    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(cwd),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    marker.write_text(f"{proc.pid} {_start_time(proc.pid)}")

    async def pump(stream: asyncio.StreamReader | None, log: IO[bytes], is_stdout: bool) -> None:
        nonlocal written
        if stream is None:
            return
        masker = _Masker(secret_values)

        def keep(data: bytes) -> None:
            log.write(data)
            tail.add(data)
            if is_stdout:
                stdout_tail.add(data)

        while chunk := await stream.read(_CHUNK):
            written += len(chunk)
            keep(masker.feed(chunk))
        keep(masker.flush())

    timed_out = False
    with output_path.open("wb") as log:
        pumps = asyncio.gather(pump(proc.stdout, log, True), pump(proc.stderr, log, False))
        try:
            deadline = started + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    await _kill_group(proc, kill_grace)
                    break
                try:
                    await asyncio.wait_for(asyncio.shield(proc.wait()), min(heartbeat_interval, remaining))
                    break
                except TimeoutError:
                    if heartbeat is not None:
                        heartbeat({"elapsed": round(time.monotonic() - started, 1), "output_bytes": written})
            # A grandchild still holding the pipes would keep the pumps waiting forever.
            try:
                await asyncio.wait_for(asyncio.shield(pumps), timeout=kill_grace)
            except TimeoutError:
                _signal_group(proc.pid, signal.SIGKILL)
                await pumps
        except BaseException:
            # Cancellation (or anything else) must not leave the command running.
            await asyncio.shield(_kill_group(proc, kill_grace))
            pumps.cancel()
            with contextlib.suppress(BaseException):
                await pumps
            raise

    marker.unlink(missing_ok=True)
    return RunResult(
        argv=argv,
        returncode=None if timed_out else proc.returncode,
        timed_out=timed_out,
        duration=time.monotonic() - started,
        output_path=output_path,
        output_bytes=written,
        tail=tail.text(),
        stdout_tail=stdout_tail.text(),
    )
