"""Bad input, case by case: a one-line error naming the problem, and nothing changed anywhere.

Every case goes through the layer a user touches: the `relman` CLI (typer's CliRunner, run in
a thread because the CLI runs its own event loop) or the `ReleaseClient` Python API. They run
against a real dev server with a real worker (`run_worker`: the real activities, the example
catalog, a SQLite CMDB in tmp). Each case snapshots, before and after, the workflows on the
worker's task queue (visibility, plus `describe` of the id concerned, which is strongly
consistent), the history length of the releases concerned and the row count of every CMDB
table; the snapshots must be equal.

Unknown services: a client that can read the worker's catalog (`RELMAN_CATALOG`, or the
default `examples/catalog.yaml` the worker also uses) refuses them before anything reaches
Temporal; a client that cannot (a `ReleaseClient` built without `catalog`) starts the release,
and the worker's `validate_request` rejects it: outcome `rejected`, recorded in the CMDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import structlog
import yaml
from pydantic import BaseModel, ValidationError, field_validator
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from relman.cli import app
from relman.client import ReleaseClient
from relman.cmdb.models import metadata
from relman.cmdb.store import CmdbStore
from relman.config import load_settings
from relman.contracts import (
    WORKFLOW_NAME,
    CloseCode,
    Gate,
    GateState,
    Outcome,
    ReleasePlan,
    ReleaseRequest,
    ReleaseStatus,
)
from relman.errors import ContractError, RelmanError
from relman.identity.keys import ensure_keys
from relman.worker import run_worker
from relman.workflows.release import ReleaseWorkflow
from tests.activities.greeter_support import example_keys
from tests.helpers import assert_eventually, new_worker

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "examples" / "catalog.yaml"
GOOD: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "releases" / "greeter-1.1.0.yaml").read_text())
REQUESTER = GOOD["requested_by"]  # pat

runner = CliRunner()


@dataclass
class Snapshot:
    workflows: list[str]
    histories: dict[str, int | None]
    cmdb: dict[str, int]


@dataclass
class World:
    """A worker on its own queue, the CLI's environment pointing at it, and the CMDB it writes."""

    client: Client
    release_client: ReleaseClient
    queue: str
    env: dict[str, str]
    store: CmdbStore
    tmp: Path

    async def cli(self, *args: str, **env: str) -> tuple[int, str]:
        """Run `relman ARGS` in a thread (the CLI calls asyncio.run); exit code and output."""
        result = await asyncio.to_thread(runner.invoke, app, list(args), env={**self.env, **env})
        assert "Traceback" not in result.output, result.output
        return result.exit_code, result.output

    async def snapshot(self, *ids: str) -> Snapshot:
        workflows = sorted([w.id async for w in self.client.list_workflows(f"TaskQueue = '{self.queue}'")])
        histories: dict[str, int | None] = {}
        for rid in ids:
            try:
                histories[rid] = len((await self.client.get_workflow_handle(rid).fetch_history()).events)
            except RPCError as exc:
                assert exc.status == RPCStatusCode.NOT_FOUND, exc
                histories[rid] = None
        cmdb = {table: self.store.count(table) for table in metadata.tables}
        return Snapshot(workflows, histories, cmdb)

    async def unchanged(self, before: Snapshot, *ids: str) -> None:
        after = await self.snapshot(*ids)
        assert after == before

    def manifest(self, name: str, **fields: Any) -> Path:
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**GOOD, **fields}))
        return path

    def delegation(self, delegator: str, delegate: str) -> str:
        """A file with a delegation `delegator` signed: `delegate` may vote for them on greeter."""
        signed = self.release_client.delegate(
            delegator, delegate, ["greeter"], [Gate.REQUEST, Gate.PLAN], datetime.now(UTC) + timedelta(days=1)
        )
        path = self.tmp / f"delegation-{delegator}-{delegate}.json"
        path.write_text(signed.model_dump_json())
        return str(path)

    async def settled(self, rid: str, action: str) -> None:
        """Until the CMDB has `action` in the release's audit and the workflow has nothing pending."""

        async def done() -> None:
            assert action in [e.action for e in self.store.audit(rid)]
            raw = (await self.client.get_workflow_handle(rid).describe()).raw_description
            assert not raw.pending_activities and not raw.HasField("pending_workflow_task")

        await assert_eventually(done, timeout=30)

    async def started(self, rid: str, check: Callable[[ReleaseStatus], bool]) -> ReleaseStatus:
        return await self.release_client.wait_for(rid, check, timeout=30, interval=0.1)


