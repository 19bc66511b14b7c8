"""The train's example components (greeter-db, greeter, greeter-worker) through relman's real
adapters and the example catalog: build, command and directory deploys, health probes.

No workflow here (the train workflow orders the waves): these tests show the components
depend on each other for real, so the order the catalog's relationships give matters.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from relman.activities.build import BuildActivities
from relman.activities.environment import EnvironmentActivities
from relman.activities.health import HealthActivities
from relman.catalog import Catalog
from relman.contracts import (
    AcceptanceCriteria,
    BuildInput,
    DeployInput,
    Environment,
    HealthInput,
    HealthReport,
    ReleasePackage,
    RollbackInput,
    Verdict,
)
from relman.workflows.waves import backout_order, dependencies, waves
from tests.activities.greeter_support import EXAMPLES, example_catalog

TRAIN = ["greeter", "greeter-db", "greeter-worker"]
PROD = Environment.PRODUCTION


class Envs:
    """One data dir's example catalog and the activities acting on it."""

    def __init__(self, tmp: Path) -> None:
        self.catalog: Catalog = example_catalog(tmp / "data")
        self.work = tmp / "work"
        self.env = ActivityEnvironment()

    def rid(self, service: str, version: str) -> str:
        return f"release-{service}-{version}"

    async def build(self, service: str, version: str) -> ReleasePackage:
        inp = BuildInput(
            release_id=self.rid(service, version),
            step="build",
            service=service,
            version=version,
            commit="abc1234",
        )
        return await self.env.run(BuildActivities(self.catalog, self.work).build_package, inp)

    async def deploy(self, package: ReleasePackage, env: Environment) -> None:
        inp = DeployInput(
            release_id=self.rid(package.service, package.version),
            step=f"deploy-{env.value}",
            service=package.service,
            environment=env,
            version=package.version,
            package=package,
        )
        await self.env.run(EnvironmentActivities(self.catalog).deploy, inp)

    async def rollback(self, service: str, version: str, env: Environment) -> None:
        inp = RollbackInput(
            release_id=self.rid(service, version),
            step=f"rollback-{env.value}",
            service=service,
            environment=env,
            version=version,
            deploy_step=f"deploy-{env.value}",
        )
        await self.env.run(EnvironmentActivities(self.catalog).rollback, inp)

    async def health(self, service: str, version: str, stage: str = "") -> HealthReport:
        spec = self.catalog.service(service)
        inp = HealthInput(
            release_id=self.rid(service, version),
            step=f"health-{stage or 'verify'}",
            service=service,
            environment=PROD,
            version=version,
            acceptance=AcceptanceCriteria(
                max_error_rate=spec.health.max_error_rate, max_latency_ms=spec.health.max_latency_ms
            ),
            stage=stage,
        )
        return await self.env.run(HealthActivities(self.catalog).check_health, inp)

    def db(self, env: Environment = PROD) -> Path:
        return self.catalog.service("greeter-db").env_dir(env) / "greeter.sqlite"

    def db_release(self, env: Environment = PROD) -> str:
        done = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "greeter-db" / "migrate.py"),
                "current",
                "--db",
                str(self.db(env)),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout.strip()


def test_the_catalog_orders_the_train_in_three_waves(tmp_path: Path) -> None:
    catalog = example_catalog(tmp_path / "data")
    needs = dependencies(TRAIN, catalog.service_relationships())
    assert needs == {
        "greeter": {"greeter-db"},
        "greeter-db": set(),
        "greeter-worker": {"greeter", "greeter-db"},
    }
    order = waves(needs)
    assert order == [["greeter-db"], ["greeter"], ["greeter-worker"]]
    assert backout_order(order) == ["greeter-worker", "greeter", "greeter-db"]
    # Each component has its own CAB of the example's people (the train's gate needs each).
    assert {name: catalog.profile(name).trust.quorum for name in TRAIN} == {
        "greeter": 2,
        "greeter-db": 1,
        "greeter-worker": 1,
    }


