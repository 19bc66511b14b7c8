"""The subprocess runner against real processes: timeouts, huge output, cancellation."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from relman.activities.runner import run_command


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def wait_dead(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still alive"
        await asyncio.sleep(0.05)


HANG_WITH_CHILD = """
import subprocess, sys, time, pathlib
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
pathlib.Path(sys.argv[1]).write_text(str(child.pid))
print("started", flush=True)
time.sleep(120)
"""


async def test_success_captures_output(tmp_path: Path) -> None:
    result = await run_command(
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"],
        cwd=tmp_path,
        timeout=10,
        output_path=tmp_path / "log",
    )
    assert result.ok and result.returncode == 0
    assert "out" in result.stdout_tail and "err" not in result.stdout_tail
    assert "err" in result.tail and "err" in (tmp_path / "log").read_text()


async def test_no_shell_is_involved(tmp_path: Path) -> None:
    result = await run_command(["echo", "$HOME; rm -rf /"], cwd=tmp_path, timeout=5)
    assert result.stdout_tail.strip() == "$HOME; rm -rf /"


async def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    beats: list[dict[str, object]] = []
    started = time.monotonic()
    result = await run_command(
        [sys.executable, "-c", HANG_WITH_CHILD, str(pidfile)],
        cwd=tmp_path,
        timeout=1.5,
        heartbeat=beats.append,
        heartbeat_interval=0.2,
        kill_grace=0.5,
    )
    assert result.timed_out and result.returncode is None and not result.ok
    assert time.monotonic() - started < 5
    assert "started" in result.tail
    assert beats and "elapsed" in beats[0]
    await wait_dead(int(pidfile.read_text()))


async def test_sigterm_ignored_then_sigkill(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    started = time.monotonic()
    result = await run_command([sys.executable, "-c", code], cwd=tmp_path, timeout=0.8, kill_grace=0.3)
    assert result.timed_out
    assert time.monotonic() - started < 3


async def test_huge_output_keeps_memory_bounded(tmp_path: Path) -> None:
    # ~100 MB of output; the runner must hold only its tail.
    code = (
        "import sys\nblock = 'x' * 65535 + '\\n'\n"
        "for _ in range(1600): sys.stdout.write(block)\nprint('THE-END')"
    )
    tracemalloc.start()
    try:
        result = await run_command(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            timeout=60,
            output_path=tmp_path / "big.log",
            tail_bytes=4096,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok
    assert result.output_bytes == (tmp_path / "big.log").stat().st_size > 100_000_000
    assert len(result.tail) <= 4096 and result.tail.rstrip().endswith("THE-END")
    assert peak < 8 * 1024 * 1024, f"peak Python memory {peak} bytes"


async def test_cancellation_kills_the_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    task = asyncio.create_task(
        run_command(
            [sys.executable, "-c", HANG_WITH_CHILD, str(pidfile)], cwd=tmp_path, timeout=60, kill_grace=0.5
        )
    )
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_dead(int(pidfile.read_text()))


async def test_environment_is_controlled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELMAN_SECRET_TOKEN", "s3cret")
    from relman.activities.runner import command_env

    result = await run_command(
        [sys.executable, "-c", "import os; print(sorted(os.environ))"],
        cwd=tmp_path,
        timeout=10,
        env=command_env({"GREETER_MODE": "test"}),
    )
    assert "RELMAN_SECRET_TOKEN" not in result.stdout_tail
    assert "GREETER_MODE" in result.stdout_tail


KILLED_WORKER = """
import asyncio, sys
from pathlib import Path
from relman.activities.runner import run_command
asyncio.run(run_command([sys.executable, "-c", "import time; time.sleep(120)"],
                        cwd=Path.cwd(), timeout=120, output_path=Path(sys.argv[1])))
"""


async def test_retry_kills_the_command_a_killed_worker_left_running(tmp_path: Path) -> None:
    output = tmp_path / "suite.log"
    marker = tmp_path / "suite.log.pgid"
    worker = await asyncio.create_subprocess_exec(sys.executable, "-c", KILLED_WORKER, str(output))
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline, "the command never started"
        await asyncio.sleep(0.05)
    orphan = int(marker.read_text().split()[0])
    worker.kill()  # SIGKILL: the worker cannot stop its command
    await worker.wait()
    assert alive(orphan)

    result = await run_command(
        [sys.executable, "-c", "print('retry')"], cwd=tmp_path, timeout=10, output_path=output
    )

    await wait_dead(orphan)
    assert result.returncode == 0 and "retry" in result.tail
    assert not marker.exists()


TOKEN = "tok-3f9a1c77e2"


async def test_a_secret_reaches_the_command_but_never_its_kept_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relman.activities.runner import command_env

    monkeypatch.setenv("REGISTRY_TOKEN", TOKEN)
    # The value lands right across the boundary of the runner's 64 KiB reads, on both streams.
    script = (
        "import os, sys; t = os.environ['REGISTRY_TOKEN']; "
        "sys.stdout.write('x' * (65536 - 5) + t + '\\nlogin ok with ' + t + '\\n'); sys.stdout.flush(); "
        "sys.stderr.write('warning: token ' + t + ' expires soon\\n')"
    )
    result = await run_command(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        timeout=10,
        env=command_env({}),
        secrets=["REGISTRY_TOKEN"],
        output_path=tmp_path / "out.log",
    )
    assert result.ok
    log = (tmp_path / "out.log").read_text()
    for kept in (log, result.tail, result.stdout_tail):
        assert TOKEN not in kept
    assert log.count("***") == 3 and "login ok with ***" in result.stdout_tail
    assert "warning: token *** expires soon" in result.tail
    assert result.output_bytes == 65536 - 5 + 3 * len(TOKEN) + len("\nlogin ok with \n") + len(
        "warning: token  expires soon\n"
    )


def test_masker_holds_back_only_an_ending_that_starts_a_secret() -> None:
    from relman.activities.runner import _Masker

    masker = _Masker([TOKEN])
    # A whole line goes out at once: the other stream's output cannot land inside it.
    assert masker.feed(b"login ok\n") == b"login ok\n"
    assert masker.feed(b"token " + TOKEN[:4].encode()) == b"token "
    assert masker.feed(TOKEN[4:].encode() + b" end\n") == b"*** end\n"
    assert masker.feed(b"almost " + TOKEN[:-1].encode()) == b"almost "
    assert masker.flush() == TOKEN[:-1].encode()  # never completed: not the secret