def new_id(tag: str) -> str:
    return f"release-greeter-bad-{tag}-{uuid.uuid4().hex[:8]}"


def error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.lower().startswith("error")]
    assert len(lines) == 1, output
    return lines[0]


def gate_open(gate: Gate) -> Callable[[ReleaseStatus], bool]:
    return lambda s: gate in s.gates and s.gates[gate].state is GateState.OPEN


@pytest_asyncio.fixture(scope="module")
async def world(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("bad-input")
    queue = f"relman-bad-{uuid.uuid4().hex[:8]}"
    cmdb_url = f"sqlite:///{tmp / 'cmdb.sqlite'}"
    env = {
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": dev_env.client.namespace,
        "RELMAN_TASK_QUEUE": queue,
        "RELMAN_DATA_DIR": str(tmp / "data"),
        "RELMAN_CMDB_URL": cmdb_url,
        "RELMAN_CATALOG": str(CATALOG),
    }
    # The example's people sign with keys in the data dir (the CLI finds them there too);
    # mallory has a key but the catalog does not know her.
    signers = example_keys(tmp / "data")
    ensure_keys(tmp / "data" / "keys", ["mallory"])
    settings = load_settings(
        task_queue=queue,
        data_dir=tmp / "data",
        cmdb_url=cmdb_url,
        catalog=CATALOG,
        graceful_shutdown_seconds=2,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_worker(settings, client=dev_env.client, stop=stop, ready=ready, handle_signals=False)
    )
    await asyncio.wait_for(ready.wait(), 30)
    store = CmdbStore(cmdb_url)
    release_client = ReleaseClient(
        dev_env.client, queue, CATALOG, signer=signers.__getitem__, data_dir=tmp / "data"
    )
    world = World(dev_env.client, release_client, queue, env, store, tmp)
    try:
        yield world
    finally:
        for wf in [w async for w in dev_env.client.list_workflows(f"TaskQueue = '{queue}'")]:
            with contextlib.suppress(RPCError):
                await dev_env.client.get_workflow_handle(wf.id).terminate("bad-input tests over")
        stop.set()
        await asyncio.wait_for(task, 30)
        store.close()


# --- starting a release ----------------------------------------------------------------------

BAD_MANIFESTS: list[tuple[str, Callable[[World], Path], str]] = [
    (
        "malformed-yaml",
        lambda w: _write(w.tmp / "malformed.yaml", "service: greeter\nversion: [1.0\n"),
        "is not valid YAML at line 3: expected ',' or ']'",
    ),
    (
        "missing-fields",
        lambda w: _write(w.tmp / "missing.yaml", "service: greeter\nversion: 1.2.3\n"),
        "requested_by: Field required",
    ),
    ("unknown-service", lambda w: w.manifest("unknown", service="billing"), "unknown service 'billing'"),
    (
        "shell-metacharacters",
        lambda w: w.manifest("shell", version="1.0.0;rm -rf /"),
        "version: must be a semantic version such as 2.4.1",
    ),
    (
        "path-traversal",
        lambda w: w.manifest("traversal", version="../1.0.0"),
        "version: must be a semantic version such as 2.4.1",
    ),
    (
        "title-10kB",
        lambda w: w.manifest("title", title="t" * 10_000),
        "title: String should have at most 200 characters",
    ),
    (
        "description-1MB",
        lambda w: w.manifest("description", description="d" * 1_000_000),
        "description: String should have at most 4000 characters",
    ),
    (
        "commands-in-request",
        lambda w: _write(w.tmp / "cmd.yaml", yaml.safe_dump({**GOOD, "build": ["sh", "-c", "rm -rf /"]})),
        "build: Extra inputs are not permitted",
    ),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("manifest", "expected"), [(m, e) for _, m, e in BAD_MANIFESTS], ids=[c[0] for c in BAD_MANIFESTS]
)
async def test_bad_manifest_starts_nothing(
    world: World, manifest: Callable[[World], Path], expected: str
) -> None:
    rid = new_id("manifest")
    before = await world.snapshot(rid)
    code, out = await world.cli("start", str(manifest(world)), "--id", rid)
    assert code == 1
    assert expected in error_line(out)
    await world.unchanged(before, rid)


@pytest.mark.parametrize(
    ("release_id", "expected"),
    [
        ("../../etc/passwd", "release id '../../etc/passwd' is invalid"),
        ("x;rm -rf /", "release id 'x;rm -rf /' is invalid"),
        ("Release-Greeter", "release id 'Release-Greeter' is invalid"),
        ("r" * 200, "is invalid: use 3-128 lower-case letters"),
    ],
    ids=["traversal", "shell", "upper-case", "200-chars"],
)
async def test_bad_release_id_starts_nothing(world: World, release_id: str, expected: str) -> None:
    """Before the fix the workflow started and its first CMDB activity input failed validation
    inside the workflow: a workflow task failing forever, with no CMDB record."""
    manifest = world.manifest("good")
    before = await world.snapshot(release_id)
    code, out = await world.cli("start", str(manifest), "--id", release_id)
    assert code == 1
    assert expected in error_line(out)
    await world.unchanged(before, release_id)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("title", "t" * 10_000, "invalid release request: title: String should have at most 200 characters"),
        ("description", "d" * 1_000_000, "description: String should have at most 4000 characters"),
        ("version", "../1.0.0", "invalid release request: version: must be a semantic version"),
    ],
    ids=["title-10kB", "description-1MB", "version-traversal"],
)
async def test_unvalidated_request_through_the_python_api_starts_nothing(
    world: World, field: str, value: str, expected: str
) -> None:
    """A request built with `model_construct` skips pydantic; `start` validates it again, since the
    worker decodes strictly and an invalid payload fails the first workflow task forever."""
    request = ReleaseRequest.model_construct(**{**ReleaseRequest.model_validate(GOOD).__dict__, field: value})
    rid = new_id("api")
    before = await world.snapshot(rid)
    with pytest.raises(RelmanError) as info:
        await world.release_client.start(request, rid)
    assert expected in str(info.value)
    await world.unchanged(before, rid)