async def test_delivered_in_wave_order_every_component_is_healthy(tmp_path: Path) -> None:
    envs = Envs(tmp_path)
    packages = {name: await envs.build(name, "2.0.0") for name in TRAIN}
    assert {a.name for a in packages["greeter-db"].artifacts} >= {
        "migrations/001_greetings.sql",
        "migrations/003_outbox.sql",
    }

    # The worker first, out of order: it cannot run without the greeter and its database.
    await envs.deploy(packages["greeter-worker"], PROD)
    early = await envs.health("greeter-worker", "2.0.0")
    assert early.verdict is Verdict.NO_DATA and "no greeter deployed" in early.detail

    for wave in waves(dependencies(TRAIN, envs.catalog.service_relationships())):
        for name in wave:
            await envs.deploy(packages[name], Environment.STAGING)
            await envs.deploy(packages[name], PROD)
            report = await envs.health(name, "2.0.0")
            assert report.verdict is Verdict.PASS, (name, report.detail)
            assert report.samples >= 20
    assert envs.db_release() == "2.0.0"
    # The worker's probe worked on a copy: production's outbox is untouched.
    with sqlite3.connect(envs.db()) as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
        languages = sorted(lang for (lang,) in conn.execute("SELECT lang FROM greetings"))
    conn.close()
    assert languages == ["en", "es", "fr"]

    # Production as it runs: the greeter process on greeter-db's database, the worker sending.
    await send_through_production(envs)


async def send_through_production(envs: Envs) -> None:
    current = {name: envs.catalog.service(name).env_dir(PROD) / "current" for name in TRAIN}
    greeter = subprocess.Popen(
        [sys.executable, "app.py", "--port", "0", "--db", str(envs.db())],
        cwd=current["greeter"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert greeter.stdout is not None
        url = greeter.stdout.readline().split(" on ")[-1].strip()  # "greeter 2.0.0 (stable) on http://..."
        assert url.startswith("http://127.0.0.1:"), url
        with sqlite3.connect(envs.db()) as conn:
            conn.executemany(
                "INSERT INTO outbox (name, lang) VALUES (?, ?)", [("Ana Maria", "fr"), ("Bo", "xx")]
            )
        conn.close()
        done = subprocess.run(
            [sys.executable, "worker.py", "--greeter", url, "--db", str(envs.db())],
            cwd=current["greeter-worker"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["errors"] == 0
    finally:
        greeter.terminate()
        greeter.wait(10)
    with sqlite3.connect(envs.db()) as conn:
        sent = conn.execute("SELECT message FROM outbox WHERE sent_at IS NOT NULL ORDER BY id").fetchall()
    conn.close()
    assert sent == [("Bonjour, Ana Maria !",), ("Hello, Bo!",)]  # a language it lacks: English


async def test_the_failing_releases_fail_where_their_manifests_say(tmp_path: Path) -> None:
    envs = Envs(tmp_path)
    for name in ("greeter-db", "greeter", "greeter-worker"):
        package = await envs.build(name, "2.0.0")
        await envs.deploy(package, PROD)

    # greeter-worker 2.1.0 (train-greeter-2.1): dark launch in production from its staging copy.
    worker = await envs.build("greeter-worker", "2.1.0")
    await envs.deploy(worker, Environment.STAGING)
    report = await envs.health("greeter-worker", "2.1.0", stage="first-batch")
    assert report.verdict is Verdict.FAIL
    assert report.error_rate == 0.5  # every name with a space

    # greeter-db 2.2.0: its new migration fails; production stays at 2.0.0's schema, and the
    # probe's rehearsal on a copy of production's database fails the same way.
    broken = await envs.build("greeter-db", "2.2.0")
    with pytest.raises(ApplicationError) as exc:
        await envs.deploy(broken, PROD)
    assert "applying 004_greeting_stats: no such table: greeting_stats" in exc.value.message
    assert envs.db_release() == "2.0.0"
    rehearsal = await envs.health("greeter-db", "2.2.0", stage="rehearsal")
    assert rehearsal.verdict is Verdict.FAIL and rehearsal.error_rate == 1.0
    assert envs.db_release() == "2.0.0"


async def test_backing_out_the_database_leaves_the_greeter_alone_and_healthy(tmp_path: Path) -> None:
    envs = Envs(tmp_path)
    db = await envs.build("greeter-db", "2.0.0")
    await envs.deploy(db, PROD)
    greeter = await envs.build("greeter", "2.0.0")
    await envs.deploy(greeter, PROD)
    assert envs.db().is_file()

    # greeter-db's first deploy undone: `undeploy` undoes every migration and removes the file.
    await envs.rollback("greeter-db", "2.0.0", PROD)
    assert not envs.db().exists() and envs.db_release() == ""
    report = await envs.health("greeter", "2.0.0")
    assert report.verdict is Verdict.PASS, report.detail
