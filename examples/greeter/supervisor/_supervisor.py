"""What the greeter's supervisor scripts share: one supervisord directory and its control.

A supervisord directory holds `supervisord.conf`, the control socket, logs, and
`programs/<name>.conf`, one program section per environment (`greeter-staging`,
`greeter-production`), included by the main configuration. Deploying a version rewrites
that environment's section and runs `supervisorctl update <name>`, which restarts the
program only when its section changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path

from supervisor.xmlrpc import Faults, SupervisorTransport

CONF = "supervisord.conf"
SOCKET = "supervisor.sock"
PROGRAMS = "programs"
SOCKET_PATH_MAX = 100
"""A unix socket path is at most 107 bytes on Linux."""


class Failure(Exception):
    """Something a script cannot do; printed on one line to stderr, exit status 1."""


def socket_path(folder: Path) -> Path:
    """The control socket: in `folder`, or in the temp dir when that path is too long."""
    folder = folder.resolve()
    inside = folder / SOCKET
    if len(str(inside)) <= SOCKET_PATH_MAX:
        return inside
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"greeter-sv-{digest}.sock"


def config_text(folder: Path) -> str:
    folder = folder.resolve()
    return "\n".join(
        [
            "[unix_http_server]",
            f"file={socket_path(folder)}",
            "chmod=0700",
            "",
            "[supervisord]",
            f"logfile={folder / 'supervisord.log'}",
            f"pidfile={folder / 'supervisord.pid'}",
            f"childlogdir={folder / 'logs'}",
            "loglevel=info",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl=unix://{socket_path(folder)}",
            "",
            "[include]",
            f"files={folder / PROGRAMS}/*.conf",
            "",
        ]
    )


def write_config(folder: Path) -> Path:
    """Write `folder/supervisord.conf` (and its subdirectories); the path of the file."""
    for sub in (PROGRAMS, "logs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / CONF
    conf.write_text(config_text(folder))
    return conf


def ctl(folder: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`supervisorctl -c folder/supervisord.conf ARGS`, from the Python running this script."""
    return subprocess.run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(folder / CONF), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def rpc(folder: Path) -> xmlrpc.client.ServerProxy:
    """supervisord's XML-RPC interface over its unix socket (what supervisorctl talks to).

    Read-only questions go through it: a `supervisorctl` process per question would cost a
    Python start-up each. Changes go through `supervisorctl update`, as an operator would.
    """
    transport = SupervisorTransport(None, None, f"unix://{socket_path(folder)}")
    # The URL is a placeholder: the transport connects to the socket.
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def require_running(folder: Path) -> None:
    if not (folder / CONF).is_file():
        raise Failure(f"no {CONF} in {folder}: run supervisord.py {folder} first")
    try:
        state = rpc(folder).supervisor.getState()
    except (OSError, xmlrpc.client.Error) as exc:
        raise Failure(
            f"supervisord of {folder} does not answer ({exc}); start it with: python supervisord.py {folder}"
        ) from None
    if state.get("statename") != "RUNNING":
        raise Failure(f"supervisord of {folder} is {state.get('statename')}")


def status(folder: Path, program: str) -> tuple[str, int | None]:
    """(state, pid) of a program: RUNNING, STARTING, BACKOFF, ... or ABSENT."""
    try:
        info = rpc(folder).supervisor.getProcessInfo(program)
    except xmlrpc.client.Fault as fault:
        if fault.faultCode == Faults.BAD_NAME:
            return "ABSENT", None
        raise Failure(f"supervisord: {fault.faultString}") from None
    except OSError as exc:
        raise Failure(f"supervisord of {folder} does not answer ({exc})") from None
    return str(info["statename"]), int(info["pid"]) or None


def served_version(port: int, timeout: float = 2.0) -> str | None:
    """The version the greeter on `port` reports in /metrics, or None if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
            data = json.loads(resp.read(1 << 20))
    except (urllib.error.URLError, OSError, ValueError):
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return str(version) if version is not None else None


def wait_for(check: Callable[[], bool], seconds: float, interval: float = 0.05) -> bool:
    """Poll `check` until it holds (True) or `seconds` pass (False)."""
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def main_guard(run: Callable[[], int]) -> None:
    """Exit with `run()`'s status; a `Failure` is one line on stderr and status 1."""
    try:
        code = run()
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)