async def test_duplicate_release_id_is_refused_and_the_first_is_untouched(world: World) -> None:
    rid = new_id("dup")
    manifest = world.manifest("dup")
    assert await world.cli("start", str(manifest), "--id", rid) == (0, f"{rid}\n")
    await world.started(rid, gate_open(Gate.REQUEST))
    before = await world.snapshot(rid)
    code, out = await world.cli("start", str(manifest), "--id", rid)
    assert code == 1
    assert error_line(out) == (
        f"error: release {rid} was already started; a release runs once "
        "(release another version, or pass another id)"
    )
    await world.unchanged(before, rid)


async def test_unknown_service_without_a_catalog_is_rejected_by_the_worker_and_recorded(world: World) -> None:
    """The other half of the rule: a client that cannot see the catalog starts the release, the
    worker's validation rejects it, and the CMDB records the rejected change."""
    # no catalog: no client-side check
    blind = ReleaseClient(world.client, world.queue, signer=world.release_client.signer)
    request = ReleaseRequest.model_validate({**GOOD, "service": "billing"})
    rid = await blind.start(request, new_id("blind"))
    final = await blind.result(rid, timeout=30)
    assert final.outcome is Outcome.REJECTED
    assert "unknown service 'billing'" in final.reason and "greeter" in final.reason
    change = world.store.get_change(rid)
    assert change is not None and change.close_code is CloseCode.REJECTED


