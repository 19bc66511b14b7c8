"""A site for releases through command environments: the greeter under a real supervisord.

`examples/catalog-supervisor.yaml` on free ports in a temporary data dir, the supervisord its
`{env_dir}/../supervisor` commands talk to (started by the example's own supervisord.py, shut
down with every greeter it ran at the end), and ways to look at the running processes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from temporalio.client import WorkflowHandle
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from relman.activities.build import BuildActivities
from relman.activities.environment import EnvironmentActivities
from relman.catalog import Catalog, load_catalog
from relman.contracts import BuildInput, DeployInput, Environment, Gate, ReleaseRequest, ReleaseStatus
from relman.devserver import free_port
from relman.workflows.release import ReleaseWorkflow
from tests import people
from tests.activities.greeter_support import example_keys
from tests.helpers import assert_eventually
from tests.workflows.test_release import at_gate, until, vote
from tests.workflows.test_release_real import POLL, manifest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCRIPTS = EXAMPLES / "greeter" / "supervisor"
HOLD = ROOT / "tests" / "faults" / "hold.py"
EXAMPLE_PORTS = {Environment.STAGING: "8181", Environment.PRODUCTION: "8182"}


def _load_scripts_helpers() -> ModuleType:
    """The example scripts' own helpers (socket path, XML-RPC, /metrics), not a copy of them."""
    spec = importlib.util.spec_from_file_location("greeter_supervisor", SCRIPTS / "_supervisor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sv = _load_scripts_helpers()


def greeters_on(port: int) -> list[int]:
    """Pids of every greeter process started for `port` on this machine (supervised or not)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if any(a.endswith("app.py") for a in args) and f"--port {port}" in " ".join(args):
            pids.append(int(entry.name))
    return pids


def greet(port: int, name: str) -> dict[str, Any]:
    """The greeter's answer to `name` on `port` (a failure's body too)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/greet?name={name}", timeout=5) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        answer = json.loads(err.read())
    return answer


@dataclass
class Supervisord:
    """A supervisord of our own, started by the example's supervisord.py in the foreground."""

    folder: Path
    proc: subprocess.Popen[bytes]

    @classmethod
    async def start(cls, folder: Path) -> Supervisord:
        log = (folder.parent / "supervisord.out").open("wb")
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "supervisord.py"), str(folder), "--foreground"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        started = cls(folder, proc)

        async def answers() -> None:
            assert proc.poll() is None, f"supervisord exited {proc.returncode}"
            try:
                sv.require_running(folder)
            except sv.Failure as exc:
                raise AssertionError(str(exc)) from None

        await assert_eventually(answers, timeout=20, what="supervisord")
        return started

    def programs(self) -> dict[str, tuple[str, int]]:
        """Every program supervisord runs: name -> (state, pid)."""
        infos = sv.rpc(self.folder).supervisor.getAllProcessInfo()
        return {i["name"]: (i["statename"], i["pid"]) for i in infos}

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            sv.rpc(self.folder).supervisor.shutdown()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def write_catalog(
    path: Path, ports: dict[Environment, int], *, suites: bool = True, hold: Path | None = None
) -> None:
    """The example supervisor catalog on free ports, without bakes (and without test suites
    unless `suites`); with `hold`, production's second deploy command waits for
    `hold/deploy.go` (tests/faults/hold.py) so the worker can be killed in it."""
    raw = yaml.safe_load((EXAMPLES / "catalog-supervisor.yaml").read_text())
    greeter = raw["services"]["greeter"]
    greeter["workdir"] = str(EXAMPLES / "greeter")
    greeter["review_period"] = 1
    if not suites:
        greeter["tests"] = []

    def on_free_ports(argv: list[str]) -> list[str]:
        swap = {EXAMPLE_PORTS[env]: str(port) for env, port in ports.items()}
        return [swap.get(arg, arg) for arg in argv]

    for env in greeter["environments"].values():
        for kind in ("deploy", "rollback", "current"):
            env[kind] = on_free_ports(env[kind])
    greeter["health"]["command"] = on_free_ports(greeter["health"]["command"])
    for stage in greeter["stages"]:
        stage["bake_seconds"] = 0  # each stage still reads the health of the running process
    if hold is not None:
        production = greeter["environments"]["production"]
        production["deploy"] = ["{python}", str(HOLD), str(hold), "deploy", "2", "--", *production["deploy"]]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


