"""Test helpers in the style of sdk-python's tests: unique task queues, eventual asserts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.worker import Worker

from relman.worker import workflow_runner

T = TypeVar("T")


def new_worker(
    client: Client,
    *workflows: type,
    activities: Sequence[Callable[..., Any]] = (),
    task_queue: str | None = None,
    **kwargs: Any,
) -> Worker:
    """A worker on a unique task queue (so tests never steal each other's tasks)."""
    return Worker(
        client,
        task_queue=task_queue or f"tq-{uuid.uuid4()}",
        workflows=list(workflows),
        activities=list(activities),
        workflow_runner=workflow_runner(strict=True),
        **kwargs,
    )


async def assert_eventually(
    fn: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.1, what: str = ""
) -> T:
    """Retry an async assertion until it passes; after `timeout` seconds the last
    AssertionError says why not (and `what` was awaited)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await fn()
        except AssertionError as err:
            if asyncio.get_running_loop().time() >= deadline:
                raise AssertionError(f"{what or 'condition'} not reached in {timeout}s: {err}") from err
        await asyncio.sleep(interval)


def require_binary(name: str) -> str:
    """The path of a program a test needs (e.g. `prometheus`): absent, the test skips naming it.

    In CI (`RELMAN_CI=1`, set by `.ci/run`) a missing program fails the test instead: the
    tests that need it must run there, not silently skip.
    """
    import os
    import shutil

    import pytest

    path = shutil.which(name)
    if path is None:
        if os.environ.get("RELMAN_CI") == "1":
            pytest.fail(f"{name} is not installed; CI must run this test (.ci/run installs it)")
        pytest.skip(f"needs the {name!r} binary on PATH")
    return path