# --- approvals, rejections, feedback ---------------------------------------------------------


async def test_refused_votes_and_feedback_change_nothing(world: World) -> None:
    rid = new_id("votes")
    # Not GOOD's version: the duplicate-id test's release of it still runs, and one version of
    # a service is released by one release at a time.
    code, _ = await world.cli("start", str(world.manifest("votes", version="1.4.0")), "--id", rid)
    assert code == 0
    await world.started(rid, gate_open(Gate.REQUEST))

    async def refused(args: list[str], expected: str, code: int = 1) -> None:
        before = await world.snapshot(rid)
        got, out = await world.cli(*args)
        assert got == code, out
        assert expected in (error_line(out) if code == 1 else out), out
        await world.unchanged(before, rid)

    await refused(
        ["approve", rid, "--as", "mallory"],
        "error: refused: mallory has no public key in the catalog",
    )
    await refused(
        ["approve", rid, "--as", "oli"],
        "error: refused: oli is not a member of the approvers for gate request",
    )
    await refused(
        ["approve", rid, "--as", REQUESTER],
        f"error: refused: {REQUESTER} requested this release and cannot approve it",
    )
    from_requester = world.delegation(REQUESTER, "bob")
    await refused(
        ["approve", rid, "--as", "bob", "--on-behalf-of", REQUESTER, "--delegation", from_requester],
        f"error: refused: {REQUESTER} requested this release and cannot approve it",
    )
    # The CLI checks a rejection's reason as the contract's `Reason` before connecting anywhere.
    await refused(
        ["reject", rid, "--as", "alice", "--reason", "   "],
        "error: reason: String should have at least 1 character",
    )
    await refused(
        ["reject", rid, "--as", "alice", "--reason", "r" * 10_000],
        "error: reason: String should have at most 1000 characters",
    )
    await refused(
        ["approve", rid, "--as", "alice", "--comment", "c" * 10_000],
        "error: comment: String should have at most 1000 characters",
    )
    await refused(["reject", rid, "--as", "alice"], "Missing option '--reason'", code=2)

    assert (await world.cli("approve", rid, "--as", "alice"))[0] == 0
    await refused(
        ["approve", rid, "--as", "alice"], "error: refused: alice has already voted at gate request"
    )
    from_alice = world.delegation("alice", "carol")
    await refused(
        ["approve", rid, "--as", "carol", "--on-behalf-of", "alice", "--delegation", from_alice],
        "error: refused: alice has already voted at gate request",
    )

    assert (await world.cli("approve", rid, "--as", "bob"))[0] == 0
    planning = await world.started(rid, gate_open(Gate.PLAN))
    assert planning.gates[Gate.REQUEST].state is GateState.APPROVED
    await refused(
        ["approve", rid, "--as", "carol", "--gate", "request"],
        "error: refused: gate request is closed (approved)",
    )

    # An amended plan voids the old hash: a vote for it is refused, naming both hashes.
    old_hash = planning.plan_hash
    assert planning.plan is not None
    amended = ReleasePlan.model_validate(
        {**planning.plan.model_dump(), "stages": planning.plan.model_dump()["stages"][:2]}
    )
    await world.release_client.amend_plan(rid, "rita", amended, "two stages are enough")  # release manager
    amended_status = await world.started(rid, lambda s: s.plan_hash != old_hash)
    await world.settled(rid, "plan.amended")  # the amendment's audit row is written by an activity
    await refused(
        ["approve", rid, "--as", "dave", "--gate", "plan", "--hash", old_hash],
        f"error: refused: vote is for {old_hash[:12]}, but gate plan is for "
        f"{amended_status.plan_hash[:12]} (outdated plan or request)",
    )
    await refused(
        ["approve", rid, "--as", "dave", "--hash", "not-a-hash"],
        "error: approved_hash: must be a sha256 digest (64 lower-case hex digits)",
    )

    # Feedback: the CLI bounds the rating; the Python API refuses before sending anything.
    for rating in ("0", "6", "-1"):
        await refused(
            ["feedback", rid, "--as", "alice", "--rating", rating], "Invalid value for '--rating'", 2
        )
    await refused(
        ["feedback", rid, "--as", "alice", "--rating", "4", "--comment", "c" * 10_000],
        "error: comment: String should have at most 1000 characters",
    )
    before = await world.snapshot(rid)
    with pytest.raises(RelmanError, match=r"rating: Input should be less than or equal to 5"):
        await world.release_client.feedback(rid, "alice", 9)
    await world.unchanged(before, rid)


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["approve", "--as", "alice"],
        ["reject", "--as", "alice", "--reason", "no"],
        ["pause", "--as", "oli", "--reason", "checking"],
        ["abort", "--as", "oli", "--reason", "checking"],
        ["feedback", "--as", "alice", "--rating", "4"],
    ],
    ids=lambda a: a[0],
)
async def test_unknown_release_id(world: World, args: list[str]) -> None:
    rid = new_id("nope")
    before = await world.snapshot(rid)
    code, out = await world.cli(args[0], rid, *args[1:])
    assert code == 1
    assert error_line(out) == f"error: no release named {rid}"
    await world.unchanged(before, rid)


