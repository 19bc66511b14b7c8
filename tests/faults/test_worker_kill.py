"""A worker SIGKILLed in the middle of each kind of activity; a new worker finishes every release.

Real processes: a dev server with a SQLite file, the worker as a subprocess (`tests.faults.worker`:
relman's worker with shorter activity timeouts), the real adapters on copies of the greeter
service, and the CMDB on PostgreSQL. Five releases run at once, each stopped in one activity:

- `k-build`: the build command (held by `hold.py`),
- `k-tests`: the unit suite (held),
- `k-stage`: set_exposure of the second dark-launch stage (waiting for the environment lock,
  which the test holds),
- `k-golive`: the production deploy (waiting for the environment lock),
- `k-cmdb`: the CMDB close (its transaction commits, the answer is held by a proxy).

Then the worker is cut off from Temporal (a frozen proxy), the held steps are let go so that
their side effects happen while the worker cannot report them, and the worker is SIGKILLed.
A second worker retries each activity; every side effect must have happened exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fcntl
import json
import os
import signal
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import WorkflowHandle

from relman.client import ReleaseClient
from relman.cmdb.store import CmdbStore
from relman.contracts import CloseCode, Gate, OperatorAction, OperatorVerb, Outcome, ReleaseStatus
from relman.progress import describe_step
from relman.results import final_status
from relman.workflows.release import ReleaseWorkflow
from tests.activities.greeter_support import example_keys
from tests.faults.support import (
    OPERATOR,
    ROOT,
    KillableDevServer,
    TcpProxy,
    WorkerProcess,
    approve,
    request_for,
    signed,
    start_release,
    wait_status,
)
from tests.helpers import assert_eventually

pytestmark = [pytest.mark.fault, pytest.mark.timeout(200)]

HOLD = Path(__file__).with_name("hold.py")
SERVICES = ("k-build", "k-tests", "k-stage", "k-golive", "k-cmdb")
EXPOSURES = ["stage-allow-list", "stage-one-percent", "stage-five-percent", "stage-quarter", "go-live"]
LONG_BAKE = 600  # ended by `promote` when the test is ready


def held(argv: list[str], holds: Path, name: str) -> list[str]:
    return ["{python}", str(HOLD), str(holds), name, "1", "--", *argv]


def write_catalog(path: Path, holds: Path) -> None:
    """The example catalog's greeter, five times, each copy stoppable at one step; its people
    and evidence key as in the example (their key files in the worker's data dir)."""
    example = yaml.safe_load((ROOT / "examples" / "catalog.yaml").read_text())
    greeter = example["services"]["greeter"]
    services = {}
    for name in SERVICES:
        spec = copy.deepcopy(greeter)
        spec["ci_name"] = name
        spec["workdir"] = str(ROOT / "examples" / "greeter")
        spec["relationships"] = [{"type": "runs_on", "target": "local-host"}]  # not greeter-db's
        spec["environments"] = {
            env: {"base_dir": f"{{data_dir}}/envs/{name}/{env}"} for env in ("staging", "production")
        }
        spec["build"]["timeout"] = 300
        for suite in spec["tests"]:
            suite["timeout"] = 300
        spec["health"]["timeout"] = 60
        spec["review_period"] = 1
        for stage in spec["stages"]:
            stage["bake_seconds"] = 0
        services[name] = spec
    services["k-build"]["build"]["command"] = held(greeter["build"]["command"], holds, "build")
    services["k-tests"]["tests"][0]["command"] = held(greeter["tests"][0]["command"], holds, "unit")
    services["k-stage"]["stages"][0]["bake_seconds"] = LONG_BAKE
    services["k-golive"]["stages"][3]["bake_seconds"] = LONG_BAKE
    catalog = {key: example[key] for key in ("signatures", "people", "evidence", "configuration_items")} | {
        "services": services
    }
    path.write_text(yaml.safe_dump(catalog, sort_keys=False))


class EnvLock:
    """The environment's own lock (`<base>/.relman/lock`), taken by the test process."""

    def __init__(self, base: Path) -> None:
        (base / ".relman").mkdir(parents=True, exist_ok=True)
        self.fd = os.open(base / ".relman" / "lock", os.O_RDWR | os.O_CREAT, 0o644)

    async def take(self) -> None:
        async def taken() -> None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AssertionError("the worker holds the environment lock") from None

        await assert_eventually(taken, timeout=10, what="environment lock")

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


async def running(handle: WorkflowHandle[Any, Any], activity: str) -> None:
    """Wait until the worker has started `activity` of this release."""

    async def started() -> None:
        pending = (await handle.describe()).raw_description.pending_activities
        states = {p.activity_type.name: p.state for p in pending}
        assert states.get(activity) == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED, states

    await assert_eventually(started, timeout=30, interval=0.1, what=f"{handle.id} {activity} started")


async def attempts(handle: WorkflowHandle[Any, Any], activity: str) -> list[int]:
    """The attempt numbers that completed each `activity` of the release."""
    history = await handle.fetch_history()
    names = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    return [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and names[e.activity_task_started_event_attributes.scheduled_event_id] == activity
    ]


async def operators_see_the_held_build(client: ReleaseClient, release_id: str) -> None:
    """`relman status` and the demo show a long step while it runs, with its last heartbeat."""

    async def shown() -> None:
        _, running = await client.progress(release_id)
        steps = {s.activity: s for s in running}
        build = steps["build_package"]
        assert (build.state, build.attempt) == ("running", 1), build
        assert build.started_at is not None and "output_bytes" in build.detail, build
        line = describe_step(build, datetime.now(UTC))
        assert line.startswith("build_package, running ") and "attempt 1" in line, line

    await assert_eventually(shown, timeout=30, interval=0.2, what=f"{release_id} build shown as running")


def runs(holds: Path, name: str) -> list[str]:
    path = holds / f"{name}.runs"
    return path.read_text().splitlines() if path.exists() else []


def flags_keys(env: Path, service: str) -> list[str]:
    log = env / "flags.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [json.loads(line)["key"] for line in lines]


def deploy_records(env: Path) -> dict[str, Any]:
    state = env / ".relman" / "deploys.json"
    return json.loads(state.read_text()) if state.exists() else {}


async def test_worker_killed_in_each_kind_of_activity(tmp_path: Path, pg_url: str) -> None:
    holds, data = tmp_path / "holds", tmp_path / "data"
    holds.mkdir()
    catalog = tmp_path / "catalog.yaml"
    write_catalog(catalog, holds)
    signers = example_keys(data)
    schema = f"faults_{uuid.uuid4().hex[:10]}"
    cmdb = CmdbStore(pg_url, schema=schema)
    cmdb.count("change")  # the schema exists before the workers use it
    server = KillableDevServer(tmp_path / "temporal.db")
    temporal_proxy: TcpProxy | None = None
    pg_proxy = await TcpProxy(make_url(pg_url).port or 5432).start()
    workers: list[WorkerProcess] = []
    locks: list[EnvLock] = []
    tag = uuid.uuid4().hex[:6]
    rid = {s: f"release-{s}-{tag}" for s in SERVICES}

    def env_dir(service: str, env: str) -> Path:
        return data / "envs" / service / env

    try:
        client = await server.start()
        temporal_proxy = await TcpProxy(server.port).start()
        worker_url = make_url(pg_url).set(port=pg_proxy.port, query={"options": f"-csearch_path={schema}"})
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RELMAN_", "TEMPORAL_"))} | {
            "TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_proxy.port}",
            "RELMAN_TASK_QUEUE": f"kill-{tag}",
            "RELMAN_DATA_DIR": str(data),
            "RELMAN_CATALOG": str(catalog),
            "RELMAN_CMDB_URL": worker_url.render_as_string(hide_password=False),
            "RELMAN_GRACEFUL_SHUTDOWN_SECONDS": "1",
        }
        first = await WorkerProcess(env, tmp_path / "worker-1.log").start()
        workers.append(first)
        cmdb_reply_lost = pg_proxy.lose_reply_after(f"{rid['k-cmdb']}/close")

        handles = {s: await start_release(client, f"kill-{tag}", request_for(s), rid[s]) for s in SERVICES}

        async def authorize(h: WorkflowHandle[Any, ReleaseStatus]) -> None:
            await approve(h, Gate.REQUEST, "alice", "bob")
            await approve(h, Gate.PLAN, "carol", "dave")

        await asyncio.gather(*(authorize(h) for h in handles.values()))

        # 1. Every release reaches its step; the two lock-bound ones wait in a long bake.
        async def file_exists(path: Path) -> None:
            assert path.exists(), path

        await assert_eventually(lambda: file_exists(holds / "build.held"), timeout=60, what="build held")
        await assert_eventually(lambda: file_exists(holds / "unit.held"), timeout=90, what="unit suite held")
        await wait_status(handles["k-stage"], lambda s: len(s.stages) == 1, timeout=90)
        await wait_status(handles["k-golive"], lambda s: len(s.stages) == 4, timeout=120)
        await asyncio.wait_for(cmdb_reply_lost.wait(), 120)

        async def exposed(service: str, step: str) -> None:
            assert flags_keys(env_dir(service, "production"), service)[-1:] == [
                f"{rid[service]}/expose-{step}"
            ]

        await assert_eventually(
            lambda: exposed("k-stage", "stage-allow-list"), timeout=30, what="k-stage stage 1"
        )
        await assert_eventually(
            lambda: exposed("k-golive", "stage-quarter"), timeout=30, what="k-golive stage 4"
        )
        for service in ("k-stage", "k-golive"):
            lock = EnvLock(env_dir(service, "production"))
            locks.append(lock)
            await lock.take()
            action = OperatorAction(action=OperatorVerb.PROMOTE, by=OPERATOR, reason="fault test: next step")
            await handles[service].signal(ReleaseWorkflow.promote, await signed(action, rid[service]))
        await running(handles["k-stage"], "set_exposure")
        await running(handles["k-golive"], "deploy")
        await running(handles["k-build"], "build_package")
        release_client = ReleaseClient(client, f"kill-{tag}", signer=signers.__getitem__)
        await operators_see_the_held_build(release_client, rid["k-build"])
        await running(handles["k-tests"], "run_tests")
        await running(handles["k-cmdb"], "close_change")

        # 2. Cut the worker off from Temporal, let every step do its side effect, then kill it.
        temporal_proxy.pause()
        (holds / "build.go").touch()
        (holds / "unit.go").touch()
        for lock in locks:
            lock.release()
        package = data / "work" / rid["k-build"] / "package" / "manifest.json"
        await assert_eventually(lambda: file_exists(package), timeout=60, what="k-build package")
        await assert_eventually(
            lambda: exposed("k-stage", "stage-one-percent"), timeout=30, what="k-stage stage 2"
        )
        golive = env_dir("k-golive", "production")

        async def switched() -> None:
            assert os.readlink(golive / "current") == "1.1.0"
            assert f"{rid['k-golive']}/deploy-production" in deploy_records(golive)

        await assert_eventually(switched, timeout=30, what="k-golive production switched")

        async def unit_done() -> None:
            assert any(line.startswith("done 1 ") for line in runs(holds, "unit")), runs(holds, "unit")

        await assert_eventually(unit_done, timeout=60, what="unit suite done")
        switch_inode = os.lstat(golive / "current").st_ino
        record_at = deploy_records(golive)[f"{rid['k-golive']}/deploy-production"]["at"]
        with cmdb.engine.connect() as conn:
            close_rows = conn.execute(
                text(f'SELECT at FROM "{schema}".audit_log WHERE idempotency_key = :k'),
                {"k": f"{rid['k-cmdb']}/close"},
            ).all()
        assert len(close_rows) == 1  # committed; the worker never heard so
        await first.kill()
        # The dead worker's connections close, as a killed process's do (the frozen proxy
        # would otherwise keep its polls open and the server would hand them tasks).
        await temporal_proxy.close()

        # 3. A new worker (straight to the server) finishes all five releases.
        second_env = env | {"TEMPORAL_ADDRESS": server.address}
        workers.append(await WorkerProcess(second_env, tmp_path / "worker-2.log").start())
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(final_status(handles[s]) for s in SERVICES)), 120
            )
        except TimeoutError:
            phases = {s: (await handles[s].query(ReleaseWorkflow.status)).phase.value for s in SERVICES}
            raise AssertionError(f"releases unfinished: {phases}\n{workers[-1].tail(40)}") from None
        finals: dict[str, ReleaseStatus] = dict(zip(SERVICES, results, strict=True))
        killed = {
            "k-build": await attempts(handles["k-build"], "build_package"),
            "k-tests": await attempts(handles["k-tests"], "run_tests"),
            "k-stage": await attempts(handles["k-stage"], "set_exposure"),
            "k-golive": await attempts(handles["k-golive"], "deploy"),
            "k-cmdb": await attempts(handles["k-cmdb"], "close_change"),
        }
    finally:
        for lock in locks:
            lock.release()
        for w in workers:
            await w.kill()
        for name in ("build", "unit"):
            for line in runs(holds, name):
                if line.startswith("start "):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(line.split()[2]), signal.SIGKILL)
        if temporal_proxy is not None:
            await temporal_proxy.close()
        await pg_proxy.close()
        server.stop()

    try:
        assert {s: f.outcome for s, f in finals.items()} == dict.fromkeys(SERVICES, Outcome.COMPLETED), {
            s: f.reason for s, f in finals.items()
        }
        # Each killed activity really ran again (later attempts: tasks handed to the dead worker).
        assert all(max(a) >= 2 for a in killed.values()), killed
        for s in SERVICES:
            # CMDB: one change, one CI version, each audit key once, the signed evidence last.
            audit = [e.idempotency_key for e in cmdb.audit(rid[s])]
            steps = ("open", "authorized", "close", "evidence")
            assert audit == [f"{rid[s]}/{step}" for step in steps], audit
            assert cmdb.get_evidence(rid[s]) is not None
            change = cmdb.get_change(rid[s])
            assert change is not None and change.close_code is CloseCode.SUCCESSFUL
            package_built = finals[s].package
            assert package_built is not None and change.artifact_digest == package_built.digest
            assert [v.version for v in cmdb.ci_versions(s)] == ["1.1.0"]
            # Environments: one deploy record each, `current` at the release.
            for env_name in ("staging", "production"):
                folder = env_dir(s, env_name)
                assert os.readlink(folder / "current") == "1.1.0"
                assert list(deploy_records(folder)) == [f"{rid[s]}/deploy-{env_name}"]
            # Flags: every exposure step written once, in order.
            keys = flags_keys(env_dir(s, "production"), s)
            assert keys == [f"{rid[s]}/expose-{step}" for step in EXPOSURES], keys
        assert cmdb.count("change") == len(SERVICES) and cmdb.count("ci_version") == len(SERVICES)

        # The go-live switch happened once: same record, same symlink (a switch makes a new one).
        assert os.lstat(golive / "current").st_ino == switch_inode
        assert deploy_records(golive)[f"{rid['k-golive']}/deploy-production"]["at"] == record_at
        # The close committed once, before the kill; the retry found it done.
        with cmdb.engine.connect() as conn:
            after = conn.execute(
                text(f'SELECT at FROM "{schema}".audit_log WHERE idempotency_key = :k'),
                {"k": f"{rid['k-cmdb']}/close"},
            ).all()
        assert after == close_rows
        # The build ran once (the retry verified and reused the package); the unit suite twice.
        assert [line.split()[:2] for line in runs(holds, "build")] == [["start", "1"], ["done", "1"]]
        assert sum(line.startswith("start ") for line in runs(holds, "unit")) == 2
        print(f"\nkilled activities' completing attempts: {killed}")
    finally:
        cmdb.drop()
        cmdb.close()
