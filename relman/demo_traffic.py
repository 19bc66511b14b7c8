"""The demo's production traffic: with a `prometheus` binary, health comes from Prometheus.

When `prometheus` is on PATH the demo runs what a platform would: the greeter serving
production from its flagd flags file (each request's version is the flag's variant for that
user), steady users (among them the allow-listed alice and bob, so the first stage sees
traffic), and a local Prometheus scraping it every second. The demo's catalog is the
example's with an `analysis` section pointing at that Prometheus (Argo-style error-rate
measurements of the new variant). Without the binary the example catalog is used as it is,
and health comes from the greeter's probe. Either way the demo says which.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from relman.devprometheus import LocalPrometheus
from relman.devserver import free_port
from relman.errors import RelmanError

SERVICE = "greeter"
_NEW = 'job="{service}",variant="{variant}",version="{variant_version}"'
# The version too: after a go-live the `new` variant's series goes on with the old release.
ERROR_RATE = (
    f'(sum(rate(greeter_requests_total{{{_NEW},code=~"5.."}}[10s])) or vector(0)) / '
    f"sum(rate(greeter_requests_total{{{_NEW}}}[10s]))"
)
"""The new variant's share of failed requests over the last 10 s (scraped every second)."""


def analysis_section(address: str) -> dict[str, Any]:
    """The greeter's `analysis` in the demo: up to four measurements 2 s apart, two in a row
    under 5 % errors pass early, one over 10 % fails the stage."""
    return {
        "provider": "prometheus",
        "address": address,
        "interval": 2,
        "count": 4,
        "failure_limit": 0,
        "consecutive_success_limit": 2,
        "metrics": [
            {
                "name": "error_rate",
                "query": ERROR_RATE,
                "success": "result <= 0.05",
                "failure": "result > 0.1",
            }
        ],
    }


def demo_catalog(example: Path, out: Path, address: str) -> Path:
    """The example catalog with Prometheus analysis for the greeter, written to `out`."""
    data = yaml.safe_load(example.read_text())
    # Relative paths resolve against the catalog's directory, and this copy lives elsewhere.
    for other in [*data["services"].values(), *data.get("train_suites", [])]:
        other["workdir"] = str((example.parent / other.get("workdir", ".")).resolve())
    spec = data["services"][SERVICE]
    spec["analysis"] = analysis_section(address)
    out.write_text(
        f"# The demo's catalog: {example} with Prometheus analysis for {SERVICE}.\n"
        + yaml.safe_dump(data, sort_keys=False)
    )
    return out


@dataclass
class Traffic:
    """What the demo runs besides Temporal and the worker; `stop()` ends all of it."""

    catalog: Path
    health: str
    """One line saying where the releases' health comes from."""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    prometheus: LocalPrometheus | None = None

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        if self.prometheus is not None:
            self.prometheus.stop()


def start_traffic(example: Path, demo_dir: Path) -> Traffic:
    """Production traffic and Prometheus when the binary exists; else the probe, said so."""
    if shutil.which("prometheus") is None:
        return Traffic(example, "health from the greeter's probe (no `prometheus` binary on PATH)")
    greeter = example.parent / SERVICE
    envs = demo_dir / "envs" / SERVICE
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = demo_dir / "traffic"
    logs.mkdir(parents=True, exist_ok=True)
    traffic = Traffic(example, "")
    try:
        traffic.processes.append(
            _spawn(
                [
                    str(greeter / "app.py"),
                    *("--port", str(port), "--flags", str(envs / "production" / "flags.flagd.json")),
                    *("--releases", str(envs / "production"), "--releases", str(envs / "staging")),
                ],
                logs / "greeter.log",
            )
        )
        _wait_for(f"{url}/metrics", traffic.processes[0])
        load = [str(greeter / "load.py"), "--target", url, "--duration", "86400"]
        # Everyone, and the allow-listed people often enough that the first stage is measured.
        traffic.processes.append(_spawn([*load, "--rate", "10", "--users", "200"], logs / "load-users.log"))
        traffic.processes.append(
            _spawn(
                [*load, "--rate", "6", "--users", "1", "--user", "alice", "--user", "bob"],
                logs / "load-ab.log",
            )
        )
        traffic.prometheus = LocalPrometheus(
            {SERVICE: [f"127.0.0.1:{port}"]}, demo_dir / "prometheus"
        ).start()
    except BaseException:
        traffic.stop()
        raise
    traffic.catalog = demo_catalog(example, demo_dir / "catalog.yaml", traffic.prometheus.address)
    traffic.health = (
        f"health from Prometheus at {traffic.prometheus.address} (analysis of the new variant's error "
        f"rate), scraping the production greeter on {url} under steady users"
    )
    return traffic


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def _wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RelmanError(f"the demo's greeter exited {process.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RelmanError(f"the demo's greeter did not answer {url} within {timeout:g}s")
