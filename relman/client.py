"""`ReleaseClient`: the Python API for starting, approving, steering and finding releases.

The CLI is a thin layer over this class, so platform teams can do from their own
code everything the CLI does:

    client = await ReleaseClient.connect()
    release_id = await client.start(ReleaseRequest(service="checkout", ...))
    await client.approve(release_id, "bob", comment="looks good")
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.converter import decode_typed_search_attributes
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from relman.contracts import (
    TASK_QUEUE,
    WORKFLOW_NAME,
    ActionResult,
    Decision,
    Delegation,
    Feedback,
    Gate,
    GateState,
    GateStatus,
    Message,
    Model,
    OperatorAction,
    OperatorVerb,
    Outcome,
    Phase,
    PlanAmendment,
    ReleasePlan,
    ReleaseRequest,
    ReleaseStatus,
    StatusSource,
    Vote,
    release_id_for,
    release_id_problem,
    train_id_for,
)
from relman.contracts.train import TrainRequest
from relman.contracts.train_run import COMPONENT_WORKFLOW, TRAIN_WORKFLOW, ComponentMode, TrainStatus
from relman.errors import ConfigError, NotFoundError, RefusedError, RelmanError, one_line
from relman.identity.keys import Signer
from relman.identity.roles import change_model_problem
from relman.identity.signing import Signable, seal
from relman.progress import RunningStep, running_step
from relman.recorded import REQUEST_MEMO, ServerRecord, read_cmdb, rebuild
from relman.results import final_status
from relman.visibility import (
    RELEASE_AWAITING,
    RELEASE_CHANGE_TYPE,
    RELEASE_OUTCOME,
    RELEASE_PHASE,
    RELEASE_RISK,
    RELEASE_SERVICE,
    RELEASE_TRAIN,
    RELEASE_VERSION,
)

__all__ = [
    "NotFoundError",
    "RefusedError",
    "ReleaseClient",
    "ReleaseSummary",
    "RelmanError",
    "load_any_manifest",
    "load_manifest",
    "load_plan",
    "run",
    "train_problem",
]

M = TypeVar("M", bound=BaseModel)
S = TypeVar("S", bound=Signable)
SignerFor = Callable[[str], Signer]
"""The signer of a person by name (their key file, a test's keys, the console's provider key)."""

QUERY_TIMEOUT = timedelta(seconds=15)
LIVE_QUERY_TIMEOUT = timedelta(seconds=5)
"""How long the `status` query waits for a worker before the status is rebuilt from records.
A worker answers in tens of milliseconds; with none polling the query would wait 30 s."""
POLLER_GONE = timedelta(minutes=2)
"""A task queue whose pollers were all last seen this long ago has no worker: an idle worker
re-polls about every minute, and the server forgets a poller only after some minutes."""
NO_ANSWER = frozenset(
    {RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED, RPCStatusCode.FAILED_PRECONDITION}
)
"""How a query with no worker to run it fails: the server's or the client's deadline
(`Timeout expired`), or "no poller seen for task queue recently"."""
UPDATE_TIMEOUT = timedelta(seconds=30)
GATE_ORDER = (Gate.REQUEST, Gate.PLAN, Gate.MARGINAL, Gate.RETRO)
TRANSIENT = frozenset({Phase.REQUESTED, Phase.PLANNING})
"""Phases that pass in moments and end at a gate: an approval sent then waits for it."""
GATE_WAIT = 15.0


class ReleaseSummary(Model):
    """One release as the visibility store lists it (search attributes, no query)."""

    release_id: str
    service: str = ""
    version: str = ""
    phase: str = ""
    change_type: str = ""
    risk: str = ""
    awaiting: list[str] = []
    outcome: str = ""
    """How the release ended (completed, rolled_back, ...); empty while it runs."""
    status: str
    """Temporal's execution status: RUNNING, COMPLETED, FAILED, TERMINATED..."""
    started_at: datetime | None = None
    closed_at: datetime | None = None


