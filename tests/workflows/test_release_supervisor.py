"""Releases through command environments: the greeter as real processes under a real supervisord.

`examples/catalog-supervisor.yaml` on free ports: staging and production are supervisor
programs that `examples/greeter/supervisor/deploy.py` rewrites and `supervisorctl update`s;
`current.py` asks the running process which version it is; health is read from the running
process of the version under test. Each test starts its own supervisord (temporary
directory, unix socket) and shuts it down, with every greeter it ran, at the end.

What is checked is the processes themselves: the program supervisord runs for each
environment, its pid, the version the process on the environment's port reports, and that
exactly one process listens there. A release switches both; a failing health check puts
staging's process back to the previous version; a worker SIGKILLed in the middle of the
production deploy command leaves exactly one version running once a new worker finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import pytest_asyncio
import yaml
from temporalio.client import WorkflowHandle
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from relman.activities.build import BuildActivities
from relman.activities.environment import EnvironmentActivities
from relman.activities.registry import create_activities
from relman.catalog import Catalog, load_catalog
from relman.contracts import (
    BuildInput,
    DeployInput,
    Environment,
    Gate,
    Outcome,
    ReleaseRequest,
    ReleaseStatus,
)
from relman.devserver import free_port
from relman.results import final_status
from relman.workflows.release import ReleaseWorkflow
from tests import people
from tests.activities.greeter_support import example_keys
from tests.faults.support import WorkerProcess, approve, start_release
from tests.helpers import assert_eventually, new_worker
from tests.workflows.test_release import at_gate, until, vote
from tests.workflows.test_release_real import POLL, manifest

pytestmark = pytest.mark.timeout(150)

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


@contextlib.asynccontextmanager
async def in_process(
    env: WorkflowEnvironment, tmp_path: Path, suites: bool
) -> AsyncIterator[tuple[Site, Worker]]:
    """A site with an in-process worker running every real activity."""
    async with site(tmp_path, suites=suites) as here:
        activities = create_activities(here.catalog_path, here.data, here.cmdb_url)
        async with new_worker(env.client, ReleaseWorkflow, activities=activities) as worker:
            yield here, worker


@pytest_asyncio.fixture
async def released(ts_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[tuple[Site, Worker]]:
    async with in_process(ts_env, tmp_path, suites=True) as running:
        yield running


@pytest_asyncio.fixture
async def released_untested(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> AsyncIterator[tuple[Site, Worker]]:
    """Without the test suites: what is looked at here starts after them."""
    async with in_process(ts_env, tmp_path, suites=False) as running:
        yield running


async def release(env: WorkflowEnvironment, worker: Worker, request: ReleaseRequest) -> ReleaseStatus:
    handle = await start(env, worker.task_queue, request)
    await authorize(env, handle)
    return await final_status(handle)


async def test_a_release_switches_the_staging_and_production_processes(
    ts_env: WorkflowEnvironment, released: tuple[Site, Worker]
) -> None:
    here, worker = released
    await here.deploy_directly("1.1.0")
    staging, production = here.serving(Environment.STAGING), here.serving(Environment.PRODUCTION)
    assert (staging[0], production[0]) == ("1.1.0", "1.1.0")

    second = await release(ts_env, worker, version("greeter-1.1.0", "1.1.1"))
    assert second.outcome is Outcome.COMPLETED, second.reason
    for env, (_, old_pid) in ((Environment.STAGING, staging), (Environment.PRODUCTION, production)):
        new_version, new_pid = here.serving(env)
        assert (new_version, here.mirror(env)) == ("1.1.1", "1.1.1")
        assert new_pid != old_pid, f"{env.value}: the process was not replaced"
    assert set(here.supervisord.programs()) == {"greeter-staging", "greeter-production"}
    assert [(d.environment, d.version, d.previous_version) for d in second.deploys] == [
        (Environment.STAGING, "1.1.1", "1.1.0"),
        (Environment.PRODUCTION, "1.1.1", "1.1.0"),
    ]
    # Health was read from the running processes: 40 probe requests per check.
    assert all(s.health is not None and s.health.samples >= 40 for s in second.stages)


async def test_failing_health_puts_the_previous_process_back(
    ts_env: WorkflowEnvironment, released_untested: tuple[Site, Worker]
) -> None:
    here, worker = released_untested
    await here.deploy_directly("1.1.0")
    _, staging_pid = here.serving(Environment.STAGING)
    production = here.serving(Environment.PRODUCTION)

    final = await release(ts_env, worker, manifest("greeter-1.3.0"))  # fails 30 % of requests
    assert final.outcome is Outcome.ROLLED_BACK
    assert "health failed" in final.reason and "error_rate=0.3" in final.reason
    assert final.compensations == ["exposure to 0%", "roll back staging"]
    restored, restored_pid = here.serving(Environment.STAGING)
    assert (restored, here.mirror(Environment.STAGING)) == ("1.1.0", "1.1.0")
    assert restored_pid != staging_pid  # 1.3.0 ran in between, and 1.1.0 was started again
    assert here.serving(Environment.PRODUCTION) == production  # never touched


@pytest.fixture
def worker_processes() -> Iterator[list[WorkerProcess]]:
    workers: list[WorkerProcess] = []
    yield workers
    for w in workers:
        if w.proc is not None and w.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.proc.pid, signal.SIGKILL)


def runs(holds: Path) -> list[str]:
    path = holds / "deploy.runs"
    return path.read_text().splitlines() if path.exists() else []


async def test_worker_killed_in_the_deploy_command_leaves_one_version_running(
    dev_env: WorkflowEnvironment, tmp_path: Path, worker_processes: list[WorkerProcess]
) -> None:
    # A real dev server: the time-skipping one never hands the workflow to the new worker
    # (its task stays on the dead worker's sticky queue).
    holds = tmp_path / "holds"
    holds.mkdir()
    async with site(tmp_path, suites=False, hold=holds) as here:
        await here.deploy_directly("1.1.0")  # production's first deploy command: not held
        old_version, old_pid = here.serving(Environment.PRODUCTION)
        task_queue = f"sv-kill-{uuid.uuid4().hex[:8]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RELMAN_", "TEMPORAL_"))} | {
            "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "RELMAN_TASK_QUEUE": task_queue,
            "RELMAN_DATA_DIR": str(here.data),
            "RELMAN_CATALOG": str(here.catalog_path),
            "RELMAN_CMDB_URL": here.cmdb_url,
            "RELMAN_GRACEFUL_SHUTDOWN_SECONDS": "1",
        }
        first = await WorkerProcess(env, tmp_path / "worker-1.log").start()
        worker_processes.append(first)
        release_id = f"release-sv-{uuid.uuid4().hex[:12]}"
        handle = await start_release(
            dev_env.client, task_queue, version("greeter-1.1.0", "1.1.1"), release_id
        )
        await approve(handle, Gate.REQUEST, "alice", "bob")
        await approve(handle, Gate.PLAN, "carol", "dave")

        async def held() -> None:
            assert (holds / "deploy.held").exists(), runs(holds)

        await assert_eventually(held, timeout=60, what="production deploy command held")

        # The deploy command is under way (held before it switches): the worker dies.
        await first.kill()
        (holds / "deploy.go").touch()

        # The orphaned command carries on alone and switches production. (It may then fail to
        # print its last line: the worker that read its output is gone.)
        async def orphan_done() -> None:
            assert any(line.startswith("done 2 ") for line in runs(holds)), runs(holds)

        await assert_eventually(orphan_done, timeout=30, what="the orphaned deploy command")
        assert here.serving(Environment.PRODUCTION)[0] == "1.1.1"
        assert here.mirror(Environment.PRODUCTION) == "1.1.0"  # never verified by relman

        second = await WorkerProcess(env, tmp_path / "worker-2.log").start()
        worker_processes.append(second)
        try:
            final = await asyncio.wait_for(final_status(handle), 90)
        except TimeoutError:
            raise AssertionError(f"release unfinished:\n{second.tail(20)}") from None

        assert final.outcome is Outcome.COMPLETED, final.reason
        # The retry ran the deploy command again (idempotent), then checked `current`.
        assert [line.split()[:2] for line in runs(holds) if line.startswith("start")] == [
            ["start", "1"],
            ["start", "2"],
            ["start", "3"],
        ]
        assert "done 3 0" in runs(holds)
        # Exactly one version runs: one program per environment, one process on each port.
        assert set(here.supervisord.programs()) == {"greeter-staging", "greeter-production"}
        new_version, new_pid = here.serving(Environment.PRODUCTION)
        assert (new_version, here.mirror(Environment.PRODUCTION)) == ("1.1.1", "1.1.1")
        assert new_pid != old_pid and old_version == "1.1.0"
        assert here.serving(Environment.STAGING)[0] == "1.1.1"
        production = [d for d in final.deploys if d.environment is Environment.PRODUCTION]
        assert [(d.version, d.previous_version) for d in production] == [("1.1.1", "1.1.0")]