@dataclass
class Site:
    """A data dir, its catalog on free ports and the supervisord its environments run under."""

    tmp: Path
    data: Path
    catalog_path: Path
    catalog: Catalog
    ports: dict[Environment, int]
    supervisord: Supervisord

    @property
    def cmdb_url(self) -> str:
        return f"sqlite:///{self.tmp / 'cmdb.sqlite'}"

    def env_dir(self, env: Environment) -> Path:
        return self.catalog.service("greeter").env_dir(env)

    def mirror(self, env: Environment) -> str | None:
        link = self.env_dir(env) / "current"
        return os.readlink(link) if link.is_symlink() else None

    def serving(self, env: Environment) -> tuple[str | None, int]:
        """(version, pid) of the one process of `env`, checked from every side."""
        port = self.ports[env]
        state, pid = self.supervisord.programs()[f"greeter-{env.value}"]
        assert state == "RUNNING", f"{env.value}: {state}"
        assert greeters_on(port) == [pid], f"{env.value}: processes on {port}: {greeters_on(port)}, not {pid}"
        return sv.served_version(port), pid

    async def deploy_directly(self, version: str) -> None:
        """`version` built and deployed to both environments by the activities, outside a release."""
        release_id = f"release-setup-{version}"
        build = BuildInput(
            release_id=release_id, step="build", service="greeter", version=version, commit="abc1234"
        )
        package = await ActivityEnvironment().run(
            BuildActivities(self.catalog, self.data / "work").build_package, build
        )
        for env in (Environment.STAGING, Environment.PRODUCTION):
            inp = DeployInput(
                release_id=release_id,
                step=f"deploy-{env.value}",
                service="greeter",
                environment=env,
                version=version,
                package=package,
            )
            await ActivityEnvironment().run(EnvironmentActivities(self.catalog).deploy, inp)


@contextlib.asynccontextmanager
async def site(tmp_path: Path, *, suites: bool = True, hold: Path | None = None) -> AsyncIterator[Site]:
    data = tmp_path / "data"
    example_keys(data)
    ports = {env: free_port() for env in Environment}
    catalog_path = tmp_path / "catalog.yaml"
    write_catalog(catalog_path, ports, suites=suites, hold=hold)
    catalog = load_catalog(catalog_path, data_dir=data)
    # Where the catalog's `{env_dir}/../supervisor` points.
    folder = data / "envs" / "greeter" / "supervisor"
    folder.mkdir(parents=True)
    supervisord = await Supervisord.start(folder)
    try:
        yield Site(tmp_path, data, catalog_path, catalog, ports, supervisord)
    finally:
        supervisord.stop()
    for port in ports.values():
        assert greeters_on(port) == [], f"a greeter on {port} outlived supervisord"


async def authorize(env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any]) -> None:
    for gate, members in ((Gate.REQUEST, ("alice", "bob")), (Gate.PLAN, ("carol", "dave"))):
        await until(env, handle, at_gate(gate), step=POLL)
        for member in members:
            await vote(handle, gate, member)


async def start(
    env: WorkflowEnvironment, task_queue: str, request: ReleaseRequest
) -> WorkflowHandle[ReleaseWorkflow, ReleaseStatus]:
    release_id = f"release-sv-{uuid.uuid4().hex[:12]}"
    return await env.client.start_workflow(
        ReleaseWorkflow.run, await people.sign(request, release_id), id=release_id, task_queue=task_queue
    )


def version(name: str, v: str) -> ReleaseRequest:
    return manifest(name).model_copy(update={"version": v, "title": f"Greeter {v}"})