def run(main: Callable[[], Coroutine[Any, Any, Any]]) -> NoReturn:
    """Run a script's `async def main()` and leave the way the `relman` command does.

    A process that used a Temporal client can crash at interpreter exit
    (temporalio/sdk-python#300), so this flushes and ends with `os._exit`: 0 when `main`
    returns, 1 with a one-line `error: ...` for a RelmanError, 1 with the traceback otherwise.
    """
    code = 0
    try:
        asyncio.run(main())
    except RelmanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def build(model: type[M], **fields: Any) -> M:
    """Validate a contract model, turning a ValidationError into a one-line RelmanError."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise RelmanError(one_line(exc)) from None


def _line_of(data: bytes, offset: int) -> int:
    """The 1-based line of byte `offset` in `data`."""
    return data.count(b"\n", 0, offset) + 1


def _read_yaml_mapping(path: Path, what: str, section: str, fields: str) -> dict[str, Any]:
    """A YAML file's mapping (at the top level or under `section:`), or a one-line RelmanError
    naming the file: not found, unreadable, bad YAML (with the line), not a mapping."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RelmanError(f"{what} {path} not found") from None
    except OSError as exc:
        raise RelmanError(f"{what} {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = _line_of(Path(path).read_bytes(), exc.start)
        raise RelmanError(
            f"{what} {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}); "
            "save it as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise RelmanError(f"{what} {path} is not valid YAML{where}: {problem}") from None
    if isinstance(data, dict) and isinstance(data.get(section), dict):
        data = data[section]
    if not isinstance(data, dict):
        raise RelmanError(f"{what} {path} must be a mapping of {fields}")
    return data


def load_manifest(path: Path) -> ReleaseRequest:
    """A ReleaseRequest from a YAML manifest (its fields at the top level or under `request:`)."""
    data = _read_yaml_mapping(path, "manifest", "request", "release fields (service, version, ...)")
    try:
        return ReleaseRequest.model_validate(data)
    except ValidationError as exc:
        raise RelmanError(f"manifest {path}: {one_line(exc)}") from None


def load_any_manifest(path: Path) -> ReleaseRequest | TrainRequest:
    """The request a YAML manifest describes: a train's (`TrainRequest`) when it lists
    `components:`, else one release's, as `load_manifest` reads it."""
    data = _read_yaml_mapping(
        path,
        "manifest",
        "request",
        "release fields (service, version, ...) or a train's (train, components, ...)",
    )
    model: type[ReleaseRequest | TrainRequest] = TrainRequest if "components" in data else ReleaseRequest
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RelmanError(f"manifest {path}: {one_line(exc)}") from None


def train_problem(catalog: Path, request: TrainRequest) -> str | None:
    """Why the catalog cannot deliver this train, or None: a component the catalog does not
    know (naming it and the known ones), or an order with a cycle (naming its path), from
    the catalog's relationships and the manifest's `after:`.

    Reads the catalog file without validating its services (`relman.catalog.service_names`):
    a client may lack the services' directories. The worker checks again with the full
    catalog before the train does anything. A catalog that cannot be read raises CatalogError.
    """
    from relman.catalog import service_names, service_relationships_of, train_suite_names
    from relman.workflows.waves import OrderingError, dependencies, waves

    known = service_names(catalog)
    unknown = [service for service in request.services if service not in known]
    if unknown:
        return (
            f"unknown service{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
            f"the catalog {catalog} knows {', '.join(known) or 'none'}"
        )
    suites = train_suite_names(catalog)
    if missing := [name for name in request.tests if name not in suites]:
        return (
            f"unknown train suite{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
            f"the catalog {catalog} has {', '.join(suites) or 'none'}"
        )
    after = {c.service: c.after for c in request.components if c.after}
    try:
        waves(dependencies(request.services, service_relationships_of(catalog), after))
    except OrderingError as exc:
        return f"train {request.train}: {exc}"
    return None


def load_plan(path: Path, current: ReleasePlan) -> ReleasePlan:
    """The amended plan a YAML file describes (its fields at the top level or under `plan:`).

    The file says what changes: a field it leaves out keeps `current`'s value, and a mapping
    it gives (`acceptance`, `target_window`) changes only the keys it names; lists (`stages`,
    `components`) are replaced whole. `revision` is ignored: an amendment is always the next one.
    """
    data = _read_yaml_mapping(path, "plan", "plan", "plan fields (stages, acceptance, ...)")
    merged = current.model_dump(mode="json")
    for key, value in data.items():
        base = merged.get(key)
        merged[key] = {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
    merged["revision"] = current.revision
    try:
        return ReleasePlan.model_validate(merged)
    except ValidationError as exc:
        raise RelmanError(f"plan {path}: {one_line(exc)}") from None


def _failure_message(exc: BaseException) -> str:
    # The validator's ApplicationError/ValueError arrives as the update failure's cause.
    cause: BaseException | None = exc
    while isinstance(cause, WorkflowUpdateFailedError):
        cause = cause.cause
    message = getattr(cause, "message", None) or str(cause)
    return str(message).splitlines()[0] if message else "refused"


class ReleaseClient:
    """Start, approve, steer and find releases on a Temporal cluster."""

    def __init__(
        self,
        client: Client,
        task_queue: str = TASK_QUEUE,
        catalog: Path | None = None,
        signer: SignerFor | None = None,
        data_dir: Path | None = None,
        cmdb_url: str | None = None,
    ) -> None:
        """`catalog`: the worker's catalog file when this process can read it; `start` then
        refuses a service it does not declare before anything reaches Temporal. Without it the
        worker's `validate_request` rejects the release (outcome `rejected`, recorded in the CMDB).

        `signer`: gives the key of the person a method acts as; every request, vote, delegation,
        amendment, operator action and feedback is signed with it. Without one, messages go
        unsigned and count only where the catalog turns signatures off.

        `cmdb_url`: the CMDB the worker writes; `status` reads the release's change from it
        when no worker answers (it is never created by reading).
        """
        self.client = client
        self.task_queue = task_queue
        self.catalog = catalog
        self.signer = signer
        self.data_dir = data_dir
        """Fills `{data_dir}` in the catalog's key-file paths, as for the worker."""
        self.cmdb_url = cmdb_url

    @classmethod
    async def connect(
        cls, target_host: str | None = None, task_queue: str | None = None, signer: SignerFor | None = None
    ) -> ReleaseClient:
        """Connect as configured (temporal.toml / TEMPORAL_* / RELMAN_TASK_QUEUE / RELMAN_CATALOG).

        Without `signer`, people sign with their key files in RELMAN_KEYS_DIR (`relman keys init`).
        """
        from relman.config import connect, load_settings

        settings = load_settings()
        catalog = settings.catalog if settings.catalog.is_file() else None
        if signer is None:
            from relman.cli.keys import load_signer

            def signer(name: str) -> Signer:
                return load_signer(settings, name)

        return cls(
            await connect(target_host),
            task_queue or settings.task_queue,
            catalog,
            signer,
            settings.data_dir,
            settings.cmdb,
        )

    def _sealed(self, message: S, release_id: str, who: str) -> S:
        """`message` signed as `who` for `release_id`; unchanged when it is already signed."""
        if self.signer is None or message.proof is not None:
            return message
        return seal(message, release_id, self.signer(who))

    # --- starting ----------------------------------------------------------

    async def start(self, request: ReleaseRequest, release_id: str | None = None) -> str:
        """Start a release; returns its id. The same release id is never started twice.

        Refused before anything reaches Temporal: a request that is not a valid contract
        (e.g. built with `model_construct`), a release id the activities' inputs would refuse,
        and a service the catalog (when this client can read it) does not declare. Refused too
        while another release of the same service and version runs on this task queue.

        The request goes into the start memo as well, so `status` can show it with no worker.
        """
        request = self._checked(request)
        release_id = release_id or release_id_for(request.service, request.version)
        if problem := release_id_problem(release_id):
            raise RelmanError(problem)
        self._check_service(request.service)
        self._check_change_model(request)
        request = self._sealed(request, release_id, request.requested_by)
        await self._check_not_running(request, release_id)
        try:
            await self.client.start_workflow(
                WORKFLOW_NAME,
                request,
                id=release_id,
                task_queue=self.task_queue,
                result_type=ReleaseStatus,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(RELEASE_SERVICE, request.service),
                        SearchAttributePair(RELEASE_VERSION, request.version),
                        SearchAttributePair(RELEASE_CHANGE_TYPE, request.change_type.value),
                        SearchAttributePair(RELEASE_PHASE, Phase.REQUESTED.value),
                    ]
                ),
                static_summary=(
                    f"{request.service} {request.version} — {request.change_type.value} change: "
                    f"{request.title}"
                ),
                static_details=f"requested by {request.requested_by}, commit {request.commit}",
                memo={REQUEST_MEMO: request},
            )
        except WorkflowAlreadyStartedError:
            raise RefusedError(
                f"release {release_id} was already started; a release runs once "
                "(release another version, or pass another id)"
            ) from None
        except RPCError as exc:
            if "search attribute" in exc.message.lower():
                raise RelmanError(
                    f"the server does not know relman's search attributes ({exc.message}); "
                    "run `relman dev` or register them (see README)"
                ) from None
            raise self._rpc_error(exc, release_id) from None
        return release_id

    async def start_train(self, request: TrainRequest, train_id: str | None = None) -> str:
        """Start a release train (several components released as one); returns its id.

        Refused before anything reaches Temporal like a release: an invalid contract, an id
        the activities would refuse, and a train the catalog cannot order (an unknown
        component, a dependency cycle: `train_problem`). The worker checks all of it again.
        """
        try:
            request = TrainRequest.model_validate(request.model_dump(mode="python"))
        except ValidationError as exc:
            raise RelmanError(f"invalid train request: {one_line(exc)}") from None
        train_id = train_id or train_id_for(request.train)
        if problem := release_id_problem(train_id):
            raise RelmanError(problem)
        self._check_train(request)
        request = self._sealed(request, train_id, request.requested_by)
        services = ", ".join(f"{c.service} {c.version}" for c in request.components)
        try:
            await self.client.start_workflow(
                TRAIN_WORKFLOW,
                request,
                id=train_id,
                task_queue=self.task_queue,
                result_type=TrainStatus,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(RELEASE_TRAIN, train_id),
                        SearchAttributePair(RELEASE_CHANGE_TYPE, request.change_type.value),
                        SearchAttributePair(RELEASE_PHASE, Phase.REQUESTED.value),
                    ]
                ),
                static_summary=f"train {request.train}: {services}"[:400],
                static_details=f"requested by {request.requested_by}: {request.title}",
            )
        except WorkflowAlreadyStartedError:
            raise RefusedError(f"train {train_id} was already started; a train runs once") from None
        except RPCError as exc:
            raise self._rpc_error(exc, train_id) from None
        return train_id

    async def is_train(self, workflow_id: str) -> bool:
        """Whether `workflow_id` runs a release train (its workflow type says, not its name)."""
        try:
            desc = await self.client.get_workflow_handle(workflow_id).describe(rpc_timeout=QUERY_TIMEOUT)
        except RPCError as exc:
            raise self._rpc_error(exc, workflow_id) from None
        return desc.workflow_type == TRAIN_WORKFLOW

    async def train_status(self, train_id: str) -> TrainStatus:
        """The typed state of a train: its `status` query, or its result once it has closed."""
        handle = self.client.get_workflow_handle(train_id, result_type=TrainStatus)
        try:
            return await handle.query(
                Message.STATUS.value, result_type=TrainStatus, rpc_timeout=QUERY_TIMEOUT
            )
        except RPCError as exc:
            raise self._rpc_error(exc, train_id) from None

    async def _check_not_running(self, request: ReleaseRequest, release_id: str) -> None:
        """RefusedError when another release of this service and version runs on this task queue.

        Visibility is eventually consistent: two starts within a second may both pass. Releases on
        another task queue belong to another worker (catalog, CMDB, environments) and do not count.
        """
        query = " AND ".join(
            [
                f"WorkflowType = '{WORKFLOW_NAME}'",
                f"{RELEASE_SERVICE.name} = {_quote(request.service)}",
                f"{RELEASE_VERSION.name} = {_quote(request.version)}",
                f"TaskQueue = {_quote(self.task_queue)}",
                "ExecutionStatus = 'Running'",
            ]
        )
        try:
            async for wf in self.client.list_workflows(query, limit=10, rpc_timeout=QUERY_TIMEOUT):
                if wf.id != release_id:  # the same id is refused by Temporal, with its own message
                    since = f" since {wf.start_time:%Y-%m-%d %H:%M:%SZ}" if wf.start_time else ""
                    raise RefusedError(
                        f"{request.service} {request.version} is already being released as {wf.id} "
                        f"(running{since}); wait for it to end or abort it"
                    )
        except RPCError as exc:
            if exc.status == RPCStatusCode.UNIMPLEMENTED:
                return  # the time-skipping test server has no visibility queries
            raise self._rpc_error(exc, release_id) from None

    @staticmethod
    def _checked(request: ReleaseRequest) -> ReleaseRequest:
        """The request validated again: the workflow decodes it strictly, and an invalid
        payload would fail its first workflow task over and over."""
        try:
            return ReleaseRequest.model_validate(request.model_dump(mode="python"))
        except ValidationError as exc:
            raise RelmanError(f"invalid release request: {one_line(exc)}") from None

    def _check_service(self, service: str) -> None:
        if self.catalog is None:
            return
        from relman.catalog import CatalogError, service_names

        try:
            known = service_names(self.catalog)
        except CatalogError as exc:
            raise ConfigError(f"RELMAN_CATALOG: {exc}") from None
        if service not in known:
            raise RefusedError(
                f"unknown service {service!r}: the catalog {self.catalog} knows {', '.join(known) or 'none'}"
            )

    def _check_train(self, request: TrainRequest) -> None:
        """Refuse a train the catalog cannot deliver before anything starts (see `train_problem`)."""
        if self.catalog is None:
            return
        from relman.catalog import CatalogError

        try:
            problem = train_problem(self.catalog, request)
        except CatalogError as exc:
            raise ConfigError(f"RELMAN_CATALOG: {exc}") from None
        if problem:
            raise RefusedError(problem)

    def _check_change_model(self, request: ReleaseRequest) -> None:
        """A standard change only as a change model the catalog declares (the worker checks too)."""
        if self.catalog is None:
            return
        from relman.catalog import CatalogError, UnknownService, read_trust

        try:
            trust = read_trust(self.catalog, data_dir=self.data_dir).service(request.service)
        except (CatalogError, UnknownService):
            return  # e.g. people's key files only on the worker: the workflow still refuses
        if problem := change_model_problem(request, trust):
            raise RefusedError(f"refused: {problem}")

    # --- reading -----------------------------------------------------------

    async def status(self, release_id: str) -> ReleaseStatus:
        """The full typed state of a release: the `status` query (or the result once closed), or,
        when no worker answers, the status rebuilt from the server's and the CMDB's records
        (`source` is then `StatusSource.RECORDS`; see `relman.recorded`)."""
        status, _ = await self._read(release_id, with_steps=False)
        return status

    async def progress(self, release_id: str) -> tuple[ReleaseStatus, list[RunningStep]]:
        """The status and the activities not finished yet (with their last heartbeat), read
        from one description of the workflow; no steps once the release has closed."""
        return await self._read(release_id, with_steps=True)

    async def _read(self, release_id: str, *, with_steps: bool) -> tuple[ReleaseStatus, list[RunningStep]]:
        handle = self._handle(release_id)
        try:
            desc = await handle.describe(rpc_timeout=QUERY_TIMEOUT)
            if desc.status in (WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.FAILED):
                # A closed run's status is its result (or, for a failed change, in its failure).
                with contextlib.suppress(WorkflowFailureError):
                    return await final_status(handle, rpc_timeout=QUERY_TIMEOUT), []
        except RPCError as exc:
            raise self._rpc_error(exc, release_id) from None
        steps = await self._steps(desc) if with_steps else []
        why = await self._no_worker(desc)
        if why is None:
            try:
                status = await handle.query(
                    Message.STATUS.value, result_type=ReleaseStatus, rpc_timeout=LIVE_QUERY_TIMEOUT
                )
                return status, steps
            except RPCError as exc:
                if exc.status not in NO_ANSWER:
                    raise self._rpc_error(exc, release_id) from None
                why = (
                    f"no worker answered within {LIVE_QUERY_TIMEOUT.seconds}s"
                    if exc.status != RPCStatusCode.FAILED_PRECONDITION
                    else f"the server answered: {exc.message}"
                )
            except WorkflowQueryFailedError as exc:
                why = f"the status query failed: {str(exc).splitlines()[0] if str(exc) else 'no reason'}"
            except WorkflowQueryRejectedError as exc:
                raise RelmanError(f"{release_id}: status query failed: {exc}") from None
        return await self._from_records(desc, why), steps

    async def _steps(self, desc: WorkflowExecutionDescription) -> list[RunningStep]:
        """The pending activities with their last heartbeat (the server keeps them: no worker needed)."""
        steps = []
        for info in desc.raw_description.pending_activities:
            details = info.heartbeat_details.payloads
            decoded = await self.client.data_converter.decode(details) if details else []
            last = decoded[-1] if decoded else {}
            steps.append(running_step(info, last if isinstance(last, dict) else {"detail": last}))
        return steps

    async def _no_worker(self, desc: WorkflowExecutionDescription) -> str | None:
        """Why no worker can answer a query now, when the server's task queue says so; None when
        one may (then the query's deadline decides)."""
        queue = desc.task_queue
        try:
            answer = await self.client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.client.namespace,
                    task_queue=TaskQueue(name=queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                ),
                retry=True,
                timeout=QUERY_TIMEOUT,
            )
        except RPCError:
            return None  # e.g. the time-skipping test server cannot describe task queues
        if not answer.pollers:
            return f"no worker polls task queue {queue}"
        now = datetime.now(UTC)
        last = max(p.last_access_time.ToDatetime(UTC) for p in answer.pollers)
        if now - last > POLLER_GONE:
            return f"no worker has polled task queue {queue} since {last:%Y-%m-%d %H:%M:%SZ}"
        return None

    async def _from_records(self, desc: WorkflowExecutionDescription, why: str) -> ReleaseStatus:
        """The status rebuilt from the description, search attributes, memo and the CMDB."""
        attrs = desc.typed_search_attributes
        execution = desc.status.name if desc.status else "UNKNOWN"
        started_with, phases, cancel_at = await self._history(desc)
        server = ServerRecord(
            release_id=desc.id,
            execution=execution,
            started_at=desc.start_time,
            closed_at=desc.close_time,
            cancel_requested=desc.raw_description.workflow_extended_info.cancel_requested,
            phase=attrs.get(RELEASE_PHASE) or "",
            awaiting=list(attrs.get(RELEASE_AWAITING) or []),
            outcome=attrs.get(RELEASE_OUTCOME) or "",
            risk=attrs.get(RELEASE_RISK) or "",
            request=await self._memo_request(desc) or started_with,
            phases=phases,
            cancel_requested_at=cancel_at,
            close_reason=await self._close_reason(desc) if desc.close_time is not None else "",
        )
        cmdb = await asyncio.to_thread(read_cmdb, self.cmdb_url, desc.id)
        return rebuild(server, cmdb, why)

    async def _history(
        self, desc: WorkflowExecutionDescription
    ) -> tuple[ReleaseRequest | None, list[tuple[datetime, str]], datetime | None]:
        """From the event history, which the server keeps (no worker needed): the start input,
        each `ReleasePhase` the workflow published with its time, and when a cancel was asked.
        What could not be read is left out: the status stands without it."""
        request: ReleaseRequest | None = None
        phases: list[tuple[datetime, str]] = []
        cancel_at: datetime | None = None
        handle = self.client.get_workflow_handle(desc.id, run_id=desc.run_id)
        with contextlib.suppress(Exception):
            async for event in handle.fetch_history_events(rpc_timeout=QUERY_TIMEOUT):
                at = event.event_time.ToDatetime(UTC)
                if event.HasField("workflow_execution_started_event_attributes"):
                    started = event.workflow_execution_started_event_attributes
                    with contextlib.suppress(Exception):
                        decoded = await self.client.data_converter.decode(
                            started.input.payloads, [ReleaseRequest]
                        )
                        request = decoded[0] if isinstance(decoded[0], ReleaseRequest) else None
                    fields = started.search_attributes
                elif event.HasField("upsert_workflow_search_attributes_event_attributes"):
                    fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
                elif event.HasField("workflow_execution_cancel_requested_event_attributes"):
                    cancel_at = cancel_at or at
                    continue
                else:
                    continue
                phase = decode_typed_search_attributes(fields).get(RELEASE_PHASE)
                if phase:
                    phases.append((at, phase))
        return request, phases, cancel_at

    async def _memo_request(self, desc: WorkflowExecutionDescription) -> ReleaseRequest | None:
        """The request `start` put in the memo; None for releases started without it."""
        with contextlib.suppress(Exception):
            memo = await desc.memo()
            if REQUEST_MEMO in memo:
                return ReleaseRequest.model_validate(memo[REQUEST_MEMO])
        return None

    async def _close_reason(self, desc: WorkflowExecutionDescription) -> str:
        """Why a closed execution ended (termination reason, failure), from its close event."""
        handle = self.client.get_workflow_handle(desc.id, run_id=desc.run_id, result_type=ReleaseStatus)
        try:
            await handle.result(follow_runs=False, rpc_timeout=QUERY_TIMEOUT)
        except WorkflowFailureError as exc:
            cause = exc.cause
            text = str(getattr(cause, "message", "") or cause or "").strip()
            return text.splitlines()[0][:300] if text else ""
        except Exception:  # a reason is a nicety: the status stands without it
            return ""
        return ""

    async def result(self, release_id: str, timeout: float | None = None) -> ReleaseStatus:
        """Wait for a release to end and return its final status."""
        try:
            return await asyncio.wait_for(final_status(self._handle(release_id)), timeout)
        except RPCError as exc:
            raise self._rpc_error(exc, release_id) from None
        except TimeoutError:
            raise RelmanError(f"{release_id} did not end within {timeout}s") from None

    async def wait_for(
        self,
        release_id: str,
        predicate: Callable[[ReleaseStatus], bool],
        *,
        timeout: float = 60.0,
        interval: float = 0.25,
    ) -> ReleaseStatus:
        """Poll `status` until `predicate` holds; RelmanError after `timeout` seconds.

        Only the workflow's own answer counts: a status rebuilt from records lacks gates, plan
        and stages, so a predicate on them would never hold (or hold on partial data)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status = await self.status(release_id)
            live = status.source is StatusSource.WORKFLOW
            if live and predicate(status):
                return status
            if loop.time() >= deadline:
                raise RelmanError(
                    f"{release_id} did not reach the expected state within {timeout:.0f}s "
                    f"(phase {status.phase.value}, awaiting {', '.join(status.awaiting) or '-'})"
                    + ("" if live else f"; {_records_note(status)}")
                )
            await asyncio.sleep(interval)

    async def _live_status(self, release_id: str) -> ReleaseStatus | TrainStatus:
        """The workflow's own status, for what needs its gates or plan; RelmanError without a worker.
        A train's (its votes go through the same `decide` update) when the id is a train's."""
        if await self.is_train(release_id):
            return await self.train_status(release_id)
        status = await self.status(release_id)
        if status.source is not StatusSource.WORKFLOW:
            raise RelmanError(f"{release_id}: {_records_note(status)}; is `relman worker` running?")
        return status

    async def list(
        self,
        *,
        phase: Phase | str | None = None,
        service: str | None = None,
        awaiting: str | None = None,
        running: bool | None = None,
        outcome: Outcome | str | None = None,
        train: str | None = None,
        limit: int = 100,
    ) -> list[ReleaseSummary]:
        """Releases found through the search attributes, newest first. With `train`: that
        train and its components' child workflows (which carry the train's id)."""
        if train:
            clauses = [f"{RELEASE_TRAIN.name} = {_quote(train)}"]
        else:
            clauses = [f"WorkflowType = '{WORKFLOW_NAME}'"]
        if phase:
            clauses.append(f"{RELEASE_PHASE.name} = {_quote(str(Phase(phase).value))}")
        if service:
            clauses.append(f"{RELEASE_SERVICE.name} = {_quote(service)}")
        if awaiting:
            clauses.append(f"{RELEASE_AWAITING.name} = {_quote(awaiting)}")
            running = True if running is None else running
        if outcome:
            clauses.append(f"{RELEASE_OUTCOME.name} = {_quote(str(Outcome(outcome).value))}")
        if running is not None:
            clauses.append("ExecutionStatus " + ("=" if running else "!=") + " 'Running'")
        query = " AND ".join(clauses)
        found: list[ReleaseSummary] = []
        try:
            async for wf in self.client.list_workflows(query, limit=limit):
                attrs = wf.typed_search_attributes
                found.append(
                    ReleaseSummary(
                        release_id=wf.id,
                        service=attrs.get(RELEASE_SERVICE) or "",
                        version=attrs.get(RELEASE_VERSION) or "",
                        phase=attrs.get(RELEASE_PHASE) or "",
                        change_type=attrs.get(RELEASE_CHANGE_TYPE) or "",
                        risk=attrs.get(RELEASE_RISK) or "",
                        awaiting=list(attrs.get(RELEASE_AWAITING) or []),
                        outcome=attrs.get(RELEASE_OUTCOME) or "",
                        status=wf.status.name if wf.status else "UNKNOWN",
                        started_at=wf.start_time,
                        closed_at=wf.close_time,
                    )
                )
        except RPCError as exc:
            raise RelmanError(f"listing releases failed: {exc.message}") from None
        found.sort(key=lambda s: s.started_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return found

    # --- approvals ---------------------------------------------------------

    async def approve(
        self,
        release_id: str,
        user: str,
        gate: Gate | str | None = None,
        *,
        on_behalf_of: str | None = None,
        comment: str = "",
        subject_hash: str | None = None,
        delegation: Delegation | None = None,
    ) -> GateStatus:
        """Approve the open (or given) gate through the `decide` update; refusals raise.

        On behalf of someone, pass the `delegation` they signed (`delegate`)."""
        return await self._decide(
            release_id, user, Decision.APPROVE, gate, on_behalf_of, comment, subject_hash, delegation
        )

    async def reject(
        self,
        release_id: str,
        user: str,
        gate: Gate | str | None = None,
        *,
        reason: str,
        on_behalf_of: str | None = None,
        subject_hash: str | None = None,
        delegation: Delegation | None = None,
    ) -> GateStatus:
        """Reject (veto) the open (or given) gate; the reason is recorded as the comment."""
        if not reason.strip():
            raise RelmanError("a rejection needs a reason")
        return await self._decide(
            release_id, user, Decision.REJECT, gate, on_behalf_of, reason, subject_hash, delegation
        )

    def delegate(
        self,
        delegator: str,
        delegate: str,
        services: Sequence[str],
        gates: Sequence[Gate | str],
        not_after: datetime,
    ) -> Delegation:
        """A delegation signed by `delegator`: `delegate` may vote for them until `not_after`."""
        delegation = build(
            Delegation,
            delegator=delegator,
            delegate=delegate,
            services=list(services),
            gates=[Gate(g) for g in gates],
            not_after=not_after,
        )
        return self._sealed(delegation, "*", delegator)

    async def _signed_for(self, workflow_id: str) -> str:
        """The release id a message to `workflow_id` is signed for: its own, except for a train
        component's child (`<train>.<service>.<mode>`), whose messages are signed for the
        component (`<train>.<service>`), as its workflow and the train's evidence check them."""
        base, _, mode = workflow_id.rpartition(".")
        if not base or mode not in {m.value for m in ComponentMode}:
            return workflow_id
        try:
            desc = await self.client.get_workflow_handle(workflow_id).describe(rpc_timeout=QUERY_TIMEOUT)
        except RPCError as exc:
            raise self._rpc_error(exc, workflow_id) from None
        return base if desc.workflow_type == COMPONENT_WORKFLOW else workflow_id

    async def decide(self, release_id: str, vote: Vote) -> GateStatus:
        """Send one vote through the `decide` update and return the gate as it now stands."""
        vote = self._sealed(vote, await self._signed_for(release_id), vote.approver)
        return await self._update(release_id, Message.DECIDE, vote, GateStatus)

    async def _update(self, release_id: str, name: Message, arg: BaseModel, result_type: type[M]) -> M:
        """An update with a validator: the answer, or RefusedError with the workflow's reason."""
        handle = self._handle(release_id)
        try:
            return await handle.execute_update(
                name.value, arg, result_type=result_type, rpc_timeout=UPDATE_TIMEOUT
            )
        except WorkflowUpdateFailedError as exc:
            raise RefusedError(f"refused: {_failure_message(exc)}") from None
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            raise RelmanError(
                f"no worker answered for {release_id} within {UPDATE_TIMEOUT.seconds}s; "
                "is `relman worker` running?"
            ) from None
        except RPCError as exc:
            raise self._rpc_error(exc, release_id) from None

    async def _decide(
        self,
        release_id: str,
        user: str,
        decision: Decision,
        gate: Gate | str | None,
        on_behalf_of: str | None,
        comment: str,
        subject_hash: str | None,
        delegation: Delegation | None = None,
    ) -> GateStatus:
        wanted: Gate | None = Gate(gate) if gate else None
        chosen = wanted
        if chosen is None or subject_hash is None:
            status = await self._gate_ready(release_id, wanted)
            chosen = wanted or _open_gate(status)
            if chosen is None:
                raise RefusedError(
                    f"{release_id} has no open gate (phase {status.phase.value}); name one with --gate"
                )
            if subject_hash is None:
                gate_status = status.gates.get(chosen)
                if gate_status is None or not gate_status.subject_hash:
                    raise RefusedError(
                        f"{release_id} has no {chosen.value} gate yet (phase {status.phase.value})"
                    )
                subject_hash = gate_status.subject_hash
        vote = build(
            Vote,
            gate=chosen,
            approver=user,
            decision=decision,
            approved_hash=subject_hash,
            on_behalf_of=on_behalf_of,
            delegation=delegation,
            comment=comment,
        )
        return await self.decide(release_id, vote)

    async def _gate_ready(self, release_id: str, gate: Gate | None) -> ReleaseStatus | TrainStatus:
        """Status once the wanted (or any) gate is there; waits out the brief phases before a gate."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATE_WAIT
        while True:
            status = await self._live_status(release_id)
            present = (gate in status.gates) if gate else _open_gate(status) is not None
            if present or status.phase not in TRANSIENT or status.outcome or loop.time() > deadline:
                return status
            await asyncio.sleep(0.2)

    # --- operator controls (validated updates) ---------------------------------

    async def pause(self, release_id: str, by: str, reason: str) -> ActionResult:
        """Hold the release before its next step until `resume`."""
        return await self.operate(release_id, OperatorVerb.PAUSE, by, reason)

    async def resume(self, release_id: str, by: str, reason: str) -> ActionResult:
        return await self.operate(release_id, OperatorVerb.RESUME, by, reason)

    async def promote(self, release_id: str, by: str, reason: str) -> ActionResult:
        """Skip the rest of the current bake."""
        return await self.operate(release_id, OperatorVerb.PROMOTE, by, reason)

    async def abort(self, release_id: str, by: str, reason: str) -> ActionResult:
        """Compensate everything done so far and end as `aborted`."""
        return await self.operate(release_id, OperatorVerb.ABORT, by, reason)

    async def override_window(
        self, release_id: str, by: str, reason: str, *, window: str | None = None, step: str | None = None
    ) -> ActionResult:
        """Let the waiting step through the closed window that holds it (recorded with the reason).

        Without `window` and `step`, the ones the release waits on now are named (and signed).
        """
        if window is None or step is None:
            status = await self._live_status(release_id)
            if isinstance(status, TrainStatus):
                raise RefusedError(f"{release_id} is a train: name the window and the step to let through")
            waiting = next((w for w in reversed(status.window_waits) if w.until is None), None)
            if waiting is None:
                raise RefusedError(f"{release_id} is not waiting for a deployment window")
            window, step = window or waiting.window, step or waiting.step
        return await self.operate(
            release_id, OperatorVerb.OVERRIDE_WINDOW, by, reason, window=window, step=step
        )

    async def operate(
        self,
        release_id: str,
        verb: OperatorVerb | str,
        by: str,
        reason: str,
        *,
        window: str | None = None,
        step: str | None = None,
    ) -> ActionResult:
        """One signed operator action through the `operate` update; refusals raise with the reason."""
        action = build(OperatorAction, action=verb, by=by, reason=reason, window=window, step=step)
        action = self._sealed(action, await self._signed_for(release_id), by)
        return await self._update(release_id, Message.OPERATE, action, ActionResult)

    async def feedback(self, release_id: str, by: str, rating: int, comment: str = "") -> None:
        """Feedback during the review period (rating 1-5), signed by who gives it."""
        message = self._sealed(build(Feedback, by=by, rating=rating, comment=comment), release_id, by)
        await self._signal(release_id, Message.FEEDBACK, message)

    async def amend_plan(self, release_id: str, by: str, plan: ReleasePlan, reason: str) -> ReleasePlan:
        """Replace the plan while the plan gate is open; earlier plan votes stop counting.

        The amendment is the next revision of the plan the release holds now; the answer is
        the plan that votes now bind to.
        """
        status = await self._live_status(release_id)
        if status.plan is None:
            raise RefusedError(f"{release_id} has no plan yet (phase {status.phase.value})")
        plan = plan.model_copy(update={"revision": status.plan.revision + 1})
        amendment = self._sealed(build(PlanAmendment, by=by, plan=plan, reason=reason), release_id, by)
        return await self._update(release_id, Message.AMEND, amendment, ReleasePlan)

    async def _signal(self, release_id: str, signal: Message, arg: BaseModel) -> None:
        try:
            await self._handle(release_id).signal(signal.value, arg, rpc_timeout=QUERY_TIMEOUT)
        except RPCError as exc:
            raise self._rpc_error(exc, release_id) from None

    # --- helpers -----------------------------------------------------------

    def _handle(self, release_id: str) -> WorkflowHandle[Any, ReleaseStatus]:
        return self.client.get_workflow_handle(release_id, result_type=ReleaseStatus)

    @staticmethod
    def _rpc_error(exc: RPCError, release_id: str) -> RelmanError:
        text = exc.message.lower()
        if "already completed" in text or "already finished" in text:
            return RefusedError(f"release {release_id} has already ended")
        if exc.status == RPCStatusCode.NOT_FOUND:
            return NotFoundError(f"no release named {release_id}")
        if exc.status == RPCStatusCode.UNAVAILABLE:
            return RelmanError(f"Temporal is unavailable: {exc.message}")
        return RelmanError(f"{release_id}: {exc.message}")


def _open_gate(status: ReleaseStatus | TrainStatus) -> Gate | None:
    for gate in GATE_ORDER:
        g = status.gates.get(gate)
        if g is not None and g.state == GateState.OPEN:
            return gate
    return None


def _records_note(status: ReleaseStatus) -> str:
    """Why a status came from records: `no worker answered (...)`."""
    prefix = "status rebuilt from records: "
    why = next((i.removeprefix(prefix) for i in status.issues if i.startswith(prefix)), "")
    return f"no worker answered ({why})" if why else "no worker answered"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