# --- the worker's configuration: catalog and CMDB ---------------------------------------------


def _catalog_with(tmp: Path, name: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    data = yaml.safe_load(CATALOG.read_text())
    for spec in [*data["services"].values(), *data.get("train_suites", [])]:  # copied: workdirs absolute
        spec["workdir"] = str(CATALOG.parent / spec.get("workdir", "."))
    greeter = data["services"]["greeter"]
    edit(greeter)
    path = tmp / f"catalog-{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BAD_CATALOGS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "command-as-string",
        lambda g: g["build"].update(command="python build.py --out {package_dir}"),
        "services.greeter.build.command: must be an argv list such as [python, build.py], not a string",
    ),
    (
        "unknown-executable",
        lambda g: g["tests"][0].update(command=["no-such-tool-xyz", "--junit", "{junit}"]),
        "services.greeter: tests.0.command: executable 'no-such-tool-xyz' not found on PATH",
    ),
    (
        "missing-directory",
        lambda g: g.update(workdir="/nonexistent/greeter"),
        "services.greeter.workdir: directory /nonexistent/greeter does not exist",
    ),
    (
        "unknown-placeholder",
        lambda g: g["build"].update(command=["{python}", "build.py", "{secret}"]),
        "unknown placeholder(s) ['secret']",
    ),
    (
        "secret-not-set",
        lambda g: g.update(secrets=["DEPLOY_TOKEN_NEVER_SET"]),
        "services.greeter.secrets: DEPLOY_TOKEN_NEVER_SET is not set in the worker's environment",
    ),
]


@contextlib.contextmanager
def _logging_restored() -> Any:
    # `relman worker` configures logging for the process; put the test's back.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


@pytest.mark.parametrize(
    ("edit", "expected"), [(e, x) for _, e, x in BAD_CATALOGS], ids=[c[0] for c in BAD_CATALOGS]
)
async def test_worker_refuses_a_bad_catalog(
    world: World, edit: Callable[[dict[str, Any]], None], expected: str
) -> None:
    catalog = _catalog_with(world.tmp, uuid.uuid4().hex[:6], edit)
    before = await world.snapshot()
    with _logging_restored():
        code, out = await world.cli("worker", RELMAN_CATALOG=str(catalog))
    assert code == 1
    line = error_line(out)
    assert line.startswith(f"error: RELMAN_CATALOG: {catalog.name}: ")
    assert expected in line
    await world.unchanged(before)


