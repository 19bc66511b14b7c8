"""What a deploy costs through the command adapter (supervisor) against the directory adapter.

Both adapters, in the same run, do N deploys of greeter 1.1.1 over 1.1.0 and N rollbacks
back to 1.1.0 in staging, through `EnvironmentActivities` as a worker runs them (no Temporal
server: the activity alone). The directory adapter switches a symlink; the command adapter
runs `examples/greeter/supervisor/deploy.py` (rewrite the program, `supervisorctl update`,
wait until the new process answers with its version) and `current.py` before and after, on
a supervisord this script starts in a temporary directory and shuts down at the end.

    .venv/bin/python bench/deploy_bench.py [-n 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml
from temporalio.testing import ActivityEnvironment

from relman.activities.build import BuildActivities
from relman.activities.environment import EnvironmentActivities
from relman.catalog import Catalog, load_catalog, people_names
from relman.contracts import BuildInput, DeployInput, Environment, ReleasePackage, RollbackInput
from relman.devserver import free_port
from relman.identity.keys import WORKER, ensure_keys

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = EXAMPLES / "greeter" / "supervisor"


def catalogs(tmp: Path) -> dict[str, Catalog]:
    """The example catalog (directory) and the supervisor one on a free port, own data dirs."""
    raw = yaml.safe_load((EXAMPLES / "catalog-supervisor.yaml").read_text())
    greeter = raw["services"]["greeter"]
    greeter["workdir"] = str(EXAMPLES / "greeter")
    port = str(free_port())
    for env in greeter["environments"].values():
        for kind in ("deploy", "rollback", "current"):
            env[kind] = [port if arg == "8181" else arg for arg in env[kind]]
    path = tmp / "catalog-supervisor.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    found = {}
    for name, file in (("directory", EXAMPLES / "catalog.yaml"), ("command", path)):
        data = tmp / name
        ensure_keys(data / "keys", [*people_names(file), WORKER])
        found[name] = load_catalog(file, data_dir=data)
    return found


def start_supervisord(folder: Path) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True)
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "supervisord.py"), str(folder), "--foreground"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sys.path.insert(0, str(SCRIPTS))
    import _supervisor as sv  # the example scripts' helpers: socket path, XML-RPC

    deadline = time.monotonic() + 20
    while True:
        try:
            sv.require_running(folder)
            return proc
        except sv.Failure:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.1)


def stop_supervisord(folder: Path, proc: subprocess.Popen[bytes]) -> None:
    import _supervisor as sv

    try:
        sv.rpc(folder).supervisor.shutdown()
    except (OSError, xmlrpc.client.Error):
        proc.terminate()
    proc.wait(30)


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


async def measure(catalog: Catalog, packages: dict[str, ReleasePackage], n: int) -> dict[str, list[float]]:
    envs = EnvironmentActivities(catalog)

    def step(version: str, release: str) -> dict[str, object]:
        staging = Environment.STAGING
        return {"release_id": release, "service": "greeter", "environment": staging, "version": version}

    def deploy(version: str, release: str) -> Callable[[], Awaitable[object]]:
        inp = DeployInput(**step(version, release), step="deploy", package=packages[version])
        return lambda: ActivityEnvironment().run(envs.deploy, inp)

    def rollback(version: str, release: str) -> Callable[[], Awaitable[object]]:
        inp = RollbackInput(**step(version, release), step="rollback", deploy_step="deploy")
        return lambda: ActivityEnvironment().run(envs.rollback, inp)

    await deploy("1.1.0", "release-bench-base")()
    times: dict[str, list[float]] = {"deploy": [], "rollback": []}
    for i in range(n):
        release = f"release-bench-{i}"
        times["deploy"].append(await timed(deploy("1.1.1", release)))
        times["rollback"].append(await timed(rollback("1.1.1", release)))
    # What asking which version runs costs (twice per deploy: before, and to verify it).
    _, target = envs.target("greeter", Environment.STAGING)
    times["which version runs"] = [await timed(target.running) for _ in range(n)]
    return times


def row(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{name}: median {statistics.median(values) * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="deploys and rollbacks per adapter")
    args = parser.parse_args()
    # Short: the supervisord socket lives under it.
    tmp = Path(tempfile.mkdtemp(prefix="dbench-", dir="/tmp"))
    found = catalogs(tmp)
    builder = BuildActivities(found["directory"], tmp / "work")
    packages = {}
    for version in ("1.1.0", "1.1.1"):
        inp = BuildInput(
            release_id=f"release-bench-{version}",
            step="build",
            service="greeter",
            version=version,
            commit="abc1234",
        )
        packages[version] = await ActivityEnvironment().run(builder.build_package, inp)
    folder = tmp / "command" / "envs" / "greeter" / "supervisor"
    proc = start_supervisord(folder)
    results = {}
    try:
        started = time.monotonic()
        for name in ("directory", "command"):
            results[name] = await measure(found[name], packages, args.n)
        elapsed = time.monotonic() - started
    finally:
        stop_supervisord(folder, proc)
    load = os.getloadavg()[0]
    print(f"{args.n} deploys + {args.n} rollbacks per adapter in {elapsed:.1f}s; 1-min load {load:.1f}")
    for name, times in results.items():
        for op, values in times.items():
            print(f"  {name:9} {row(op, values)}")
    for op in ("deploy", "rollback"):
        ratio = statistics.median(results["command"][op]) / statistics.median(results["directory"][op])
        print(f"  command/directory median {op}: {ratio:.0f}x")


if __name__ == "__main__":
    asyncio.run(main())
