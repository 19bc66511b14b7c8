"""The relman worker: ReleaseWorkflow, release trains (ReleaseTrain and its ReleaseComponent
children) and the real activities on one (or two) task queues."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Interceptor, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from relman.config import Settings, connect, load_settings
from relman.errors import ConfigError, RelmanError
from relman.observability import (
    configure_logging,
    get_logger,
    metrics_runtime,
    shutdown_tracing,
    worker_interceptors,
)
from relman.visibility import register_search_attributes

log = get_logger("relman.worker")

HEARTBEAT_THROTTLE = timedelta(seconds=2)
"""Longest time the SDK holds back an activity's newest heartbeat. Its default is 0.8 x the
heartbeat timeout (24 s for a test suite), so the suite name and output size that `relman
status` shows lagged that much; at 2 s they are current, for one RPC per 2 s per long step."""


def workflow_runner(*, strict: bool = False, also: tuple[str, ...] = ()) -> SandboxedWorkflowRunner:
    """The workflow sandbox, with pydantic passed through (its models are not reloaded per run).

    Production also passes relman through: re-importing `relman.workflows.release` for every
    release cost a third of a waiting release's memory and ~20 ms of CPU (bench/RESULTS.md).
    Tests run `strict`, re-importing relman inside the sandbox, so a non-deterministic call in
    workflow code (`datetime.now()`, `random`) still fails them.

    `cryptography` is always passed through: its Rust core imports its exception classes when
    a signature fails to verify, and through the sandbox's importer that import aborts the
    whole process, so one forged vote would kill every worker that handles or replays it.
    """
    base = ("pydantic", "cryptography")
    modules = (*base, *also) if strict else (*base, "relman", *also)
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*modules)
    )


def load_activities(settings: Settings) -> list[Callable[..., Any]]:
    """The real activities wired to the catalog, data dir, CMDB and webhook of `settings`."""
    from relman.activities.registry import create_activities

    catalog = settings.require_catalog()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    from relman.catalog import CatalogError
    from relman.cmdb.errors import CmdbError

    try:
        return create_activities(
            catalog,
            settings.data_dir,
            settings.cmdb,
            settings.webhook_url,
            evidence_key=settings.evidence_key,
            evidence_passphrase=settings.passphrase,
        )
    except RelmanError:
        raise
    except CatalogError as exc:
        raise ConfigError(f"RELMAN_CATALOG: {_first_line(exc)}") from None
    except CmdbError as exc:
        raise ConfigError(f"RELMAN_CMDB_URL: {_first_line(exc)}") from None
    except Exception as exc:  # a bad catalog or CMDB must name the settings, not crash
        raise ConfigError(f"RELMAN_CATALOG / RELMAN_CMDB_URL: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def build_workers(
    client: Client,
    settings: Settings,
    activities: Sequence[Callable[..., Any]],
    *,
    interceptors: Sequence[Interceptor] = (),
    executor: ThreadPoolExecutor | None = None,
) -> list[Worker]:
    """One worker for workflows + activities, plus one for heavy activities when configured."""
    from relman.workflows.component import ReleaseComponent
    from relman.workflows.release import ReleaseWorkflow
    from relman.workflows.train import ReleaseTrain

    executor = executor or ThreadPoolExecutor(max_workers=16, thread_name_prefix="relman-activity")
    common: dict[str, Any] = {
        "activities": list(activities),
        "activity_executor": executor,
        "interceptors": list(interceptors),
        "graceful_shutdown_timeout": timedelta(seconds=settings.graceful_shutdown_seconds),
        "max_heartbeat_throttle_interval": HEARTBEAT_THROTTLE,
        "default_heartbeat_throttle_interval": HEARTBEAT_THROTTLE,
    }
    workers = [
        Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[ReleaseWorkflow, ReleaseTrain, ReleaseComponent],
            workflow_runner=workflow_runner(),
            **common,
        )
    ]
    if settings.activity_task_queue and settings.activity_task_queue != settings.task_queue:
        workers.append(Worker(client, task_queue=settings.activity_task_queue, **common))
    return workers


async def run_worker(
    settings: Settings | None = None,
    *,
    client: Client | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Run until SIGTERM/SIGINT (or `stop`), then shut down gracefully."""
    settings = settings or load_settings()
    log_configuration(settings)
    activities = load_activities(settings)
    interceptors = list(worker_interceptors(settings))
    if client is None:
        client = await connect(runtime=metrics_runtime(settings))
    try:
        added = await register_search_attributes(client)
        if added:
            log.info("registered search attributes", added=added)
    except Exception as exc:  # e.g. Temporal Cloud: attributes are managed elsewhere
        log.warning("could not check search attributes", error=str(exc).splitlines()[0])
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
    workers = build_workers(client, settings, activities, interceptors=interceptors)
    try:
        async with contextlib.AsyncExitStack() as stack:
            for w in workers:
                await stack.enter_async_context(w)
            log.info(
                "worker ready",
                address=client.service_client.config.target_host,
                namespace=client.namespace,
                task_queue=settings.task_queue,
                activity_task_queue=settings.activity_task_queue,
                activities=len(activities),
                catalog=str(settings.catalog),
                data_dir=str(settings.data_dir),
                cmdb=_redact(settings.cmdb),
                metrics=(
                    f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
                    if settings.metrics_port
                    else None
                ),
                tracing=settings.otlp_endpoint or ("console" if settings.trace_console else None),
            )
            if ready is not None:
                ready.set()
            await stop.wait()
            log.info("worker stopping", graceful_seconds=settings.graceful_shutdown_seconds)
    finally:
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)
        shutdown_tracing()
    log.info("worker stopped")


def log_configuration(settings: Settings) -> None:
    """Say which catalog, data directory and CMDB this worker uses, and how each was chosen."""
    log.info(
        "worker configuration",
        catalog=str(settings.catalog),
        catalog_from=settings.catalog_source,
        data_dir=str(settings.data_dir),
        data_dir_from=settings.data_dir_source,
        cmdb=_redact(settings.cmdb),
    )
    if (new := settings.new_sqlite_cmdb) is not None:
        log.warning(
            "no CMDB here yet: a new, empty one will be created",
            cmdb=str(new),
            hint="to use an existing CMDB, set RELMAN_DATA_DIR or RELMAN_CMDB_URL",
        )


def _redact(url: str) -> str:
    # Never log a database password.
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable>"


def main() -> int:
    """`python -m relman.worker` / `python worker.py`: configure logging and run."""
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        asyncio.run(run_worker(settings))
    except RelmanError as exc:
        log.error("worker cannot start", reason=str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    import os
    import sys

    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # sdk-python#300: the SDK can crash at interpreter exit