async def test_unreachable_cmdb_is_named(world: World) -> None:
    url = "postgresql+psycopg://relman@127.0.0.1:1/cmdb"
    before = await world.snapshot()
    for args in (["cmdb", "changes"], ["metrics"], ["cmdb", "ci", "greeter"]):
        code, out = await world.cli(*args, RELMAN_CMDB_URL=url)
        assert code == 1
        line = error_line(out)
        assert line.startswith(
            "error: CMDB: CMDB at postgresql+psycopg://relman@127.0.0.1:1/cmdb is unavailable"
        )
        assert "refused" in line.lower()
    # A directory that cannot be created: the worker refuses to start, naming the setting.
    with _logging_restored():
        code, out = await world.cli("worker", RELMAN_CMDB_URL="sqlite:////proc/relman/cmdb.sqlite")
    assert code == 1
    assert error_line(out).startswith("error: RELMAN_CMDB_URL: CMDB at sqlite:////proc/relman/cmdb.sqlite")
    await world.unchanged(before)
    assert not os.path.exists("/proc/relman")


# --- contracts constructed in Python ------------------------------------------------------------


def test_a_contract_built_with_bad_values_raises_one_line_relman_error() -> None:
    with pytest.raises(RelmanError) as info:
        ReleaseRequest(**{**GOOD, "version": "latest"})
    err = info.value
    assert str(err) == (
        "invalid ReleaseRequest: version: must be a semantic version such as 2.4.1 or 2.5.0-rc.1"
    )
    assert "\n" not in str(err) and err.message == str(err)
    # Still what pydantic raises, so `except ValidationError` / `except ValueError` keep working.
    assert isinstance(err, ContractError) and isinstance(err, ValidationError) and isinstance(err, ValueError)
    assert [e["loc"] for e in err.errors()] == [("version",)]


def test_every_problem_is_counted_and_listed() -> None:
    with pytest.raises(ContractError) as info:
        ReleaseRequest(service="Not A Service", version="latest")
    err = info.value
    assert str(err).startswith("invalid ReleaseRequest: service: must be lower-case letters")
    assert str(err).endswith(f"(and {err.error_count() - 1} more)") and err.error_count() >= 3
    assert ("version",) in [e["loc"] for e in err.errors()]


def test_nested_and_custom_errors_keep_their_field_and_message() -> None:
    with pytest.raises(ContractError) as info:
        ReleasePlan(**{"bogus": 1})
    assert "\n" not in str(info.value) and str(info.value).startswith("invalid ReleasePlan: ")

    class Wrapper(BaseModel):
        request: ReleaseRequest

        @field_validator("request", mode="before")
        @classmethod
        def _build(cls, value: Any) -> Any:
            return ReleaseRequest(**value)  # a contract constructed inside a validator

    # pydantic takes the ContractError's errors into the outer model's, with the full path.
    with pytest.raises(ValidationError) as outer:
        Wrapper(request={**GOOD, "version": "latest"})
    assert [e["loc"] for e in outer.value.errors()] == [("request", "version")]
    assert "must be a semantic version" in outer.value.errors()[0]["msg"]


def test_validating_a_payload_still_raises_pydantics_error() -> None:
    """Temporal's pydantic converter calls `model_validate`: its error stays a plain ValidationError,
    the type the workflow's `failure_exception_types` names."""
    bad = {**GOOD, "version": "latest"}
    for attempt in (
        lambda: ReleaseRequest.model_validate(bad),
        lambda: ReleaseRequest.model_validate_json(json.dumps(bad)),
    ):
        with pytest.raises(ValidationError) as info:
            attempt()
        assert type(info.value) is ValidationError
    assert ReleaseRequest(**GOOD) == ReleaseRequest.model_validate(GOOD)


async def test_a_bad_request_from_any_client_fails_the_workflow_not_its_task(
    ts_env: WorkflowEnvironment,
) -> None:
    """A client without relman's contracts sends a dict: the workflow fails at once, naming the field."""
    async with new_worker(ts_env.client, ReleaseWorkflow) as worker:
        handle = await ts_env.client.start_workflow(
            WORKFLOW_NAME,
            {**GOOD, "version": "latest"},
            id=new_id("raw"),
            task_queue=worker.task_queue,
            execution_timeout=timedelta(minutes=5),
        )
        with pytest.raises(WorkflowFailureError) as info:
            await asyncio.wait_for(handle.result(), 30)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ValidationError"
    assert "version" in cause.message
