"""A local Prometheus (Debian's `prometheus` package, or any on PATH) scraping local targets.

For the demo and the tests: a child process on a loopback port, its data in a directory of
the caller's, a scrape every second, stopped with the caller. Production Prometheus servers
are the platform's own; relman only queries them (`relman.activities.prometheus`).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import yaml

from relman.devserver import free_port
from relman.errors import RelmanError


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        raise RelmanError("the `prometheus` binary was not found on PATH (apt-get install prometheus)")
    return found


def scrape_config(
    jobs: Mapping[str, list[str]], *, interval: str = "1s", metrics_path: str = "/metrics/prometheus"
) -> str:
    """The configuration file's text: each job scraping its targets (host:port) every `interval`.

    A job is named for the service it scrapes, so queries select a service by `job="{service}"`.
    """
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": job, "metrics_path": metrics_path, "static_configs": [{"targets": list(targets)}]}
            for job, targets in jobs.items()
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


class LocalPrometheus:
    """`prometheus` as a child process on 127.0.0.1:`port` (0: a free one), data in `data_dir`,
    scraping each job's targets (host:port)."""

    def __init__(
        self, jobs: Mapping[str, list[str]], data_dir: Path, port: int = 0, interval: str = "1s"
    ) -> None:
        self.jobs = dict(jobs)
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.interval = interval
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> LocalPrometheus:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "prometheus.yml"
        config.write_text(scrape_config(self.jobs, interval=self.interval))
        self.log = self.data_dir / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    prometheus_binary(),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1d",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-1:]
                raise RelmanError(f"prometheus exited {self.process.returncode}: {' '.join(tail)[:300]}")
            try:
                with urllib.request.urlopen(f"{self.address}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RelmanError(f"prometheus not ready on {self.address} within {timeout:g}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
